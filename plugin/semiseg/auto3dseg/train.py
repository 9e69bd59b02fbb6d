"""Training entry of a generated bundle for Auto3DSeg (``scripts/train.py run``): trains ``configs/train.json``
and writes the validation Dice to ``models/progress.yaml``, where Auto3DSeg's ``get_score`` and ensemble read it."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

from semiseg.engines.run_length import scale_count

__all__ = ["bundle_folder", "run"]

logger = logging.getLogger(__name__)

_RUN_SHARES = ("rampup_iterations", "rampup_start", "lr_step", "val_interval", "save_interval")


def bundle_folder(config_file: str | list[str] | tuple[str, ...] | None) -> Path:
    """The bundle folder of Auto3DSeg's ``--config_file`` (a comma-separated list or a list of config paths)."""
    if config_file is None:
        return Path.cwd()
    files = config_file.split(",") if isinstance(config_file, str) else list(config_file)
    first = Path(str(files[0]).strip(" '\"")).resolve()
    return first.parent.parent if first.parent.name == "configs" else first.parent


def run(config_file: str | list[str] | None = None, **override: Any) -> None:
    """Train the bundle; print and record (``models/progress.yaml``) the final model's validation Dice.

    Args:
        config_file: Auto3DSeg passes every file of ``configs/``; only the bundle folder is taken from it, and
            ``configs/train.json`` is run (with ``multi_gpu_train.json`` under ``torchrun`` with several processes,
            as Auto3DSeg starts it on several GPUs).
        override: ``--key value`` overrides of ``train.json``. A new ``iterations`` keeps the ramp-up, learning-rate
            step, validation and saving intervals at their share of the run.
    """
    root = bundle_folder(config_file)
    configs = root / "configs"
    files = [str(configs / "train.json")]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        files.append(str(configs / "multi_gpu_train.json"))
    workflow = ConfigWorkflow(
        config_file=files, meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"), workflow_type="train", bundle_root=str(root),
    )  # fmt: skip
    parser = workflow.parser
    if "iterations" in override:
        old = int(parser["iterations"])
        for key in _RUN_SHARES:
            if key not in override and key in parser:
                override[key] = scale_count(int(parser[key]), old, int(override["iterations"]))
    parser.update(pairs=override)
    workflow.initialize()
    trainer = parser.get_parsed_content("train#trainer")
    evaluator = parser.get_parsed_content("validate#evaluator")
    progress: list[dict[str, Any]] = []
    path = root / "models" / "progress.yaml"

    def record(engine: Any) -> None:
        dice = float(engine.state.metrics.get(engine.state.key_metric_name, float("nan")))
        progress.append({"iteration": int(trainer.state.iteration), "avg_dice_score": dice,
                         "best_avg_dice_score": dice})  # fmt: skip
        if torch.distributed.is_initialized() and torch.distributed.get_rank() > 0:
            return  # the metric is already reduced over the processes; rank 0 writes it
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(progress, sort_keys=False))
        print(f"validation at iteration {trainer.state.iteration}: mean Dice {dice:.4f}", flush=True)

    evaluator.add_event_handler(Events.COMPLETED, record)
    workflow.run()
    if not progress or progress[-1]["iteration"] != trainer.state.iteration:
        evaluator.run()  # the saved model is the final one: score it
    dice = progress[-1]["avg_dice_score"]
    workflow.finalize()
    print(f"final validation Dice of {root.name} (models/model.pt): {dice:.4f}", flush=True)
