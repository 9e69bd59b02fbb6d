"""How the benchmarks time their variants: device-synchronised wall time, interleaved rounds, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from semiseg.arguments import check_int

from .report import config_dict

__all__ = ["median", "precision_of", "run_config", "run_interleaved", "sync", "timed"]


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> list[float]:
    """Wall time of one call of ``fn``, device work included, as a one-sample list."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return [time.perf_counter() - start]


def run_interleaved(
    variants: dict[str, Callable[[], list[float]]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run every variant once per round, in the given order (A, B, A, B, ...), ``warmup`` + ``repeats`` rounds.

    Args:
        variants: name -> callable that runs the variant once and returns the seconds it measured (one or more
            samples, e.g. one per training iteration).
        repeats: rounds that are kept.
        warmup: first rounds whose samples are dropped.

    Returns:
        name -> every sample of the kept rounds.
    """
    check_int(repeats, "repeats", 1)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(warmup + repeats):
        for name, fn in variants.items():
            measured = fn()
            if round_index >= warmup:
                samples[name].extend(measured)
    return samples


def median(values: Sequence[float]) -> float:
    """The median of the samples, as a float."""
    return float(statistics.median(values))


def precision_of(device: torch.device) -> str:
    """The float precision of the timed work: float32, and on CUDA whether cuDNN may use TF32."""
    if device.type != "cuda":
        return "float32"
    return "float32, cuDNN TF32 " + ("on" if torch.backends.cudnn.allow_tf32 else "off")


def run_config(device: torch.device, repeats: int, warmup: int, **values: Any) -> dict[str, Any]:
    """A report's settings: device, torch's CPU threads, the kept and warm-up rounds, then ``values``."""
    return config_dict(device=str(device), threads=torch.get_num_threads(), repeats=repeats, warmup=warmup, **values)
