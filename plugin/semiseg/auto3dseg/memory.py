"""Memory of a training patch of the dual network, measured, and the memory budget of the machine."""

from __future__ import annotations

import functools
import os

import torch

__all__ = ["LOSS_OVERHEAD", "activation_bytes_per_voxel", "memory_budget", "static_bytes"]

LOSS_OVERHEAD = 1.25
"""Factor on the networks' activations for the loss terms' own tensors (softmax, entropy, masks, prototype
features): an estimate, not measured."""

_PROBE_SIZES = (32, 48)


@functools.lru_cache(maxsize=16)
def activation_bytes_per_voxel(
    in_channels: int, num_classes: int, n_filters: int, feature_dim: int, norm: str = "batch"
) -> float:
    """Bytes that autograd keeps per input voxel and patch for one training forward of the default dual network.

    Measured, not modelled: the tensors saved for backward by a training-mode forward of
    :class:`~semiseg.networks.DualNet` (VNet + ResVNet) on two cube sizes are counted, and the difference divided by
    the difference in voxels (so the weights, saved once, drop out). It runs on PyTorch's ``meta`` device (shapes
    only, a fraction of a second). Float32; AMP roughly halves it.
    """
    from semiseg.networks import DualNet, ResVNet, VNet

    with torch.device("meta"):  # shapes only: no arithmetic, no memory
        net = DualNet(
            VNet(in_channels, num_classes, n_filters=n_filters, norm=norm),
            ResVNet(in_channels, num_classes, n_filters=n_filters, norm=norm),
            feature_dim=feature_dim,
        ).train()
    totals = []
    for side in _PROBE_SIZES:
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor, seen: dict[int, int] = seen) -> torch.Tensor:
            seen[id(tensor)] = tensor.numel() * tensor.element_size()
            return tensor

        x = torch.zeros(1, in_channels, side, side, side, device="meta")
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            net(x)
        totals.append(sum(seen.values()))
    return (totals[1] - totals[0]) / (_PROBE_SIZES[1] ** 3 - _PROBE_SIZES[0] ** 3)


def static_bytes(in_channels: int, num_classes: int, n_filters: int, feature_dim: int) -> int:
    """Weights, gradients and SGD momentum of the dual network (3 x float32 per parameter)."""
    from semiseg.networks import DualNet, ResVNet, VNet

    net = DualNet(VNet(in_channels, num_classes, n_filters=n_filters), ResVNet(in_channels, num_classes,
                  n_filters=n_filters), feature_dim=feature_dim)  # fmt: skip
    return 12 * sum(p.numel() for p in net.parameters())


def memory_budget(memory_gb: float | None = None, device: str | None = None) -> tuple[float, str]:
    """Bytes the training may use, and where the figure came from.

    ``memory_gb`` when given; else 80 % of the first visible GPU's memory; else half of the machine's physical memory
    (a CPU run shares it with the data cache and the rest of the system).
    """
    if memory_gb is not None:
        if float(memory_gb) <= 0:
            raise ValueError(f"memory_gb must be positive, got {memory_gb!r}")
        return float(memory_gb) * 2**30, f"memory budget {float(memory_gb):g} GiB (given)"
    use_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if use_cuda:
        props = torch.cuda.get_device_properties(0)
        return 0.8 * props.total_memory, f"80 % of {props.name}'s {props.total_memory / 2**30:.0f} GiB"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return 0.5 * total, f"half of the machine's {total / 2**30:.0f} GiB (CPU)"
