"""``step_variants``: the ``step`` training iteration in fp32, with AMP, channels-last 3D memory, ``torch.compile``.

It reports each variant's time ratio to fp32, its peak memory on CUDA (``torch.cuda.max_memory_allocated`` per run, in
the one process; not measured on CPU) and the first iteration's loss against fp32's, a check that the variants
compute the same thing. A missing compiler toolchain stops ``--compile True`` with one line before anything is timed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from semiseg.arguments import check_bool
from semiseg.engines.trainer import NonFiniteLossError

from .builder import TrainingSetup, method_arguments, training_setup
from .loops import engine_iterations
from .options import DEFAULT_PATCH
from .report import BenchmarkError, BenchmarkReport, CompileError
from .timing import median, precision_of, run_config, run_interleaved, sync

__all__ = [
    "AMP_DTYPES",
    "COMPILE_VARIANTS",
    "FIRST_LOSS_TOLERANCE",
    "STEP_VARIANTS",
    "StepVariant",
    "run_step_variants",
]


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


def _variant_setup(base: TrainingSetup, variant: StepVariant, device: torch.device) -> TrainingSetup:
    """A copy of ``base`` set up as ``variant``: same weights, a fresh optimizer, same objective state, shared batches.

    The network is put in channels-last 3D or contiguous memory (the bundle's network comes channels-last on the CPU,
    see ``semiseg.bundle.conv_memory_format``; the fp32 baseline is the contiguous one) and/or wrapped in
    ``torch.compile`` as ``variant`` says.
    """
    memory_format = torch.channels_last_3d if variant.channels_last else torch.contiguous_format
    network = copy.deepcopy(base.network).to(memory_format=memory_format)
    optimizer = type(base.optimizer)(network.parameters(), **base.optimizer.defaults)
    if variant.compile:
        try:
            network = torch.compile(network)  # type: ignore[assignment]
        except Exception as error:  # e.g. a Python version torch.compile does not support
            raise _compile_failed(error, variant.name, device) from None
    return TrainingSetup(network, optimizer, copy.deepcopy(base.objective), base.labeled, base.unlabeled)


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
    base: TrainingSetup, variant: StepVariant, device: torch.device, amp_dtype: torch.dtype, seed: int
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
    dev, patch_t, overrides = method_arguments(
        device, threads, patch, n_filters, feature_dim, norm, labeled_batch, unlabeled_batch, repeats=repeats,
        iterations=iterations,
    )  # fmt: skip
    dtype = _amp_dtype(amp_dtype, dev)
    check_bool(compile, "compile")
    variants = list(STEP_VARIANTS) + (list(COMPILE_VARIANTS) if compile else [])
    base = training_setup(dev, overrides, num_batches=2, seed=seed)

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
                sync(dev)
                torch.cuda.reset_peak_memory_stats(dev)
                before = torch.cuda.memory_allocated(dev)
            try:
                times = engine_iterations(setups[variant.name], dev, iterations, kwargs, carries[variant.name])
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
    t = {name: median(values) for name, values in samples.items()}
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
    report.config = run_config(
        dev,
        repeats,
        warmup,
        iterations_per_run=iterations,
        n_filters=n_filters,
        feature_dim=feature_dim,
        norm=norm,
        patch=list(patch_t),
        labeled_batch=labeled_batch,
        unlabeled_batch=unlabeled_batch,
        terms="all (LA bundle's objective)",
        variants=[v.name for v in variants],
        amp_dtype=str(dtype).replace("torch.", ""),
        grad_scaler=(
            "the trainer's GradScaler, one per variant kept across rounds; final scale " + json.dumps(scalers)
            if scalers
            else "none (the trainer's GradScaler is inactive without CUDA)"
        ),
        precision=precision_of(dev),
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
