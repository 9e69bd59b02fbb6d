"""Shared fixtures: tiny networks and batches so that engine tests run in seconds on a CPU."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def tiny_dual_net() -> torch.nn.Module:
    from semiseg.networks import DualNet, ResVNet, VNet

    torch.manual_seed(0)
    return DualNet(
        VNet(in_channels=1, out_channels=2, n_filters=2, norm="instance", dropout=0.0),
        ResVNet(in_channels=1, out_channels=2, n_filters=2, norm="instance", dropout=0.0),
        feature_dim=4,
    )


def make_batches(count: int, batch_size: int, size: int = 32, labeled: bool = True, seed: int = 0) -> list[dict]:
    """Batches of a bright cube (label 1) in noise, as a loader would give them."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        image = torch.randn(batch_size, 1, size, size, size, generator=gen) * 0.3
        label = torch.zeros(batch_size, 1, size, size, size)
        lo, hi = size // 4, 3 * size // 4
        label[..., lo:hi, lo:hi, lo:hi] = 1
        image = image + label
        batches.append({"image": image, "label": label} if labeled else {"image": image})
    return batches
