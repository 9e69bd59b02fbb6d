"""``step``: ``SemiSupervisedTrainer`` iterations vs a plain PyTorch loop doing the same math, time and peak memory."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from .builder import copy_setup, method_arguments, training_setup
from .loops import LOOPS
from .memory import probe_in_subprocesses
from .options import DEFAULT_PATCH
from .report import BenchmarkReport
from .timing import median, precision_of, run_config, run_interleaved

__all__ = ["run_step"]


def run_step(
    device: str = "cpu",
    repeats: int = 5,
    iterations: int = 3,
    n_filters: int = 4,
    feature_dim: int = 16,
    norm: str = "instance",
    patch: int | str | Sequence[int] = DEFAULT_PATCH,
    labeled_batch: int = 2,
    unlabeled_batch: int = 2,
    memory: bool = True,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """``SemiSupervisedTrainer`` iterations vs a plain PyTorch loop doing the same math on the same batches.

    Each round runs ``iterations`` consecutive iterations of the engine (one ``run()``, no handlers, in-memory
    batches already on the device, iterations timed from ITERATION_STARTED to ITERATION_COMPLETED) and then of the
    plain loop (labeled and unlabeled batch, ``cat``, forward, the same objective, backward, SGD step). Each has its
    own copy of the same network, optimizer and objective, the LA bundle's (see ``builder.py``). Goals: time ratio
    <= 1.05, peak memory ratio <= 1.1 (``memory=True``: each variant in a fresh subprocess, see ``memory.py``).

    Returns:
        the JSON object printed last.
    """
    dev, patch_t, overrides = method_arguments(
        device, threads, patch, n_filters, feature_dim, norm, labeled_batch, unlabeled_batch, repeats=repeats,
        iterations=iterations,
    )  # fmt: skip
    base = training_setup(dev, overrides, num_batches=2, seed=seed)
    setups = {"engine": base, "plain": copy_setup(base)}
    samples = run_interleaved(
        {name: functools.partial(LOOPS[name], setups[name], dev, iterations) for name in ("engine", "plain")},
        repeats,
    )
    report = BenchmarkReport("step")
    t = {name: median(values) for name, values in samples.items()}
    for name, values in samples.items():
        report.add(f"iteration_time_{name}", t[name], "s", samples=values)
    report.add("time_ratio_engine_vs_plain", t["engine"] / t["plain"], "x", goal="<= 1.05")
    method = "off"
    if memory:
        settings = {
            "device": str(dev),
            "n_filters": n_filters,
            "norm": norm,
            "feature_dim": feature_dim,
            "patch": list(patch_t),
            "labeled_batch": labeled_batch,
            "unlabeled_batch": unlabeled_batch,
            "seed": seed,
        }
        probes = probe_in_subprocesses(("engine", "plain"), settings, iterations, threads)
        mib = {name: probes[name]["peak_increase_bytes"] / 2**20 for name in probes}
        for name in ("engine", "plain"):
            report.add(f"peak_memory_{name}", mib[name], "MiB")
        report.add("memory_ratio_engine_vs_plain", mib["engine"] / max(mib["plain"], 1e-9), "x", goal="<= 1.1")
        method = probes["engine"]["method"] + f"; one fresh subprocess per variant, {iterations} iterations"
    report.config = run_config(
        dev,
        repeats,
        1,
        iterations_per_run=iterations,
        n_filters=n_filters,
        feature_dim=feature_dim,
        norm=norm,
        patch=list(patch_t),
        labeled_batch=labeled_batch,
        unlabeled_batch=unlabeled_batch,
        terms="all (LA bundle's objective)",
        precision=precision_of(dev),
        memory_method=method,
        seed=seed,
    )
    report.notes = [
        "the engine converts every term to a python float each iteration (one device sync, as its output needs); "
        "the plain loop does not, so that cost is counted against the engine.",
    ]
    return report.print()
