"""Speed and memory benchmarks of monai-semiseg: loss terms, the training engine, inference and the data pipeline.

Usage (from the repository root)::

    python scripts/benchmark.py losses    [--device cpu] [--repeats 5] [--n_filters 4] [--patch 64,64,32] ...
    python scripts/benchmark.py step      [--iterations 3] [--memory True] ...
    python scripts/benchmark.py step_variants [--amp_dtype float16|bfloat16] [--compile True] ...
    python scripts/benchmark.py inference [--volume 80,80,48] [--stride 10,10,2] [--train_iterations 100] ...
    python scripts/benchmark.py data      [--batches 8] [--num_workers 0] [--overrides '{"num_labeled": 4}'] ...
    python scripts/benchmark.py quality   --rows supervised,full --seeds 0,1,2 --budgets 2,4   (scripts/quality.py)
    python scripts/benchmark.py quality   --protocol label_limited [--seeds 0,1,2,3,4] [--iterations 1200]  (the same)
    python scripts/benchmark.py alignment --checkpoint RUN/models/model.pt         (scripts/term_alignment.py)

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

Peak memory (``step``): each variant runs in a fresh subprocess (``memory_probe``). On CUDA the figure is
``torch.cuda.max_memory_allocated`` minus the memory allocated before the first iteration; on CPU it is the rise
of the process's peak resident set size over its resident size before the first iteration, the peak being reset
there through ``/proc/self/clear_refs`` (``ru_maxrss`` minus that baseline where the reset is not allowed).

``step_variants`` runs the ``step`` engine iteration in fp32 (the baseline), with AMP (the trainer's and bundles'
``amp`` switch: float16 autocast and a GradScaler on CUDA, bfloat16 autocast on CPU), in channels-last 3D memory,
both, and with ``--compile True`` also under ``torch.compile`` (a missing compiler toolchain stops it with one
line before anything is timed). It reports each variant's time ratio to fp32, its peak memory on CUDA
(``torch.cuda.max_memory_allocated`` per run, in the one process; not measured on CPU) and the first iteration's
loss against fp32's, a check that the variants compute the same thing.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fire
import torch
import torch.nn as nn

REPO_ROOT = Path(__file__).resolve().parents[1]
LA_BUNDLE = REPO_ROOT / "bundles" / "la"
LA_PATCH = (112, 112, 80)
LA_STRIDE = (18, 18, 4)

DEFAULT_PATCH = (64, 64, 32)
DEFAULT_VOLUME = (80, 80, 48)

__all__ = [
    "BenchmarkError",
    "BenchmarkReport",
    "CompileError",
    "Figure",
    "StepVariant",
    "build_dual_net",
    "build_objective",
    "make_batch",
    "memory_probe",
    "reference_sliding_window",
    "run_data",
    "run_inference",
    "run_interleaved",
    "run_losses",
    "run_step",
    "run_step_variants",
    "scaled_stride",
]


# ---------------------------------------------------------------------------------------------------------------------
# reporting


@dataclass
class Figure:
    """One measured number; ``goal`` (e.g. ``"<= 1.05"``) and ``met`` when the project has a target for it."""

    name: str
    value: float
    unit: str
    goal: str | None = None
    met: bool | None = None
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class BenchmarkReport:
    """The figures of one benchmark command, its settings and free-text notes (methods, caveats)."""

    benchmark: str
    figures: list[Figure] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    statistic: str = "median"

    def add(self, name: str, value: float, unit: str, goal: str | None = None, samples: Sequence[float] = ()) -> None:
        """Add a figure; ``goal`` is ``"<= x"`` or ``">= x"``; ``samples`` give its spread (min, max)."""
        met = None
        if goal is not None:
            op, target = goal.split()
            met = bool(value <= float(target)) if op == "<=" else bool(value >= float(target))
        low, high = (min(samples), max(samples)) if len(samples) > 1 else (None, None)
        self.figures.append(Figure(name, float(value), unit, goal, met, low, high))

    def to_json(self) -> str:
        """One line: ``{"benchmark", "figures", "config"}``; the notes, if any, are ``config["notes"]``."""
        config = {**self.config, "notes": self.notes} if self.notes else self.config
        figures = [f.to_dict() for f in self.figures]
        return json.dumps({"benchmark": self.benchmark, "figures": figures, "config": config})

    def print(self) -> dict[str, Any]:
        """Print the table, the notes and, last, the JSON line; return the JSON object."""
        print(f"\n== benchmark: {self.benchmark} ==")
        print("config: " + ", ".join(f"{k}={_short(v)}" for k, v in self.config.items()))
        rows = [("figure", self.statistic, "unit", "range", "goal", "")]
        for f in self.figures:
            spread = f"{_fmt(f.low)} .. {_fmt(f.high)}" if f.low is not None else ""
            status = "" if f.met is None else ("met" if f.met else "NOT MET")
            rows.append((f.name, _fmt(f.value), f.unit, spread, f.goal or "", status))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for i, row in enumerate(rows):
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            if i == 0:
                print("  ".join("-" * w for w in widths))
        for note in self.notes:
            print(f"note: {note}")
        line = self.to_json()
        print(line, flush=True)
        return json.loads(line)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------------------------------
# arguments, devices, timing


def _triple(value: int | str | Sequence[int], name: str) -> tuple[int, int, int]:
    """``64`` -> (64, 64, 64); ``"64,64,32"`` or (64, 64, 32) -> (64, 64, 32); anything else is a ValueError."""
    if isinstance(value, str):
        parts: Any = [p for p in value.replace("x", ",").split(",") if p.strip()]
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [value] * 3
    else:
        parts = list(value)
    try:
        numbers = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be three positive integers like 64,64,32, got {value!r}.") from None
    if len(numbers) != 3 or min(numbers) < 1:
        raise ValueError(f"{name} must be three positive integers like 64,64,32, got {value!r}.")
    return numbers  # type: ignore[return-value]


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_patch(patch: tuple[int, int, int]) -> None:
    if any(p % 16 for p in patch):
        raise ValueError(
            f"patch {list(patch)} must be divisible by 16 on every axis (VNet and ResVNet downsample 16x)."
        )


def _device(device: str, threads: int | None) -> torch.device:
    if threads is not None:
        _check_positive(threads=threads)
        torch.set_num_threads(threads)
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine.")
    return torch.device(device)


def _step_arguments(
    device: str,
    threads: int | None,
    patch: int | str | Sequence[int],
    *counts: int,
) -> tuple[torch.device, tuple[int, int, int]]:
    """Check the arguments the step benchmarks share; return the device and the patch as a triple.

    ``counts`` are repeats, iterations, n_filters, feature_dim, labeled_batch and unlabeled_batch, all >= 1.
    """
    names = ("repeats", "iterations", "n_filters", "feature_dim", "labeled_batch", "unlabeled_batch")
    _check_positive(**dict(zip(names, counts)))
    dev = _device(device, threads)
    patch_t = _triple(patch, "patch")
    _check_patch(patch_t)
    return dev, patch_t


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> list[float]:
    """Wall time of one call of ``fn``, device work included."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
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
    _check_positive(repeats=repeats)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(warmup + repeats):
        for name, fn in variants.items():
            measured = fn()
            if round_index >= warmup:
                samples[name].extend(measured)
    return samples


def _precision(device: torch.device) -> str:
    if device.type != "cuda":
        return "float32"
    return "float32, cuDNN TF32 " + ("on" if torch.backends.cudnn.allow_tf32 else "off")


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# ---------------------------------------------------------------------------------------------------------------------
# networks, objectives, batches


def build_dual_net(n_filters: int, norm: str, feature_dim: int, dropout: float = 0.5) -> nn.Module:
    """The LA bundle's network: ``DualNet(VNet, ResVNet)``, 1 input channel, 2 classes."""
    from semiseg.networks import DualNet, ResVNet, VNet

    return DualNet(
        VNet(in_channels=1, out_channels=2, n_filters=n_filters, norm=norm, dropout=dropout),
        ResVNet(in_channels=1, out_channels=2, n_filters=n_filters, norm=norm, dropout=dropout),
        feature_dim=feature_dim,
    )


def build_objective(all_terms: bool, weight: float = 0.1, contrastive: bool = True) -> nn.Module:
    """``DualNetworkObjective`` with DiceCE only, or with every term of the LA bundle (constant weights ``weight``).

    ``contrastive=False`` leaves the prototype contrastive term out of ``all_terms``.
    """
    from semiseg.engines import DualNetworkObjective
    from semiseg.losses import (
        CrossPseudoSupervisionLoss,
        CrossReliableSupervisionLoss,
        EntropyFilteredLoss,
        KLUncertaintyLoss,
        PredictionConsistencyLoss,
        PrototypeContrastiveLoss,
    )

    if not all_terms:
        return DualNetworkObjective()
    return DualNetworkObjective(
        cross_pseudo=CrossPseudoSupervisionLoss(),
        entropy_filter=EntropyFilteredLoss(percentile=20.0),
        kl_uncertainty=KLUncertaintyLoss(),
        consistency=PredictionConsistencyLoss(),
        contrastive=PrototypeContrastiveLoss(num_classes=2, temperature=0.1) if contrastive else None,
        cross_reliable=CrossReliableSupervisionLoss(threshold=0.6),
        unlabeled_weight=weight,
        contrastive_weight=weight,
    )


def make_batch(batch_size: int, patch: Sequence[int], labeled: bool = True) -> dict[str, torch.Tensor]:
    """A batch of noisy bright ellipsoids: ``image`` (B, 1, *patch) and, if ``labeled``, ``label`` (B, 1, *patch).

    Draws from torch's global generator: seed it (``torch.manual_seed``) for identical batches.
    """
    axes = [torch.linspace(-1.0, 1.0, int(s)) for s in patch]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (3, *patch)
    images, labels = [], []
    for _ in range(batch_size):
        centre = (torch.rand(3) - 0.5) * 0.6
        radii = 0.25 + 0.3 * torch.rand(3)
        inside = (((grid - centre.view(3, 1, 1, 1)) / radii.view(3, 1, 1, 1)) ** 2).sum(0) <= 1.0
        label = inside.float()[None]
        images.append(label + 0.3 * torch.randn_like(label))
        labels.append(label)
    batch = {"image": torch.stack(images)}
    if labeled:
        batch["label"] = torch.stack(labels)
    return batch


@dataclass
class _TrainingSetup:
    network: nn.Module
    optimizer: torch.optim.Optimizer
    objective: nn.Module
    labeled: list[dict[str, torch.Tensor]]
    unlabeled: list[dict[str, torch.Tensor]]


def _training_setup(
    device: torch.device,
    n_filters: int,
    norm: str,
    feature_dim: int,
    patch: tuple[int, int, int],
    labeled_batch: int,
    unlabeled_batch: int,
    num_batches: int,
    seed: int,
) -> _TrainingSetup:
    torch.manual_seed(seed)
    network = build_dual_net(n_filters, norm, feature_dim).to(device)
    batches = [make_batch(labeled_batch, patch) for _ in range(num_batches)]
    unlabeled = [make_batch(unlabeled_batch, patch, labeled=False) for _ in range(num_batches)]
    to = functools.partial(_batch_to, device=device)
    return _TrainingSetup(
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4),
        objective=build_objective(all_terms=True).to(device),
        labeled=[to(b) for b in batches],
        unlabeled=[to(b) for b in unlabeled],
    )


def _batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _copy_setup(setup: _TrainingSetup) -> _TrainingSetup:
    """An independent network, optimizer and objective with the same state, sharing the batches."""
    network = copy.deepcopy(setup.network)
    optimizer = type(setup.optimizer)(network.parameters(), **setup.optimizer.defaults)
    return _TrainingSetup(network, optimizer, copy.deepcopy(setup.objective), setup.labeled, setup.unlabeled)


# ---------------------------------------------------------------------------------------------------------------------
# the two training loops of `step` (and of `data`)


def _engine_iterations(
    setup: _TrainingSetup,
    device: torch.device,
    iterations: int,
    trainer_kwargs: dict[str, Any] | None = None,
    carry: dict[str, Any] | None = None,
) -> list[float]:
    """Run ``SemiSupervisedTrainer`` (no handlers) for ``iterations`` iterations; seconds of each iteration.

    An iteration is timed from ITERATION_STARTED to ITERATION_COMPLETED, so engine start-up is not counted.

    Args:
        setup: network, optimizer, objective and the in-memory batches.
        device: the training device.
        iterations: iterations of this run.
        trainer_kwargs: more ``SemiSupervisedTrainer`` arguments, e.g. ``amp``, ``amp_kwargs``, ``to_kwargs``.
        carry: state kept across runs: the trainer's ``GradScaler`` (the first run's is reused by the later ones,
            as in one long training run) under ``"scaler"``, and the loss of every iteration under ``"losses"``.
    """
    from ignite.engine import Events

    from semiseg.engines import SemiSupervisedTrainer

    trainer = SemiSupervisedTrainer(
        device=device,
        train_data_loader=setup.labeled,
        unlabeled_data_loader=setup.unlabeled,
        network=setup.network,
        optimizer=setup.optimizer,
        objective=setup.objective,
        iterations=iterations,
        epoch_length=len(setup.labeled),
        **(trainer_kwargs or {}),
    )
    losses: list[float] = []
    starts: list[float] = []
    times: list[float] = []

    if carry is not None:
        kept: dict[str, Any] = carry
        losses = kept.setdefault("losses", [])

        def keep_scaler(engine: Any) -> None:  # MONAI's Trainer.run() makes a new GradScaler: keep the first one
            if "scaler" in kept:
                engine.scaler = kept["scaler"]
            else:
                kept["scaler"] = engine.scaler

        trainer.add_event_handler(Events.STARTED, keep_scaler)

    def started(_: Any) -> None:
        _sync(device)
        starts.append(time.perf_counter())

    def completed(engine: Any) -> None:
        _sync(device)
        times.append(time.perf_counter() - starts[-1])
        if carry is not None:
            losses.append(float(engine.state.output["loss"]))

    trainer.add_event_handler(Events.ITERATION_STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, completed)
    with warnings.catch_warnings():
        # with amp, Trainer.run() makes a ``torch.cuda.amp.GradScaler()``, which warns (deprecated; disabled without
        # CUDA) at every run, i.e. every round
        warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler")
        trainer.run()
    return times


def _plain_iterations(setup: _TrainingSetup, device: torch.device, iterations: int) -> list[float]:
    """The same math as one engine iteration, written as a plain PyTorch loop; seconds of each iteration."""
    labeled, unlabeled = itertools.cycle(setup.labeled), itertools.cycle(setup.unlabeled)

    def step(iteration: int) -> None:  # a function, so that its tensors are freed when it returns
        batch = next(labeled)
        image_l, label = batch["image"].to(device), batch["label"].to(device)
        image_u = next(unlabeled)["image"].to(device)
        setup.network.train()
        setup.optimizer.zero_grad(set_to_none=False)
        outputs = setup.network(torch.cat([image_l, image_u], dim=0))
        terms = setup.objective(outputs, label, iteration)
        terms["loss"].backward()
        setup.optimizer.step()

    times = []
    for iteration in range(1, iterations + 1):
        times.extend(_timed(functools.partial(step, iteration), device))
    return times


_LOOPS: dict[str, Callable[[_TrainingSetup, torch.device, int], list[float]]] = {
    "engine": _engine_iterations,
    "plain": _plain_iterations,
}


# ---------------------------------------------------------------------------------------------------------------------
# peak memory in a fresh process


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
    if variant not in _LOOPS:
        raise ValueError(f"variant must be one of {sorted(_LOOPS)}, got {variant!r}.")
    config = json.loads(settings) if isinstance(settings, str) else dict(settings)
    device = _device(config["device"], threads)
    setup = _training_setup(
        device,
        config["n_filters"],
        config["norm"],
        config["feature_dim"],
        _triple(config["patch"], "patch"),
        config["labeled_batch"],
        config["unlabeled_batch"],
        num_batches=2,
        seed=config["seed"],
    )
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        _LOOPS[variant](setup, device, iterations)
        peak = torch.cuda.max_memory_allocated(device)
        method = "torch.cuda.max_memory_allocated minus memory_allocated before the first iteration"
    else:
        reset = _reset_peak_rss()
        baseline = (_status_kib("VmRSS") or 0) * 1024
        _LOOPS[variant](setup, device, iterations)
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


def _probe_in_subprocesses(
    variants: Sequence[str], settings: dict[str, Any], iterations: int, threads: int | None
) -> dict[str, dict[str, Any]]:
    """Run ``memory_probe`` for each variant in its own fresh Python process (all at once) and collect the results."""
    processes = {}
    for variant in variants:
        command = [sys.executable, str(Path(__file__).resolve()), "memory_probe", "--variant", variant]
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


# ---------------------------------------------------------------------------------------------------------------------
# command 1: losses


def run_losses(
    device: str = "cpu",
    repeats: int = 5,
    n_filters: int = 4,
    feature_dim: int = 16,
    norm: str = "instance",
    patch: int | str | Sequence[int] = DEFAULT_PATCH,
    labeled_batch: int = 2,
    unlabeled_batch: int = 2,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Cost of the unlabeled loss terms in one training step of ``DualNet(VNet, ResVNet)``.

    Four step variants, interleaved (each: zero_grad, forward, objective, backward, SGD step):
    ``supervised_labeled_forward`` (DiceCE only, network on the labeled items only: plain supervised training),
    ``supervised_same_forward`` (DiceCE only, network on labeled + unlabeled items), ``all_terms`` (DiceCE and
    every term of the LA bundle, same forward) and ``all_terms_except_contrastive``. The unlabeled terms' share of
    the step is ``(t_all_terms - t_supervised_same_forward) / t_all_terms`` (goal <= 0.10); cross-reliable
    supervision, a labeled-voxel term, is counted with them since the supervised-only step does not have it.
    ``contrastive_share`` is the part of the step that goes away without the contrastive term: its loss and the
    backward pass through the projection heads, which no other term uses. Then each term alone (its forward +
    backward on fixed network outputs, called as the objective calls it), interleaved.

    Returns:
        the JSON object printed last.
    """
    _check_positive(repeats=repeats)
    dev = _device(device, threads)
    patch_t = _triple(patch, "patch")
    _check_patch(patch_t)
    _check_positive(n_filters=n_filters, feature_dim=feature_dim, labeled_batch=labeled_batch)
    _check_positive(unlabeled_batch=unlabeled_batch)
    from semiseg.losses import compute_reliability

    torch.manual_seed(seed)
    network = build_dual_net(n_filters, norm, feature_dim).to(dev)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    labeled = _batch_to(make_batch(labeled_batch, patch_t), dev)
    image_u = make_batch(unlabeled_batch, patch_t, labeled=False)["image"].to(dev)
    image_l, label = labeled["image"], labeled["label"]
    image_all = torch.cat([image_l, image_u], dim=0)
    supervised, full = build_objective(all_terms=False).to(dev), build_objective(all_terms=True).to(dev)
    no_contrastive = build_objective(all_terms=True, contrastive=False).to(dev)

    def step(inputs: torch.Tensor, objective: nn.Module) -> Callable[[], list[float]]:
        def run() -> None:
            network.train()
            optimizer.zero_grad(set_to_none=False)
            objective(network(inputs), label, 1)["loss"].backward()
            optimizer.step()

        return lambda: _timed(run, dev)

    steps = run_interleaved(
        {
            "supervised_labeled_forward": step(image_l, supervised),
            "supervised_same_forward": step(image_all, supervised),
            "all_terms": step(image_all, full),
            "all_terms_except_contrastive": step(image_all, no_contrastive),
        },
        repeats,
    )

    # each term alone on fixed outputs: leaves that require grad, sliced as the objective slices them
    network.train()
    with torch.no_grad():
        fixed = {k: v.float() for k, v in network(image_all).items()}
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in fixed.items()}
    n_l = labeled_batch
    head_a, head_b = full.contrastive_a, full.contrastive_b
    percentile = float(full.entropy_filter.percentile)

    def masks_of(z_a: torch.Tensor, z_b: torch.Tensor) -> Any:
        return compute_reliability(torch.softmax(z_a[n_l:], 1), torch.softmax(z_b[n_l:], 1), percentile)

    masks = masks_of(leaves["logits_a"].detach(), leaves["logits_b"].detach())

    def term(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> Callable[[], list[float]]:
        def run() -> None:
            for leaf in leaves.values():
                leaf.grad = None
            value = fn(leaves["logits_a"], leaves["logits_b"])
            if isinstance(value, torch.Tensor) and value.requires_grad:
                value.backward()

        return lambda: _timed(run, dev)

    sup_loss = supervised.supervised_loss
    terms = run_interleaved(
        {
            "supervised": term(lambda a, b: sup_loss(a[:n_l], label) + sup_loss(b[:n_l], label)),
            "cross_reliable": term(lambda a, b: full.cross_reliable(a[:n_l], b[:n_l], label)),
            "reliability_masks": term(masks_of),
            "cps": term(lambda a, b: full.cross_pseudo(a[n_l:], b[n_l:])),
            "entropy_filter": term(lambda a, b: full.entropy_filter(a[n_l:], b[n_l:], masks)),
            "kl": term(lambda a, b: full.kl_uncertainty(a[n_l:], b[n_l:]) + full.kl_uncertainty(b[n_l:], a[n_l:])),
            "consistency": term(lambda a, b: full.consistency(a[n_l:], b[n_l:])),
            "contrastive": term(
                lambda a, b: head_a(leaves["features_a"][n_l:], masks.pseudo_label, masks.reliable_a, masks.uncertain)
                + head_b(leaves["features_b"][n_l:], masks.pseudo_label, masks.reliable_b, masks.uncertain)
            ),
            "objective_supervised": term(lambda a, b: supervised(leaves, label, 1)["loss"]),
            "objective_all_terms": term(lambda a, b: full(leaves, label, 1)["loss"]),
        },
        repeats,
    )

    report = BenchmarkReport("losses")
    t = {name: _median(values) for name, values in steps.items()}
    for name, values in steps.items():
        report.add(f"step_time_{name}", t[name], "s", samples=values)
    for baseline in ("supervised_same_forward", "supervised_labeled_forward"):
        report.add(f"step_ratio_all_terms_vs_{baseline}", t["all_terms"] / t[baseline], "x")
    share = (t["all_terms"] - t["supervised_same_forward"]) / t["all_terms"]
    report.add("unlabeled_terms_share", share, "fraction", goal="<= 0.10")
    contrastive_share = (t["all_terms"] - t["all_terms_except_contrastive"]) / t["all_terms"]
    report.add("contrastive_share", contrastive_share, "fraction")
    for name, values in terms.items():
        report.add(f"loss_time_{name}", _median(values), "s", samples=values)
    extra = ("reliability_masks", "cps", "entropy_filter", "kl", "consistency", "contrastive", "cross_reliable")
    report.add("loss_time_sum_of_extra_terms", sum(_median(terms[k]) for k in extra), "s")
    report.config = _config(
        device=str(dev),
        threads=torch.get_num_threads(),
        repeats=repeats,
        warmup=1,
        n_filters=n_filters,
        feature_dim=feature_dim,
        norm=norm,
        patch=list(patch_t),
        labeled_batch=labeled_batch,
        unlabeled_batch=unlabeled_batch,
        parameters=sum(p.numel() for p in network.parameters()),
        optimizer="SGD lr 0.01 momentum 0.9 wd 1e-4",
        precision=_precision(dev),
        seed=seed,
    )
    report.notes = [
        "share = (t_all_terms - t_supervised_same_forward) / t_all_terms: both steps run the network on the same "
        "labeled+unlabeled batch, so the difference is the loss terms (cross-reliable supervision included).",
        "loss_time_*: forward + backward of each term alone on fixed network outputs; reliability_masks is the "
        "entropy/percentile computation that entropy_filter and contrastive share (forward only, no gradient).",
        "the step difference can exceed the sum of the loss_time_* terms: with the contrastive term on, the backward "
        "pass also runs through both projection heads (1x1x1 convolutions at full resolution), which the "
        "supervised-only step skips; contrastive_share measures that.",
    ]
    return report.print()


# ---------------------------------------------------------------------------------------------------------------------
# command 2: step


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
    plain loop (labeled and unlabeled batch, ``cat``, forward, the same ``DualNetworkObjective``, backward, SGD
    step). Each has its own copy of the same network, optimizer and objective. Goals: time ratio <= 1.05, peak
    memory ratio <= 1.1 (``memory=True``: each variant in a fresh subprocess, see the module docstring).

    Returns:
        the JSON object printed last.
    """
    dev, patch_t = _step_arguments(
        device, threads, patch, repeats, iterations, n_filters, feature_dim, labeled_batch, unlabeled_batch
    )
    num_batches = 2
    base = _training_setup(
        dev, n_filters, norm, feature_dim, patch_t, labeled_batch, unlabeled_batch, num_batches, seed
    )
    setups = {"engine": base, "plain": _copy_setup(base)}
    samples = run_interleaved(
        {name: functools.partial(_LOOPS[name], setups[name], dev, iterations) for name in ("engine", "plain")},
        repeats,
    )
    report = BenchmarkReport("step")
    t = {name: _median(values) for name, values in samples.items()}
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
        probes = _probe_in_subprocesses(("engine", "plain"), settings, iterations, threads)
        mib = {name: probes[name]["peak_increase_bytes"] / 2**20 for name in probes}
        for name in ("engine", "plain"):
            report.add(f"peak_memory_{name}", mib[name], "MiB")
        report.add("memory_ratio_engine_vs_plain", mib["engine"] / max(mib["plain"], 1e-9), "x", goal="<= 1.1")
        method = probes["engine"]["method"] + f"; one fresh subprocess per variant, {iterations} iterations"
    report.config = _config(
        device=str(dev),
        threads=torch.get_num_threads(),
        repeats=repeats,
        warmup=1,
        iterations_per_run=iterations,
        n_filters=n_filters,
        feature_dim=feature_dim,
        norm=norm,
        patch=list(patch_t),
        labeled_batch=labeled_batch,
        unlabeled_batch=unlabeled_batch,
        terms="all (LA bundle)",
        precision=_precision(dev),
        memory_method=method,
        seed=seed,
    )
    report.notes = [
        "the engine converts every term to a python float each iteration (one device sync, as its output needs); "
        "the plain loop does not, so that cost is counted against the engine.",
    ]
    return report.print()


# ---------------------------------------------------------------------------------------------------------------------
# command 2b: step_variants (precision, memory layout, compiler)


class BenchmarkError(RuntimeError):
    """A benchmark cannot give its figures (a variant diverged, a tool is missing); the message is one readable line."""


class CompileError(BenchmarkError):
    """``torch.compile`` is not usable here (no compiler toolchain, unsupported Python, ...)."""


@dataclass(frozen=True)
class StepVariant:
    """How one ``step_variants`` variant runs the training step: AMP, channels-last 3D memory, ``torch.compile``."""

    name: str
    amp: bool = False
    channels_last: bool = False
    compile: bool = False


STEP_VARIANTS = (
    StepVariant("fp32"),
    StepVariant("amp", amp=True),
    StepVariant("channels_last", channels_last=True),
    StepVariant("amp+channels_last", amp=True, channels_last=True),
)
COMPILE_VARIANTS = (StepVariant("compile", compile=True), StepVariant("amp+compile", amp=True, compile=True))
AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
FIRST_LOSS_TOLERANCE = 0.01
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _amp_dtype(amp_dtype: str | None, device: torch.device) -> torch.dtype:
    """``None`` -> float16 on CUDA, bfloat16 on CPU; otherwise ``"float16"`` or ``"bfloat16"``."""
    if amp_dtype is None:
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f"amp_dtype must be one of {sorted(AMP_DTYPES)} (or unset), got {amp_dtype!r}.")
    return AMP_DTYPES[amp_dtype]


def _compile_failed(error: Exception, variant: str, device: torch.device) -> CompileError:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = lines[0] if lines else ""
    reason = reason if len(reason) <= 300 else reason[:297] + "..."
    return CompileError(
        f"torch.compile failed in the {variant!r} variant on {device}: {type(error).__name__}: {reason}. "
        "It needs a working compiler toolchain (a C++ compiler on CPU, Triton on CUDA) and a Python version that "
        "torch.compile supports; install what is missing or run without --compile "
        "(TORCHDYNAMO_VERBOSE=1 shows the full error)."
    )


def _variant_setup(base: _TrainingSetup, variant: StepVariant, device: torch.device) -> _TrainingSetup:
    """A copy of ``base`` set up as ``variant``: same weights, a fresh optimizer, same objective state, shared batches.

    The network is moved to channels-last 3D memory and/or wrapped in ``torch.compile`` as ``variant`` says.
    """
    network = copy.deepcopy(base.network)
    if variant.channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
    optimizer = type(base.optimizer)(network.parameters(), **base.optimizer.defaults)
    if variant.compile:
        try:
            network = torch.compile(network)  # type: ignore[assignment]
        except Exception as error:  # e.g. a Python version torch.compile does not support
            raise _compile_failed(error, variant.name, device) from None
    return _TrainingSetup(network, optimizer, copy.deepcopy(base.objective), base.labeled, base.unlabeled)


def _variant_trainer_kwargs(variant: StepVariant, amp_dtype: torch.dtype) -> dict[str, Any]:
    """The ``SemiSupervisedTrainer`` arguments of ``variant``.

    The bundles' ``amp`` flag (with ``amp_kwargs`` for the dtype), and ``to_kwargs`` that put each batch in
    channels-last 3D memory as the trainer moves it to the device.
    """
    kwargs: dict[str, Any] = {"amp": variant.amp}
    if variant.amp:
        kwargs["amp_kwargs"] = {"dtype": amp_dtype}
    if variant.channels_last:
        kwargs["to_kwargs"] = {"memory_format": torch.channels_last_3d}
    return kwargs


def _first_loss(
    base: _TrainingSetup, variant: StepVariant, device: torch.device, amp_dtype: torch.dtype, seed: int
) -> float:
    """The objective's loss on the first labeled + unlabeled batch, from the shared weights, as ``variant`` computes it.

    Runs on a throwaway copy (so the timed copies start from the same state), network in training mode with its
    dropout off (dropout masks depend on the dtype and memory layout, which would hide what is compared), the
    forward in ``torch.autocast`` like the trainer's, no gradient, the random generator seeded with ``seed`` (the
    contrastive term samples voxels). For compiled variants this is the first compiled call, so a missing
    toolchain fails here, before anything is timed.
    """
    setup = _variant_setup(base, variant, device)
    network = setup.network
    network.train()
    for module in network.modules():
        if isinstance(module, _DROPOUT):
            module.eval()
    inputs = torch.cat([base.labeled[0]["image"], base.unlabeled[0]["image"]], dim=0)
    label = base.labeled[0]["label"]
    if variant.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last_3d)
        label = label.contiguous(memory_format=torch.channels_last_3d)
    torch.manual_seed(seed)
    with torch.no_grad():
        with torch.autocast(device.type, enabled=variant.amp, dtype=amp_dtype):
            try:
                outputs = network(inputs)
            except Exception as error:
                if variant.compile:
                    raise _compile_failed(error, variant.name, device) from None
                raise
        return float(setup.objective(outputs, label, 1)["loss"])


def run_step_variants(
    device: str = "cpu",
    repeats: int = 5,
    iterations: int = 1,
    n_filters: int = 4,
    feature_dim: int = 16,
    norm: str = "instance",
    patch: int | str | Sequence[int] = DEFAULT_PATCH,
    labeled_batch: int = 2,
    unlabeled_batch: int = 2,
    amp_dtype: str | None = None,
    compile: bool = False,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """The ``step`` training iteration (``SemiSupervisedTrainer``, no handlers) in fp32, AMP, channels-last, compiled.

    Variants, interleaved after one warm-up round, each from its own copy of the same weights, optimizer settings,
    objective state and batches: ``fp32`` (the baseline; on CUDA cuDNN may use TF32, PyTorch's default, see
    ``config["precision"]``), ``amp`` (the trainer's ``amp`` switch, i.e. the bundles' ``amp`` flag:
    ``torch.autocast`` around the forward, the objective in float32, and MONAI's ``GradScaler``, which is active
    on CUDA only; the dtype is ``amp_dtype``), ``channels_last`` (network and batches in
    ``torch.channels_last_3d``; the batches are converted by the trainer's ``to_kwargs`` as they are moved to the
    device, as a user's would be), ``amp+channels_last``, and with ``compile=True`` also ``compile`` and
    ``amp+compile`` (the network wrapped in ``torch.compile``; its compilation falls in the warm-up round).

    Figures per variant: median iteration time and its ratio to fp32; on CUDA the peak memory of a run
    (``torch.cuda.max_memory_allocated`` minus the memory allocated before it, i.e. activations and temporaries:
    weights, gradients and optimizer states of all variants stay allocated) and its ratio to fp32 (not measured
    on CPU); the first iteration's loss (see ``_first_loss``: dropout off, so that the variants compute the same
    function) and its absolute difference to fp32's (goal: at most ``FIRST_LOSS_TOLERANCE``); the loss of the last
    timed iteration (variants drift apart as they train: dropout masks and rounding differ).

    Args:
        iterations: consecutive iterations per variant and round (one ``trainer.run()``).
        amp_dtype: ``"float16"`` or ``"bfloat16"``; default float16 on CUDA (with the GradScaler), bfloat16 on CPU.
        compile: add the ``torch.compile`` variants; they need a C++ compiler (CPU) or Triton (CUDA) and fail with
            :class:`CompileError` before anything is timed when it is missing.

    Returns:
        the JSON object printed last.
    """
    from semiseg.engines.trainer import NonFiniteLossError

    dev, patch_t = _step_arguments(
        device, threads, patch, repeats, iterations, n_filters, feature_dim, labeled_batch, unlabeled_batch
    )
    dtype = _amp_dtype(amp_dtype, dev)
    if not isinstance(compile, bool):
        raise ValueError(f"compile must be True or False, got {compile!r}.")
    variants = list(STEP_VARIANTS) + (list(COMPILE_VARIANTS) if compile else [])
    base = _training_setup(dev, n_filters, norm, feature_dim, patch_t, labeled_batch, unlabeled_batch, 2, seed)

    # first-iteration losses; the compiled variants first, so that a missing toolchain fails at once
    first_loss = {v.name: _first_loss(base, v, dev, dtype, seed) for v in sorted(variants, key=lambda v: not v.compile)}

    setups = {v.name: _variant_setup(base, v, dev) for v in variants}
    carries: dict[str, dict[str, Any]] = {v.name: {} for v in variants}
    peaks: dict[str, list[float]] = {v.name: [] for v in variants}
    rounds = dict.fromkeys(setups, 0)

    def runner(variant: StepVariant) -> Callable[[], list[float]]:
        kwargs = _variant_trainer_kwargs(variant, dtype)

        def run() -> list[float]:
            rounds[variant.name] += 1
            torch.manual_seed(seed + rounds[variant.name])  # the same dropout draws for every variant of a round
            if dev.type == "cuda":
                _sync(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                before = torch.cuda.memory_allocated(dev)
            try:
                times = _engine_iterations(setups[variant.name], dev, iterations, kwargs, carries[variant.name])
            except NonFiniteLossError as error:
                raise BenchmarkError(
                    f"the {variant.name!r} variant diverged in round {rounds[variant.name]} "
                    f"(round 1 is the warm-up): {error}"
                ) from None
            if dev.type == "cuda":
                peaks[variant.name].append((torch.cuda.max_memory_allocated(dev) - before) / 2**20)
            return times

        return run

    warmup = 1
    samples = run_interleaved({v.name: runner(v) for v in variants}, repeats, warmup=warmup)

    report = BenchmarkReport("step_variants")
    t = {name: _median(values) for name, values in samples.items()}
    for name, values in samples.items():
        report.add(f"iteration_time_{name}", t[name], "s", samples=values)
    for name in setups:
        if name != "fp32":
            report.add(f"time_ratio_{name}_vs_fp32", t[name] / t["fp32"], "x")
    if dev.type == "cuda":
        peak = {name: max(values[warmup:]) for name, values in peaks.items()}
        for name, values in peaks.items():
            report.add(f"peak_memory_{name}", peak[name], "MiB", samples=values[warmup:])
        for name in setups:
            if name != "fp32":
                report.add(f"memory_ratio_{name}_vs_fp32", peak[name] / max(peak["fp32"], 1e-9), "x")
    for name in setups:
        report.add(f"first_loss_{name}", first_loss[name], "")
    differences = {name: abs(first_loss[name] - first_loss["fp32"]) for name in setups if name != "fp32"}
    for name, difference in differences.items():
        report.add(f"first_loss_abs_difference_{name}_vs_fp32", difference, "")
    report.add(
        "max_first_loss_abs_difference_vs_fp32", max(differences.values()), "", goal=f"<= {FIRST_LOSS_TOLERANCE}"
    )
    for name in setups:
        report.add(f"last_loss_{name}", carries[name]["losses"][-1], "")

    scalers = {}
    for variant in variants:
        scaler = carries[variant.name].get("scaler") if variant.amp else None
        if scaler is not None and scaler.is_enabled():
            scalers[variant.name] = float(scaler.get_scale())
    report.config = _config(
        device=str(dev),
        threads=torch.get_num_threads(),
        repeats=repeats,
        warmup=warmup,
        iterations_per_run=iterations,
        n_filters=n_filters,
        feature_dim=feature_dim,
        norm=norm,
        patch=list(patch_t),
        labeled_batch=labeled_batch,
        unlabeled_batch=unlabeled_batch,
        terms="all (LA bundle)",
        variants=[v.name for v in variants],
        amp_dtype=str(dtype).replace("torch.", ""),
        grad_scaler=(
            "the trainer's GradScaler, one per variant kept across rounds; final scale " + json.dumps(scalers)
            if scalers
            else "none (the trainer's GradScaler is inactive without CUDA)"
        ),
        precision=_precision(dev),
        memory_method=(
            "torch.cuda.max_memory_allocated minus memory_allocated before each run (max over the kept rounds)"
            if dev.type == "cuda"
            else "n/a on CPU (variants share one process; use `step` for the CPU memory probe)"
        ),
        torch=torch.__version__,
        seed=seed,
    )
    report.notes = [
        "time_ratio_X_vs_fp32 < 1 means X is faster; the gain of X is 1 - ratio.",
        "first_loss: the objective on the first batch from the shared weights, network in training mode with dropout "
        "off, no update; last_loss: the last timed iteration's loss (dropout on; variants drift apart as they train).",
    ]
    if dev.type == "cpu":
        report.notes.append(
            "on CPU AMP is bfloat16 autocast (no GradScaler); CPU timings say little about a GPU, where AMP and "
            "channels-last use tensor cores (run with --device cuda)."
        )
        if patch_t[0] // 16 == 2 and dtype == torch.bfloat16:
            report.notes.append(
                "caution: this patch puts the bottleneck at 2 voxels along the first axis, where PyTorch 2.13's CPU "
                "bfloat16 Conv3d weight gradients come out wrong (up to 1e33; seen with 32+ channels), so the AMP "
                "variants' training may diverge; use a first axis of 48 or 64+."
            )
    return report.print()


# ---------------------------------------------------------------------------------------------------------------------
# command 3: inference


def scaled_stride(
    patch: Sequence[int], reference_patch: Sequence[int] = LA_PATCH, stride: Sequence[int] = LA_STRIDE
) -> tuple[int, ...]:
    """The LA test stride (18x18x4 at 112x112x80) scaled to another window: ``max(1, round(s * p / p_ref))``."""
    return tuple(max(1, round(s * p / r)) for s, p, r in zip(stride, patch, reference_patch))


def reference_sliding_window(
    image: torch.Tensor, network: Callable[[torch.Tensor], torch.Tensor], patch: Sequence[int], stride: Sequence[int]
) -> torch.Tensor:
    """The classic stride-based test loop of the LA literature, averaging the network's output over windows.

    Pads each spatial axis shorter than the window to the window (zeros, split evenly, as MONAI does), visits
    windows every ``stride`` voxels with the last one flush to the far edge, sums the network outputs, divides by
    how many windows covered each voxel and crops the padding away.

    Args:
        image: ``(1, C_in, X, Y, Z)``.
        network: maps ``(1, C_in, *patch)`` to ``(1, C_out, *patch)``.
        patch: window size.
        stride: step between windows on each axis.

    Returns:
        ``(1, C_out, X, Y, Z)``, the mean of the outputs of the windows covering each voxel.
    """
    if image.ndim != 5 or image.shape[0] != 1:
        raise ValueError(f"image must have shape (1, C, X, Y, Z), got {tuple(image.shape)}.")
    size = image.shape[2:]
    pads = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(size, patch)]
    flat_pad = [v for before_after in reversed(pads) for v in before_after]
    padded = torch.nn.functional.pad(image, flat_pad) if any(flat_pad) else image
    full = padded.shape[2:]
    starts = [
        [min(i * st, n - p) for i in range(math.ceil((n - p) / st) + 1)] for n, p, st in zip(full, patch, stride)
    ]
    total: torch.Tensor | None = None
    count = torch.zeros((1, 1, *full), device=image.device)
    for x, y, z in itertools.product(*starts):
        window = (slice(None), slice(None), slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
        out = network(padded[window])
        if total is None:
            total = torch.zeros((1, out.shape[1], *full), dtype=out.dtype, device=image.device)
        total[window] += out
        count[window] += 1
    average = total / count  # type: ignore[operator]
    crop = tuple(slice(before, before + s) for (before, _), s in zip(pads, size))
    return average[(slice(None), slice(None), *crop)]


def _train_briefly(
    network: nn.Module,
    device: torch.device,
    iterations: int,
    patch: tuple[int, int, int],
    volume: tuple[int, int, int],
    cases: int,
    learning_rate: float,
    seed: int,
) -> float:
    """Supervised training (DiceCE on both branches, SGD) on random crops of phantoms; returns the seconds it took."""
    from monai.transforms import NormalizeIntensity

    from semiseg.data.phantoms import make_phantom

    start = time.perf_counter()
    normalize = NormalizeIntensity()
    images, labels = [], []
    for index in range(cases):
        image, label, _ = make_phantom("la", seed=seed + 1 + index, shape=volume)
        images.append(normalize(torch.from_numpy(image)[None]).float())
        labels.append(torch.from_numpy(label)[None].float())
    objective = build_objective(all_terms=False).to(device)
    optimizer = torch.optim.SGD(network.parameters(), lr=learning_rate, momentum=0.9, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    network.train()
    for iteration in range(1, iterations + 1):
        crops_x, crops_y = [], []
        for _ in range(2):
            k = int(torch.randint(cases, (1,), generator=generator))
            corner = [int(torch.randint(v - p + 1, (1,), generator=generator)) for v, p in zip(volume, patch)]
            window = (slice(None), *(slice(c, c + p) for c, p in zip(corner, patch)))
            crops_x.append(images[k][window])
            crops_y.append(labels[k][window])
        x, y = torch.stack(crops_x).to(device), torch.stack(crops_y).to(device)
        optimizer.zero_grad()
        objective(network(x), y, iteration)["loss"].backward()
        optimizer.step()
    network.eval()
    return time.perf_counter() - start


def run_inference(
    device: str = "cpu",
    repeats: int = 5,
    n_filters: int = 4,
    feature_dim: int = 16,
    norm: str = "instance",
    patch: int | str | Sequence[int] = DEFAULT_PATCH,
    stride: int | str | Sequence[int] | None = None,
    volume: int | str | Sequence[int] = DEFAULT_VOLUME,
    coarse_overlap: float = 0.5,
    sw_batch_size: int = 4,
    train_iterations: int = 100,
    train_cases: int = 4,
    train_lr: float = 0.05,
    tf32: bool = False,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """The LA bundle's sliding-window inferer vs the classic stride loop, and the cost and Dice of a coarser overlap.

    The bundle's inferer is MONAI's ``SlidingWindowInferer`` (roi = patch, constant weights, overlap from
    ``semiseg.bundle.overlap_for_stride(patch, stride)``). Both it and :func:`reference_sliding_window` average the
    eval-mode ``DualNet`` output (log of the mean of the branches' softmax) over the same windows, so their maps
    must agree (goal: max abs difference <= 1e-5). Variants, interleaved: the reference loop, the inferer with
    sw_batch_size 1 and ``sw_batch_size``, and the inferer at ``coarse_overlap`` (sw_batch_size 1), whose Dice
    against the phantom's label is compared with the bundle overlap's.

    Args:
        stride: window step; default the LA stride 18x18x4 scaled from 112x112x80 to ``patch`` (see
            :func:`scaled_stride`), e.g. 10x10x2 for 64x64x32.
        volume: size (X, Y, Z) of the phantom test volume (``make_phantom(kind="la")``).
        train_iterations: supervised iterations on ``train_cases`` other phantoms before inference (0: a random
            network; its Dice says nothing about the method, only about the overlaps' agreement).
        train_lr: SGD learning rate of that training (0.05: the tiny default network learns too slowly at 0.01).
        tf32: on CUDA, let cuDNN and matmuls use TF32 (PyTorch's default for cuDNN). Off by default: with TF32,
            batches of 1 and of 4 windows pick different kernels whose rounding differs at the 1e-3 level, which
            would hide what the 1e-5 comparison checks (the same windows, averaged the same way).

    Returns:
        the JSON object printed last.
    """
    from monai.inferers import SlidingWindowInferer
    from monai.metrics import compute_dice
    from monai.networks.utils import one_hot
    from monai.transforms import NormalizeIntensity

    from semiseg.bundle import overlap_for_stride
    from semiseg.data.phantoms import make_phantom

    _check_positive(repeats=repeats)
    dev = _device(device, threads)
    patch_t = _triple(patch, "patch")
    _check_patch(patch_t)
    stride_t = scaled_stride(patch_t) if stride is None else _triple(stride, "stride")
    volume_t = _triple(volume, "volume")
    _check_positive(n_filters=n_filters, feature_dim=feature_dim, sw_batch_size=sw_batch_size)
    _check_positive(train_cases=train_cases)
    if not train_lr > 0:
        raise ValueError(f"train_lr must be > 0, got {train_lr}.")
    if not 0.0 <= coarse_overlap < 1.0:
        raise ValueError(f"coarse_overlap must be in [0, 1), got {coarse_overlap}.")
    if isinstance(train_iterations, bool) or not isinstance(train_iterations, int) or train_iterations < 0:
        raise ValueError(f"train_iterations must be an integer >= 0, got {train_iterations!r}.")
    if train_iterations and any(v < p for v, p in zip(volume_t, patch_t)):
        raise ValueError(f"volume {list(volume_t)} must be at least the patch {list(patch_t)} to train on crops.")
    overlap = overlap_for_stride(patch_t, stride_t)
    tf32_before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = bool(tf32)

    torch.manual_seed(seed)
    network = build_dual_net(n_filters, norm, feature_dim).to(dev)
    train_seconds = 0.0
    if train_iterations:
        train_seconds = _train_briefly(
            network, dev, train_iterations, patch_t, volume_t, train_cases, train_lr, seed + 1000
        )
    network.eval()
    image_np, label_np, _ = make_phantom("la", seed=seed, shape=volume_t)
    image = NormalizeIntensity()(torch.from_numpy(image_np)[None]).float()[None].to(dev)  # (1, 1, X, Y, Z)
    label = torch.from_numpy(label_np)[None, None].long().to(dev)

    inferers = {
        "sliding_window_sw1": SlidingWindowInferer(patch_t, sw_batch_size=1, overlap=overlap, mode="constant"),
        f"sliding_window_sw{sw_batch_size}": SlidingWindowInferer(
            patch_t, sw_batch_size=sw_batch_size, overlap=overlap, mode="constant"
        ),
        "sliding_window_coarse": SlidingWindowInferer(
            patch_t, sw_batch_size=1, overlap=coarse_overlap, mode="constant"
        ),
    }
    outputs: dict[str, torch.Tensor] = {}

    def infer(name: str) -> Callable[[], list[float]]:
        def run() -> None:
            with torch.inference_mode():
                if name == "reference_loop":
                    outputs[name] = reference_sliding_window(image, network, patch_t, stride_t)
                else:
                    outputs[name] = inferers[name](image, network)

        return lambda: _timed(run, dev)

    names = ["reference_loop", *inferers]
    samples = run_interleaved({name: infer(name) for name in names}, repeats)

    def dice(output: torch.Tensor) -> float:
        prediction = one_hot(output.argmax(1, keepdim=True), 2)
        return float(compute_dice(prediction, one_hot(label, 2), include_background=False).mean())

    t = {name: _median(values) for name, values in samples.items()}
    wide = f"sliding_window_sw{sw_batch_size}"
    report = BenchmarkReport("inference")
    for name in names:
        report.add(f"time_{name}", t[name], "s", samples=samples[name])
    report.add("time_ratio_sw1_vs_reference", t["sliding_window_sw1"] / t["reference_loop"], "x")
    report.add(f"time_ratio_sw{sw_batch_size}_vs_reference", t[wide] / t["reference_loop"], "x")
    reference = outputs["reference_loop"]
    report.add("max_abs_difference_sw1", float((outputs["sliding_window_sw1"] - reference).abs().max()), "", "<= 1e-5")
    report.add(f"max_abs_difference_sw{sw_batch_size}", float((outputs[wide] - reference).abs().max()), "", "<= 1e-5")
    report.add("time_ratio_coarse_vs_bundle_overlap", t["sliding_window_coarse"] / t["sliding_window_sw1"], "x")
    dice_bundle, dice_coarse = dice(outputs["sliding_window_sw1"]), dice(outputs["sliding_window_coarse"])
    precision = _precision(dev)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32_before
    report.add("dice_bundle_overlap", dice_bundle, "dice")
    report.add("dice_coarse_overlap", dice_coarse, "dice")
    report.add("dice_change_coarse_minus_bundle", dice_coarse - dice_bundle, "dice")
    windows = [math.ceil(max(v - p, 0) / s) + 1 for v, p, s in zip(volume_t, patch_t, stride_t)]
    coarse_step = [max(int(p * (1 - coarse_overlap)), 1) for p in patch_t]
    coarse_windows = [math.ceil(max(v - p, 0) / s) + 1 for v, p, s in zip(volume_t, patch_t, coarse_step)]
    report.config = _config(
        device=str(dev),
        threads=torch.get_num_threads(),
        repeats=repeats,
        warmup=1,
        n_filters=n_filters,
        feature_dim=feature_dim,
        norm=norm,
        patch=list(patch_t),
        stride=list(stride_t),
        overlap=[round(o, 6) for o in overlap],
        windows=math.prod(windows),
        coarse_overlap=coarse_overlap,
        coarse_windows=math.prod(coarse_windows),
        volume=list(volume_t),
        phantom="make_phantom(kind='la', seed=%d)" % seed,
        network=(
            f"briefly trained: {train_iterations} supervised iterations (SGD lr {train_lr}) on {train_cases} "
            f"other phantoms ({train_seconds:.0f} s)"
            if train_iterations
            else "random (untrained)"
        ),
        precision=precision,
        seed=seed,
    )
    report.notes = [
        "both paths average the eval-mode DualNet output (log of the mean of the branches' softmax) over windows; "
        "Dice is of the argmax of the averaged map against the phantom label (foreground only).",
    ]
    if max(dice_bundle, dice_coarse) < 0.05:
        report.notes.append(
            "the network predicts (almost) no foreground, so the Dice comparison says nothing; "
            "raise --train_iterations (or use --norm instance) for a network that segments."
        )
    return report.print()


# ---------------------------------------------------------------------------------------------------------------------
# command 4: data


def _cycle(loader: Any) -> Iterator[Any]:
    """Batches of ``loader`` for ever, restarting it when it ends (as the trainer does)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the data loader gives no batch (fewer cases than the batch size with drop_last?).")


def run_data(
    device: str = "cpu",
    repeats: int = 5,
    batches: int = 8,
    num_workers: int | None = None,
    n_filters: int | None = None,
    patch: int | str | Sequence[int] | None = None,
    overrides: dict | str | None = None,
    output_dir: str | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Batches per second of the LA bundle's training data pipeline vs training iterations per second.

    Builds ``train#dataloader`` and ``train#unlabeled_dataloader`` (and ``network``, ``objective``, ``optimizer``)
    with ``monai.bundle.ConfigParser`` from ``bundles/la/configs/train.json`` + ``demo.json``; the demo overlay
    writes its phantoms under ``output_dir`` (default: a temporary folder, removed afterwards). One "batch" is what
    one iteration consumes: a labeled and an unlabeled batch. Variants, interleaved: drawing ``batches`` batches
    from the loaders, and ``batches`` iterations of ``SemiSupervisedTrainer`` (no handlers) on batches drawn from
    the same loaders beforehand, so training is timed without data loading. Goal: data rate >= 3x training rate.

    Args:
        num_workers, n_filters, patch: override the demo's values (0, 4, 64x64x32).
        overrides: more config overrides, ``{"id": value}``, e.g. ``{"num_labeled": 8}``.
        output_dir: bundle output folder (phantoms are written to ``<output_dir>/phantoms``, reused when present).

    Returns:
        the JSON object printed last.
    """
    from monai.bundle import ConfigParser

    _check_positive(repeats=repeats)
    dev = _device(device, threads)
    _check_positive(batches=batches)
    extra = json.loads(overrides) if isinstance(overrides, str) else dict(overrides or {})
    if num_workers is not None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}.")
        extra["num_workers"] = num_workers
    if n_filters is not None:
        _check_positive(n_filters=n_filters)
        extra["n_filters"] = n_filters
    if patch is not None:
        patch_t = _triple(patch, "patch")
        _check_patch(patch_t)
        extra["patch_size"] = list(patch_t)
    configs = [LA_BUNDLE / "configs" / "train.json", LA_BUNDLE / "configs" / "demo.json"]
    for config_file in configs:
        if not config_file.is_file():
            raise FileNotFoundError(f"bundle config {config_file} not found.")

    with tempfile.TemporaryDirectory(prefix="semiseg_bench_") as scratch:
        parser = ConfigParser()
        parser.read_config([str(c) for c in configs])
        parser["bundle_root"] = str(LA_BUNDLE)
        parser["output_dir"] = output_dir or scratch
        parser["device"] = f"$torch.device('{dev}')"
        for key, value in extra.items():
            parser[key] = value
        parser.parse()
        torch.manual_seed(seed)
        start = time.perf_counter()
        labeled_loader = parser.get_parsed_content("train#dataloader")
        unlabeled_loader = parser.get_parsed_content("train#unlabeled_dataloader")
        setup_seconds = time.perf_counter() - start
        if unlabeled_loader is None:
            raise ValueError("the bundle config gives no unlabeled data loader (num_labeled >= the training cases?).")
        network = parser.get_parsed_content("network")
        objective = parser.get_parsed_content("objective")
        optimizer = parser.get_parsed_content("optimizer")
        labeled_stream, unlabeled_stream = _cycle(labeled_loader), _cycle(unlabeled_loader)
        to = functools.partial(_batch_to, device=dev)
        setup = _TrainingSetup(
            network,
            optimizer,
            objective,
            labeled=[to(next(labeled_stream)) for _ in range(batches)],
            unlabeled=[{"image": next(unlabeled_stream)["image"].to(dev)} for _ in range(batches)],
        )

        def draw() -> list[float]:
            times = []
            for _ in range(batches):
                start = time.perf_counter()
                to(next(labeled_stream))
                next(unlabeled_stream)["image"].to(dev)
                _sync(dev)
                times.append(time.perf_counter() - start)
            return times

        samples = run_interleaved(
            {"data": draw, "train": functools.partial(_engine_iterations, setup, dev, batches)}, repeats
        )
        settings = {
            key: parser.get_parsed_content(key)
            for key in ("patch_size", "n_filters", "norm", "feature_dim", "num_workers", "num_labeled", "cache_rate")
        }
        settings.update(
            labeled_batch=parser.get_parsed_content("labeled_batch_size"),
            unlabeled_batch=parser.get_parsed_content("unlabeled_batch_size"),
            train_cases=parser.get_parsed_content("phantom_train_cases"),
            amp=parser.get_parsed_content("amp"),
            precision=_precision(dev),
        )
        labeled_stream = unlabeled_stream = None  # drops the loaders' iterators, which ends their worker processes

    data_rate = 1.0 / _median(samples["data"])
    train_rate = 1.0 / _median(samples["train"])
    report = BenchmarkReport("data")
    report.add("data_batches_per_second", data_rate, "1/s", samples=[1.0 / s for s in samples["data"]])
    report.add("train_iterations_per_second", train_rate, "1/s", samples=[1.0 / s for s in samples["train"]])
    report.add("data_to_train_ratio", data_rate / train_rate, "x", goal=">= 3")
    report.add("data_setup_time", setup_seconds, "s")
    report.config = _config(
        device=str(dev),
        threads=torch.get_num_threads(),
        repeats=repeats,
        warmup=1,
        batches_per_run=batches,
        bundle="bundles/la/configs/train.json + demo.json",
        overrides=extra,
        **settings,
        seed=seed,
    )
    report.notes = [
        "one data batch = a labeled + an unlabeled batch (what one iteration consumes), moved to the device; "
        "training iterations run on batches drawn beforehand (no data loading inside); data_setup_time is the "
        "phantom writing (skipped when present) and the CacheDataset caching, once.",
    ]
    return report.print()


def _config(**values: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


# ---------------------------------------------------------------------------------------------------------------------
# command line


def run_quality(**options: Any) -> dict:
    """Quality of the ablation rows on phantoms; see ``scripts/quality.py`` for the options."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from quality import run_quality as quality

    return quality(**options)


def run_alignment(**options: Any) -> dict:
    """Gradient alignment of the unlabeled terms with the true labels; see ``scripts/term_alignment.py``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from term_alignment import run_alignment as alignment

    return alignment(**options)


def _command(fn: Callable[..., Any]) -> Callable[..., None]:
    """Wrap a command so that fire prints nothing after its JSON line, and a ``BenchmarkError`` is one line."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except BenchmarkError as error:
            raise SystemExit(f"error: {error}") from None

    return run


def main() -> None:
    fire.Fire(
        {
            "losses": _command(run_losses),
            "step": _command(run_step),
            "step_variants": _command(run_step_variants),
            "inference": _command(run_inference),
            "data": _command(run_data),
            "memory_probe": _command(memory_probe),
            "quality": _command(run_quality),
            "alignment": _command(run_alignment),
        }
    )


if __name__ == "__main__":
    main()
