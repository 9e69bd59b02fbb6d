"""``norm``: the networks' instance normalisation (``GroupNorm``, one group per channel) vs ``nn.InstanceNorm3d``.

``norm="instance"`` builds ``GroupNorm(C, C)`` (``semiseg.networks.vnet.norm_spec``): the same statistics and affine
parameters as ``InstanceNorm3d(C, affine=True)``. This command times both, forward and backward, at the shapes the
demo network normalises (``n_filters`` channels at the patch's resolution, then twice the channels at each halving,
four levels), and reports the time ratio and the largest difference of outputs and input gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
from monai.networks.layers import get_norm_layer

from semiseg.networks.vnet import norm_spec

from .options import DEFAULT_PATCH, check_patch, check_positive, device_of, triple
from .report import BenchmarkReport
from .timing import median, run_config, run_interleaved, timed

__all__ = ["run_norm"]

LEVELS = 4


def _level_shapes(batch: int, n_filters: int, patch: tuple[int, int, int]) -> list[tuple[int, ...]]:
    """(B, C, *spatial) of the feature maps at each encoder level: C doubles as every axis halves."""
    return [(batch, n_filters * 2**k, *(p // 2**k for p in patch)) for k in range(LEVELS)]


def _pair(channels: int, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """``InstanceNorm3d(C, affine=True)`` and the layer the networks build for ``norm="instance"``, same weights."""
    reference = nn.InstanceNorm3d(channels, affine=True).to(device)
    name, args = norm_spec("instance", channels)  # type: ignore[misc]
    built = get_norm_layer((name, args), spatial_dims=3, channels=channels).to(device)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
        built.load_state_dict(reference.state_dict())  # the checkpoints of either load into the other
    return reference, built


def _forward_backward(
    layers: Sequence[nn.Module], inputs: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], rounds: int
) -> None:
    for _ in range(rounds):
        for layer, x, g in zip(layers, inputs, grads):
            layer(x).backward(g)


def run_norm(
    device: str = "cpu",
    repeats: int = 5,
    rounds: int = 10,
    batch: int = 4,
    n_filters: int = 4,
    patch: int | str | Sequence[int] | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time the instance normalisation the networks build against ``nn.InstanceNorm3d``, forward and backward.

    Args:
        device: ``cpu`` or ``cuda[:N]``.
        repeats: interleaved rounds kept (after one warm-up round).
        rounds: forward + backward passes over the four levels per timed sample.
        batch: items per call (the demo's training forward: 2 labeled crops + 2 copy-paste mixes).
        n_filters: channels at the first level (the demo's 4; the bundles' 16).
        patch: the spatial size at the first level; default the demo's 64x64x32.
        seed: seed of the inputs and weights.
        threads: CPU threads for torch; default torch's.

    Returns:
        the JSON object printed last.
    """
    check_positive(repeats=repeats, rounds=rounds, batch=batch, n_filters=n_filters)
    dev = device_of(device, threads)
    patch_t = triple(patch if patch is not None else DEFAULT_PATCH, "patch")
    check_patch(patch_t)
    torch.manual_seed(seed)
    shapes = _level_shapes(batch, n_filters, patch_t)
    pairs = [_pair(shape[1], dev) for shape in shapes]
    inputs = [torch.randn(shape, device=dev, requires_grad=True) for shape in shapes]
    grads = [torch.randn(shape, device=dev) for shape in shapes]

    diff = 0.0
    for (reference, built), x, g in zip(pairs, inputs, grads):
        y_ref, y_built = reference(x), built(x)
        (g_ref,) = torch.autograd.grad(y_ref, x, g)
        (g_built,) = torch.autograd.grad(y_built, x, g)
        diff = max(diff, float((y_ref - y_built).detach().abs().max()), float((g_ref - g_built).abs().max()))

    def variant(layers: list[nn.Module]) -> list[float]:
        return timed(functools.partial(_forward_backward, layers, inputs, grads, rounds), dev)

    samples = run_interleaved(
        {
            "instance_norm_3d": functools.partial(variant, [r for r, _ in pairs]),
            "built": functools.partial(variant, [b for _, b in pairs]),
        },
        repeats,
    )
    report = BenchmarkReport("norm")
    per_pass = {name: [s / rounds for s in values] for name, values in samples.items()}
    report.add("instance_norm_3d_time", median(per_pass["instance_norm_3d"]), "s", samples=per_pass["instance_norm_3d"])
    report.add("built_time", median(per_pass["built"]), "s", samples=per_pass["built"])
    ratio = median(per_pass["built"]) / median(per_pass["instance_norm_3d"])
    report.add("built_to_instance_norm_3d_ratio", ratio, "x", goal="<= 1")
    report.add("max_abs_difference", diff, "", goal="<= 1e-4")
    report.config = run_config(
        dev, repeats, 1, built=type(pairs[0][1]).__name__, shapes=[list(s) for s in shapes], rounds=rounds, seed=seed
    )
    report.notes = [
        "one timed pass = forward + backward of every level's layer on its input; the difference is the largest "
        "absolute difference of outputs and input gradients over the levels (float32).",
    ]
    return report.print()
