"""``inference``: the LA bundle's sliding-window inferer vs the classic stride loop, and a coarser overlap's cost."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from monai.transforms import NormalizeIntensity

from semiseg.arguments import check_int
from semiseg.bundle import overlap_for_stride
from semiseg.data.phantoms import make_phantom

from .builder import (
    SUPERVISED_OVERLAY,
    build_inferer,
    build_method,
    build_objective,
    bundle_setting,
    method_arguments,
)
from .options import DEFAULT_PATCH, DEFAULT_VOLUME, triple
from .report import BenchmarkReport
from .timing import median, precision_of, run_config, run_interleaved, timed

__all__ = ["LA_PATCH", "LA_STRIDE", "reference_sliding_window", "run_inference", "scaled_stride"]

LA_PATCH: tuple[int, ...] = tuple(bundle_setting("patch_size"))
"""The LA bundle's patch (``train.json``'s ``patch_size``, 112x112x80)."""

LA_STRIDE: tuple[int, ...] = tuple(bundle_setting("sw_stride"))
"""The LA bundle's test stride (``train.json``'s ``sw_stride``, 18x18x4)."""


def scaled_stride(
    patch: Sequence[int], reference_patch: Sequence[int] = LA_PATCH, stride: Sequence[int] = LA_STRIDE
) -> tuple[int, ...]:
    """The LA test stride (18x18x4 at 112x112x80) scaled to another window: ``max(1, round(s * p / p_ref))``."""
    return tuple(max(1, round(s * p / r)) for s, p, r in zip(stride, patch, reference_patch))


def reference_sliding_window(
    image: torch.Tensor, network: Callable[[torch.Tensor], torch.Tensor], patch: Sequence[int], stride: Sequence[int]
) -> torch.Tensor:
    """The classic stride-based test loop of the LA literature, averaging the windows' softmax probabilities.

    Pads each spatial axis shorter than the window to the window (zeros, split evenly, as MONAI does), visits
    windows every ``stride`` voxels with the last one flush to the far edge, sums the softmax (over the channel axis)
    of the network outputs, divides by how many windows covered each voxel, crops the padding away and returns the
    log of that mean, the form of ``semiseg.inferers.ProbabilitySlidingWindowInferer``'s output.

    Args:
        image: ``(1, C_in, X, Y, Z)``.
        network: maps ``(1, C_in, *patch)`` to logits or log-probabilities ``(1, C_out, *patch)``.
        patch: window size.
        stride: step between windows on each axis.

    Returns:
        ``(1, C_out, X, Y, Z)``, the log of the mean probabilities of the windows covering each voxel.
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
        out = torch.softmax(network(padded[window]).float(), dim=1)
        if total is None:
            total = torch.zeros((1, out.shape[1], *full), dtype=out.dtype, device=image.device)
        total[window] += out
        count[window] += 1
    average = total / count  # type: ignore[operator]
    crop = tuple(slice(before, before + s) for (before, _), s in zip(pads, size))
    return torch.log(average[(slice(None), slice(None), *crop)].clamp_min(torch.finfo(average.dtype).tiny))


def _train_briefly(
    network: nn.Module,
    objective: nn.Module,
    device: torch.device,
    iterations: int,
    patch: tuple[int, int, int],
    volume: tuple[int, int, int],
    cases: int,
    learning_rate: float,
    seed: int,
) -> float:
    """Training with ``objective`` (the bundle's supervised row) and SGD on random crops of phantoms; seconds taken."""
    start = time.perf_counter()
    normalize = NormalizeIntensity()
    images, labels = [], []
    for index in range(cases):
        image, label, _ = make_phantom("la", seed=seed + 1 + index, shape=volume)
        images.append(normalize(torch.from_numpy(image)[None]).float())
        labels.append(torch.from_numpy(label)[None].float())
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

    The bundle's inferer is its ``inferer``, resolved from ``train.json`` with ``sw_stride`` = ``stride`` (MONAI's
    ``semiseg.inferers.ProbabilitySlidingWindowInferer``: roi = patch, constant weights, overlap from
    ``semiseg.bundle.overlap_for_stride(patch, stride)``). Both it and :func:`reference_sliding_window` average the
    softmax probabilities of the eval-mode ``DualNet`` output over the same windows and return their log, so their
    maps must agree (goal: max abs difference <= 1e-5). Variants, interleaved: the reference loop, the inferer with
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
    dev, patch_t, overrides = method_arguments(
        device, threads, patch, n_filters, feature_dim, norm, 2, 2, repeats=repeats, sw_batch_size=sw_batch_size,
        train_cases=train_cases,
    )  # fmt: skip
    stride_t = scaled_stride(patch_t) if stride is None else triple(stride, "stride")
    volume_t = triple(volume, "volume")
    if not train_lr > 0:
        raise ValueError(f"train_lr must be > 0, got {train_lr}.")
    if not 0.0 <= coarse_overlap < 1.0:
        raise ValueError(f"coarse_overlap must be in [0, 1), got {coarse_overlap}.")
    check_int(train_iterations, "train_iterations", 0)
    if train_iterations and any(v < p for v, p in zip(volume_t, patch_t)):
        raise ValueError(f"volume {list(volume_t)} must be at least the patch {list(patch_t)} to train on crops.")
    overlap = overlap_for_stride(patch_t, stride_t)
    tf32_before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = bool(tf32)

    torch.manual_seed(seed)
    network = build_method(dev, overrides).network
    train_seconds = 0.0
    if train_iterations:
        objective = build_objective(dev, overrides, [SUPERVISED_OVERLAY])
        train_seconds = _train_briefly(
            network, objective, dev, train_iterations, patch_t, volume_t, train_cases, train_lr, seed + 1000
        )
    network.eval()
    image_np, label_np, _ = make_phantom("la", seed=seed, shape=volume_t)
    image = NormalizeIntensity()(torch.from_numpy(image_np)[None]).float()[None].to(dev)  # (1, 1, X, Y, Z)
    label = torch.from_numpy(label_np)[None, None].long().to(dev)

    def bundle_inferer(**extra: Any) -> Callable[..., torch.Tensor]:
        return build_inferer({**overrides, "sw_stride": list(stride_t), **extra})

    inferers = {
        "sliding_window_sw1": bundle_inferer(sw_batch_size=1),
        f"sliding_window_sw{sw_batch_size}": bundle_inferer(sw_batch_size=sw_batch_size),
        "sliding_window_coarse": bundle_inferer(sw_batch_size=1, **{"inferer#overlap": coarse_overlap}),
    }
    outputs: dict[str, torch.Tensor] = {}

    def infer(name: str) -> Callable[[], list[float]]:
        def run() -> None:
            with torch.inference_mode():
                if name == "reference_loop":
                    outputs[name] = reference_sliding_window(image, network, patch_t, stride_t)
                else:
                    outputs[name] = inferers[name](image, network)

        return lambda: timed(run, dev)

    names = ["reference_loop", *inferers]
    samples = run_interleaved({name: infer(name) for name in names}, repeats)

    def dice(output: torch.Tensor) -> float:
        prediction = one_hot(output.argmax(1, keepdim=True), 2)
        return float(compute_dice(prediction, one_hot(label, 2), include_background=False).mean())

    t = {name: median(values) for name, values in samples.items()}
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
    precision = precision_of(dev)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32_before
    report.add("dice_bundle_overlap", dice_bundle, "dice")
    report.add("dice_coarse_overlap", dice_coarse, "dice")
    report.add("dice_change_coarse_minus_bundle", dice_coarse - dice_bundle, "dice")
    windows = [math.ceil(max(v - p, 0) / s) + 1 for v, p, s in zip(volume_t, patch_t, stride_t)]
    coarse_step = [max(int(p * (1 - coarse_overlap)), 1) for p in patch_t]
    coarse_windows = [math.ceil(max(v - p, 0) / s) + 1 for v, p, s in zip(volume_t, patch_t, coarse_step)]
    report.config = run_config(
        dev,
        repeats,
        1,
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
            f"briefly trained: {train_iterations} iterations of the bundle's supervised row (SGD lr {train_lr}) on "
            f"{train_cases} other phantoms ({train_seconds:.0f} s)"
            if train_iterations
            else "random (untrained)"
        ),
        precision=precision,
        seed=seed,
    )
    report.notes = [
        "both paths average the softmax probabilities of the eval-mode DualNet output over windows (log of the mean); "
        "Dice is of the argmax of the averaged map against the phantom label (foreground only).",
    ]
    if max(dice_bundle, dice_coarse) < 0.05:
        report.notes.append(
            "the network predicts (almost) no foreground, so the Dice comparison says nothing; "
            "raise --train_iterations (or use --norm instance) for a network that segments."
        )
    return report.print()
