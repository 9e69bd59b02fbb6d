"""Speed and memory benchmarks of monai-semiseg: loss terms, the training engine, inference and the data pipeline.

Usage (from the repository root)::

    python scripts/benchmark.py losses    [--device cpu] [--repeats 5] [--n_filters 4] [--patch 64,64,32] ...
    python scripts/benchmark.py step      [--iterations 3] [--memory True] ...
    python scripts/benchmark.py step_variants [--amp_dtype float16|bfloat16] [--compile True] ...
    python scripts/benchmark.py inference [--volume 80,80,48] [--stride 10,10,2] [--train_iterations 100] ...
    python scripts/benchmark.py data      [--batches 8] [--num_workers 0] [--overrides '{"num_labeled": 4}'] ...
    python scripts/benchmark.py norm      [--batch 4] [--n_filters 4] [--patch 64,64,32]  (instance norm as built)
    python scripts/benchmark.py quality   --rows supervised,full --seeds 0,1,2 --budgets 2,4   (scripts/quality.py)
    python scripts/benchmark.py quality   --protocol label_limited [--seeds 0,1,2,3,4] [--iterations 1200]  (the same)
    python scripts/benchmark.py alignment --checkpoint RUN/models/model.pt         (scripts/term_alignment.py)
    python scripts/benchmark.py collapse  --output_dir output/label_limited       (scripts/collapse_cases.py)
    python scripts/benchmark.py subgroups --output_dir output/label_limited_96 --row full \
        --reference no_unlabeled_volumes [--split test]                           (scripts/brightness_subgroups.py)

Every command runs the variants it compares in one process, interleaved (A, B, A, B, ...), after one warm-up
round, and reports the median over ``--repeats`` rounds. It prints a table and ends with one JSON line::

    {"benchmark": "losses", "figures": [{"name": ..., "value": ..., "unit": ...}, ...], "config": {...}}

Figures that have a goal carry ``"goal"`` and ``"met"`` too; notes (methods, caveats) are ``config["notes"]``.
Defaults are the LA demo overlay's scaled-down settings (``n_filters`` 4, ``feature_dim`` 16, instance norm, patch
64x64x32, 2 labeled + 2 unlabeled items; for ``inference`` the LA stride scaled to that patch, 10x10x2, on an
80x80x48 phantom), so each command finishes in a few minutes on two CPU cores. The real LA size, for a GPU::

    R="--device cuda --n_filters 16 --feature_dim 32 --norm batch --patch 112,112,80"
    python scripts/benchmark.py losses $R
    python scripts/benchmark.py step $R
    python scripts/benchmark.py step_variants $R [--compile True]
    python scripts/benchmark.py inference $R --volume 144,144,96 --train_iterations 300 --train_lr 0.01
    python scripts/benchmark.py data --device cuda --n_filters 16 --patch 112,112,80 --num_workers 4 \
        --overrides '{"norm": "batch", "feature_dim": 32}'

The method timed is the LA bundle's own: network, objective and optimizer are resolved from ``train.json`` +
``demo.json`` (the flags above become overrides of ``n_filters``, ``feature_dim``, ``norm``, ``patch_size`` and the
batch sizes) by ``scripts/benchmarks/builder.py``. Each command is a module of ``scripts/benchmarks/``; this file is
only the command line.

Peak memory (``step``): each variant runs in a fresh subprocess (``memory_probe``), see
``scripts/benchmarks/memory.py``.

``step_variants`` runs the ``step`` engine iteration in fp32 (the baseline), with AMP (the trainer's and bundles'
``amp`` switch: float16 autocast and a GradScaler on CUDA, bfloat16 autocast on CPU), in channels-last 3D memory,
both, and with ``--compile True`` also under ``torch.compile`` (a missing compiler toolchain stops it with one
line before anything is timed). It reports each variant's time ratio to fp32, its peak memory on CUDA
(``torch.cuda.max_memory_allocated`` per run, in the one process; not measured on CPU) and the first iteration's
loss against fp32's, a check that the variants compute the same thing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import fire

from benchmarks import (
    BenchmarkError,
    memory_probe,
    run_data,
    run_inference,
    run_losses,
    run_norm,
    run_step,
    run_step_variants,
)
from brightness_subgroups import run_brightness_subgroups
from collapse_cases import run_collapse_cases
from quality import run_quality
from term_alignment import run_alignment

__all__ = ["COMMANDS", "main"]


def _command(fn: Callable[..., Any]) -> Callable[..., None]:
    """Wrap a command so that fire prints nothing after its JSON line, and a ``BenchmarkError`` is one line."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except BenchmarkError as error:
            raise SystemExit(f"error: {error}") from None

    return run


COMMANDS: dict[str, Callable[..., Any]] = {
    "losses": run_losses,
    "step": run_step,
    "step_variants": run_step_variants,
    "inference": run_inference,
    "data": run_data,
    "norm": run_norm,
    "memory_probe": memory_probe,
    "quality": run_quality,
    "alignment": run_alignment,
    "collapse": run_collapse_cases,
    "subgroups": run_brightness_subgroups,
}
"""The commands by name; ``quality``, ``alignment``, ``collapse`` and ``subgroups`` are ``scripts/quality.py``,
``scripts/term_alignment.py``, ``scripts/collapse_cases.py`` and ``scripts/brightness_subgroups.py``."""


def main() -> None:
    fire.Fire({name: _command(fn) for name, fn in COMMANDS.items()})


if __name__ == "__main__":
    main()
