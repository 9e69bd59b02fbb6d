"""Full-state checkpoints of a training run, written atomically, and resuming from the newest valid one."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import min_version, optional_import

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
Checkpoint, _ = optional_import("ignite.handlers", "0.4.11", min_version, "Checkpoint")
DiskSaver, _ = optional_import("ignite.handlers", "0.4.11", min_version, "DiskSaver")

__all__ = ["RandomState", "TrainingStateHandler", "describe_state_mismatch", "find_resume_checkpoint"]

PREFIX = "state"
_PATTERN = re.compile(rf"^{PREFIX}_checkpoint_(\d+)\.pt$")


class RandomState:
    """The random number generators of python, numpy and torch (CPU and CUDA) as a checkpointable object."""

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": (has_gauss, cached)},
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], *n["gauss"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def find_resume_checkpoint(save_dir: str | Path) -> Path | None:
    """The newest full-state checkpoint in ``save_dir`` that loads, or None when there is none.

    Files that fail to load (a kill during a copy, a truncated disk) are reported and skipped, so a damaged newest
    file falls back to the one before it.
    """
    save_dir = Path(save_dir)
    found = sorted(
        (int(m.group(1)), p) for p in save_dir.glob(f"{PREFIX}_checkpoint_*.pt") if (m := _PATTERN.match(p.name))
    )
    for _, path in reversed(found):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file is skipped, and said so
            logging.getLogger(__name__).warning(f"skipping unreadable checkpoint {path}: {error}")
            continue
        return path
    return None


class TrainingStateHandler:
    """Write the whole training state every ``save_interval`` iterations and resume a killed run from it.

    The state holds the given objects (network, optimizer, LR scheduler, the objective with its prototype buffers,
    ...), the trainer itself (iteration and epoch, hence every schedule's position) and the random number
    generators. Files are ``state_checkpoint_<iteration>.pt`` in ``save_dir``, written beside and renamed (ignite's
    atomic ``DiskSaver``), so a kill during a write leaves the previous file intact; the last ``n_saved`` are kept.

    With ``resume=True`` the newest loadable file is restored when the run starts, so re-running the same command
    continues where the previous run stopped and ends at the planned iteration count. Files are loaded with
    ``weights_only=True``; a file from another network names the keys that do not match.

    Args:
        save_dir: folder of the state files.
        objects: name -> object with ``state_dict``/``load_state_dict``.
        save_interval: iterations between two files.
        n_saved: how many files to keep.
        resume: restore the newest file at start (a missing folder or no file starts from scratch).
    """

    def __init__(
        self, save_dir: str, objects: dict[str, Any], save_interval: int = 500, n_saved: int = 2, resume: bool = False
    ) -> None:
        if save_interval < 1:
            raise ValueError(f"save_interval must be >= 1, got {save_interval}.")
        if n_saved < 1:
            raise ValueError(f"n_saved must be >= 1, got {n_saved}.")
        for name, obj in objects.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise ValueError(f"object {name!r} ({type(obj).__name__}) has no state_dict/load_state_dict.")
        self.save_dir = Path(save_dir)
        self.objects = dict(objects)
        self.save_interval = save_interval
        self.n_saved = n_saved
        self.resume = resume
        self.logger = logging.getLogger(__name__)
        self.resumed_from: Path | None = None

    def attach(self, engine: Any) -> None:
        to_save = {**self.objects, "trainer": engine, "rng": RandomState()}
        saver = DiskSaver(str(self.save_dir), atomic=True, create_dir=True, require_empty=False)
        checkpoint = Checkpoint(
            to_save, saver, filename_prefix=PREFIX, n_saved=self.n_saved, global_step_transform=_iteration
        )
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_interval), checkpoint)
        if self.resume:
            engine.add_event_handler(Events.STARTED, self._restore, to_save)

    def _restore(self, engine: Any, to_load: dict[str, Any]) -> None:
        path = find_resume_checkpoint(self.save_dir)
        if path is None:
            self.logger.info(f"resume: no checkpoint in {self.save_dir}, starting from iteration 0.")
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing = sorted(set(to_load) - set(state))
        if missing:
            raise ValueError(f"checkpoint {path} lacks {missing}; it was not written by this training configuration.")
        planned_epochs = engine.state.max_epochs
        for name, obj in to_load.items():
            if isinstance(obj, torch.nn.Module):
                mismatch = describe_state_mismatch(obj.state_dict(), state[name])
                if mismatch:
                    raise ValueError(f"checkpoint {path} does not fit {name!r} of this run: {mismatch}")
            try:
                obj.load_state_dict(state[name])
            except (RuntimeError, KeyError, ValueError) as error:
                raise ValueError(f"checkpoint {path} does not fit {name!r} of this run: {error}") from error
        # the plan of this run wins over the one stored with the trainer (a resumed run may be given more iterations)
        engine.state.max_epochs = planned_epochs
        planned = getattr(engine, "iterations", None) or planned_epochs * engine.state.epoch_length
        if engine.state.iteration > planned:
            raise ValueError(f"checkpoint {path} is at iteration {engine.state.iteration}, past this run's {planned}.")
        self.resumed_from = path
        self.logger.info(f"resumed from {path} at iteration {engine.state.iteration}.")


def describe_state_mismatch(expected: dict[str, Any], found: dict[str, Any], limit: int = 3) -> str:
    """A short account of how a state_dict ``found`` in a file differs from the ``expected`` one ("" when it fits)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{k}: file {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in found and hasattr(found[k], "shape") and tuple(found[k].shape) != tuple(expected[k].shape)
        and expected[k].numel() > 0  # lazily sized buffers (prototypes before the first batch) take any shape
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            parts.append(f"{len(items)} {label} ({'; '.join(items[:limit])}{more})")
    return ", ".join(parts)


def _iteration(engine: Any, event: Any) -> int:
    return int(engine.state.iteration)
