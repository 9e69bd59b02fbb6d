"""Full-state checkpoints of a training run, written atomically, and resuming from the newest valid one."""

from __future__ import annotations

import errno
import logging
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.utils import min_version, optional_import

from semiseg.arguments import flag
from semiseg.engines.run_length import total_iterations
from semiseg.engines.streams import load_numpy_random_state, numpy_random_state_dict

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
Checkpoint, _ = optional_import("ignite.handlers", "0.4.11", min_version, "Checkpoint")
DiskSaver, _ = optional_import("ignite.handlers", "0.4.11", min_version, "DiskSaver")

__all__ = [
    "CheckpointWriteError",
    "RandomState",
    "TrainingStateHandler",
    "describe_state_mismatch",
    "find_resume_checkpoint",
]

PREFIX = "state"
_PATTERN = re.compile(rf"^{PREFIX}_checkpoint_(\d+)\.pt$")
#: objects whose state differs between the processes of a distributed run (saved once per rank)
_PER_RANK = ("trainer", "rng")


class CheckpointWriteError(OSError):
    """A state file could not be written (a full disk, a lost mount); the files written before are intact."""


class RandomState:
    """The random number generators of python, numpy and torch (CPU and CUDA) as a checkpointable object."""

    def state_dict(self) -> dict[str, Any]:
        state = {
            "python": random.getstate(),
            "numpy": numpy_random_state_dict(np.random.mtrand._rand),
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        load_numpy_random_state(np.random.mtrand._rand, state["numpy"])
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
    ...), the trainer itself (iteration and epoch, hence every schedule's position, and for a
    ``SemiSupervisedTrainer`` the position of its data streams and random augmentations) and the random number
    generators. Files are ``state_checkpoint_<iteration>.pt`` in ``save_dir``, written beside and renamed (ignite's
    atomic ``DiskSaver``), so a kill during a write leaves the previous file intact; the last ``n_saved`` are kept. A
    write that fails (a full disk) stops training with a :class:`CheckpointWriteError` naming the folder.

    With ``resume=True`` the newest loadable file is restored when the run starts, so re-running the same command
    continues where the previous run stopped and ends at the planned iteration count. Files are loaded with
    ``weights_only=True``; a file from another network names the keys that do not match.

    Distributed runs (``torch.distributed`` initialised, several processes): attach the handler on every rank. Every
    rank restores, from the same file (the ranks compare the file each found and stop with an error if they differ,
    e.g. a ``save_dir`` that is not shared between nodes); only rank 0 writes. The trainer's and the random
    generators' states differ between ranks, so the file holds them once per rank (``ranks``), and each rank resumes
    its own; with another number of processes than the file was written by, the ranks continue from rank 0's.

    Args:
        save_dir: folder of the state files.
        objects: name -> object with ``state_dict``/``load_state_dict``.
        save_interval: iterations between two files.
        n_saved: how many files to keep.
        resume: restore the newest file at start (a missing folder or no file starts from scratch); text from the
            command line (``--resume true``) is read as a boolean.
    """

    def __init__(
        self,
        save_dir: str,
        objects: dict[str, Any],
        save_interval: int = 500,
        n_saved: int = 2,
        resume: bool | str = False,
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
        self.resume = flag(resume, "resume")
        self.logger = logging.getLogger(__name__)
        self.resumed_from: Path | None = None

    def attach(self, engine: Any) -> None:
        to_save = {**self.objects, "trainer": engine, "rng": RandomState()}
        if _world_size() > 1:
            to_save["ranks"] = _PerRankStates({name: to_save[name] for name in _PER_RANK})
        saver = _ReportingDiskSaver(str(self.save_dir), atomic=True, create_dir=True, require_empty=False)
        checkpoint = Checkpoint(
            to_save, saver, filename_prefix=PREFIX, n_saved=self.n_saved, global_step_transform=_iteration
        )
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_interval), checkpoint)
        if self.resume:
            engine.add_event_handler(Events.STARTED, self._restore, to_save)

    def _restore(self, engine: Any, to_load: dict[str, Any]) -> None:
        path = _same_on_every_rank(find_resume_checkpoint(self.save_dir))
        if path is None:
            self.logger.info(f"resume: no checkpoint in {self.save_dir}, starting from iteration 0.")
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        to_load = {name: obj for name, obj in to_load.items() if name != "ranks"}
        missing = sorted(set(to_load) - set(state))
        if missing:
            raise ValueError(f"checkpoint {path} lacks {missing}; it was not written by this training configuration.")
        state.update(self._own_rank_states(state, path))
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
        planned = total_iterations(engine)
        if engine.state.iteration > planned:
            raise ValueError(f"checkpoint {path} is at iteration {engine.state.iteration}, past this run's {planned}.")
        self.resumed_from = path
        self.logger.info(f"resumed from {path} at iteration {engine.state.iteration}.")

    def _own_rank_states(self, state: dict[str, Any], path: Path) -> dict[str, Any]:
        """This rank's trainer and random states from the file (rank 0's, which are the top-level ones, otherwise)."""
        world, rank = _world_size(), _rank()
        ranks = state.get("ranks")
        if world == 1 and ranks is None:
            return {}
        if isinstance(ranks, Mapping) and len(ranks) == world:
            return dict(ranks[str(rank)])
        written_by = len(ranks) if isinstance(ranks, Mapping) else 1
        self.logger.warning(
            f"checkpoint {path} was written by {written_by} process(es), this run has {world}: every rank continues "
            "from rank 0's data position and random state, so the run goes on, but not as the original would have."
        )
        return dict(ranks["0"]) if isinstance(ranks, Mapping) else {}


class _PerRankStates:
    """The states of some objects on every rank of a distributed run, gathered into one dict ``{rank: states}``."""

    def __init__(self, objects: dict[str, Any]) -> None:
        self.objects = objects

    def state_dict(self) -> dict[str, Any]:
        own = {name: _plain(obj.state_dict()) for name, obj in self.objects.items()}
        gathered: list[Any] = [None] * _world_size()
        dist.all_gather_object(gathered, own)
        return {str(rank): states for rank, states in enumerate(gathered)}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # restored by TrainingStateHandler._own_rank_states
        del state


class _ReportingDiskSaver(DiskSaver):
    """ignite's ``DiskSaver``, whose write errors say which folder, what went wrong and what is left intact."""

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        try:
            super().__call__(checkpoint, filename, metadata)
        except OSError as error:
            reason = "the disk is full" if error.errno == errno.ENOSPC else str(error)
            raise CheckpointWriteError(
                error.errno,
                f"could not write the training state {filename} in {self.dirname}: {reason}. Training stopped; the "
                "state files written before are intact. Free space (or choose another ckpt_dir) and run the same "
                "command with --resume true to continue from the last one.",
            ) from error


def _plain(value: Any) -> Any:
    """A state_dict without ignite's OrderedDict and with CPU tensors, for gathering between processes."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value.cpu() if isinstance(value, torch.Tensor) else value


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _same_on_every_rank(path: Path | None) -> Path | None:
    """The checkpoint every rank found; an error on every rank when they found different ones."""
    if _world_size() == 1:
        return path
    found: list[Any] = [None] * _world_size()
    dist.all_gather_object(found, None if path is None else str(path))
    if len(set(found)) > 1:
        listing = ", ".join(f"rank {rank}: {name or 'none'}" for rank, name in enumerate(found))
        raise ValueError(
            f"the ranks found different checkpoints to resume from ({listing}); every rank must see the same "
            "state folder (a folder shared between the nodes) with the same files."
        )
    return path


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
