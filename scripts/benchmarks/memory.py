"""Peak memory of a few training iterations, measured in a fresh process per variant (``step --memory True``).

On CUDA the figure is ``torch.cuda.max_memory_allocated`` minus the memory allocated before the first iteration; on
CPU it is the rise of the process's peak resident set size over its resident size before the first iteration, the
peak being reset there through ``/proc/self/clear_refs`` (``ru_maxrss`` minus that baseline where the reset is not
allowed).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import torch

from .builder import REPO_ROOT, method_overrides, training_setup
from .loops import LOOPS
from .options import device_of, triple
from .timing import sync

__all__ = ["ENTRY_POINT", "memory_probe", "probe_in_subprocesses"]

ENTRY_POINT = REPO_ROOT / "scripts" / "benchmark.py"
"""The command line that runs ``memory_probe`` in a fresh process."""


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak RSS (VmHWM) of this process to its current RSS; False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def memory_probe(
    variant: str, settings: str | dict, iterations: int = 3, threads: int | None = None
) -> dict[str, Any]:
    """Peak memory of ``iterations`` training iterations of one variant (``engine`` or ``plain``) in this process.

    Meant to run in a fresh process (``step`` starts one per variant): it builds the setup, takes the baseline,
    runs, and prints one JSON line ``{"variant", "peak_increase_bytes", "baseline_bytes", "method"}``.

    Args:
        variant: ``"engine"`` or ``"plain"``.
        settings: JSON object (or dict) with ``device``, ``n_filters``, ``norm``, ``feature_dim``, ``patch``,
            ``labeled_batch``, ``unlabeled_batch``, ``seed``.
        iterations: iterations to run.
        threads: torch CPU threads.
    """
    if variant not in LOOPS:
        raise ValueError(f"variant must be one of {sorted(LOOPS)}, got {variant!r}.")
    config = json.loads(settings) if isinstance(settings, str) else dict(settings)
    device = device_of(config["device"], threads)
    overrides = method_overrides(
        config["n_filters"],
        config["feature_dim"],
        config["norm"],
        triple(config["patch"], "patch"),
        config["labeled_batch"],
        config["unlabeled_batch"],
    )
    setup = training_setup(device, overrides, num_batches=2, seed=config["seed"])
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        LOOPS[variant](setup, device, iterations)
        peak = torch.cuda.max_memory_allocated(device)
        method = "torch.cuda.max_memory_allocated minus memory_allocated before the first iteration"
    else:
        reset = _reset_peak_rss()
        baseline = (_status_kib("VmRSS") or 0) * 1024
        LOOPS[variant](setup, device, iterations)
        hwm = _status_kib("VmHWM") if reset else None
        if hwm is not None:
            peak = hwm * 1024
            method = "peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS before the first iteration"
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            method = "ru_maxrss minus RSS before the first iteration (fresh process)"
    result = {"variant": variant, "peak_increase_bytes": peak - baseline, "baseline_bytes": baseline, "method": method}
    print(json.dumps(result), flush=True)
    return result


def probe_in_subprocesses(
    variants: Sequence[str], settings: dict[str, Any], iterations: int, threads: int | None
) -> dict[str, dict[str, Any]]:
    """Run ``memory_probe`` for each variant in its own fresh Python process (all at once) and collect the results."""
    processes = {}
    for variant in variants:
        command = [sys.executable, str(ENTRY_POINT), "memory_probe", "--variant", variant]
        command += ["--settings", json.dumps(settings), "--iterations", str(iterations)]
        if threads is not None:
            command += ["--threads", str(threads)]
        processes[variant] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for variant, process in processes.items():
        out, err = process.communicate()
        lines = [line for line in out.strip().splitlines() if line.startswith("{")]
        if process.returncode != 0 or not lines:
            raise RuntimeError(f"memory probe of {variant!r} failed (exit {process.returncode}):\n{err[-3000:]}")
        results[variant] = json.loads(lines[-1])
    return results
