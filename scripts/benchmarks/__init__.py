"""Speed and memory benchmarks of monai-semiseg, one module per command; ``scripts/benchmark.py`` is the command line.

- ``report.py``: the table and the JSON line every command prints; ``timing.py``: interleaved, synchronised timing;
  ``options.py``: the flags the commands share.
- ``builder.py``: the method that is timed, resolved from the LA bundle's ``train.json`` + ``demo.json`` (+ an
  ablation overlay) with MONAI's ``ConfigParser``, so it is the objective users train.
- ``loops.py`` (engine vs plain training loop), ``memory.py`` (peak memory in a fresh process).
- one module per command: ``losses``, ``step``, ``step_variants``, ``inference``, ``data``, ``norm``. The
  ``quality`` and ``alignment`` commands live in ``scripts/quality.py`` and ``scripts/term_alignment.py``.
"""

from __future__ import annotations

from .builder import BundleMethod, build_method, build_objective, bundle_parser, make_batch, method_overrides
from .data import run_data
from .inference import reference_sliding_window, run_inference, scaled_stride
from .losses import run_losses
from .memory import memory_probe
from .norm import run_norm
from .report import BenchmarkError, BenchmarkReport, CompileError, Figure
from .step import run_step
from .step_variants import StepVariant, run_step_variants
from .timing import run_interleaved

__all__ = [
    "BenchmarkError",
    "BenchmarkReport",
    "BundleMethod",
    "CompileError",
    "Figure",
    "StepVariant",
    "build_method",
    "build_objective",
    "bundle_parser",
    "make_batch",
    "memory_probe",
    "method_overrides",
    "reference_sliding_window",
    "run_data",
    "run_inference",
    "run_interleaved",
    "run_losses",
    "run_norm",
    "run_step",
    "run_step_variants",
    "scaled_stride",
]
