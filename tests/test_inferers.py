"""Tests of semiseg.inferers: sliding windows blended as probabilities."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.inferers import SlidingWindowInferer
from monai.transforms import Activations

from semiseg.bundle import overlap_for_stride
from semiseg.inferers import ProbabilitySlidingWindowInferer
from semiseg.networks import DualNet, ResVNet, VNet

#: foreground probability each window predicts, by the window's first voxel (the image holds the voxel index)
WINDOW_FOREGROUND = {0: 0.001, 1: 0.8, 2: 0.8}


def _window_network(window: torch.Tensor) -> torch.Tensor:
    """Log-probabilities ``(B, 2, 3, 1, 1)``, the same foreground probability over the window, set by its position."""
    p = torch.tensor([WINDOW_FOREGROUND[int(round(float(w[0, 0, 0, 0])))] for w in window])
    log_p = torch.stack([torch.log1p(-p), torch.log(p)], dim=1)
    return log_p[:, :, None, None, None].expand(-1, -1, *window.shape[2:]).clone()


def _inferers() -> tuple[SlidingWindowInferer, ProbabilitySlidingWindowInferer]:
    roi, stride = (3, 1, 1), (1, 1, 1)
    kwargs = {"roi_size": roi, "sw_batch_size": 2, "overlap": overlap_for_stride(roi, stride), "mode": "constant"}
    return SlidingWindowInferer(**kwargs), ProbabilitySlidingWindowInferer(**kwargs)


def test_three_windows_blend_to_the_mean_probability() -> None:
    image = torch.arange(5.0).reshape(1, 1, 5, 1, 1)  # windows start at 0, 1, 2: all three cover voxel 2
    plain, blending = _inferers()
    foreground = Activations(softmax=True)(blending(image, _window_network)[0])[1, 2, 0, 0]
    assert float(foreground) == pytest.approx((0.001 + 0.8 + 0.8) / 3, abs=1e-5)  # 0.53
    geometric = Activations(softmax=True)(plain(image, _window_network)[0])[1, 2, 0, 0]
    assert float(geometric) == pytest.approx(0.20, abs=0.005)  # what MONAI's inferer gives on log-probabilities


def test_result_is_finite_log_probabilities_of_a_dual_net() -> None:
    torch.manual_seed(0)
    net = DualNet(VNet(n_filters=2, norm="instance"), ResVNet(n_filters=2, norm="instance"), feature_dim=4).eval()
    image = torch.randn(1, 1, 48, 32, 32)
    roi = (32, 32, 32)
    inferer = ProbabilitySlidingWindowInferer(roi, overlap=overlap_for_stride(roi, (16, 8, 8)), mode="gaussian")
    with torch.no_grad():
        out = inferer(image, net)
    assert out.shape == (1, 2, 48, 32, 32) and torch.isfinite(out).all()
    assert torch.allclose(out.exp().sum(1), torch.ones(1, 48, 32, 32), atol=1e-5)
    # without overlap (one window = the whole image) it is the network's own output
    whole = ProbabilitySlidingWindowInferer((48, 32, 32))
    with torch.no_grad():
        assert torch.allclose(whole(image, net), net(image), atol=1e-5)


def test_training_mode_output_is_refused() -> None:
    net = DualNet(VNet(n_filters=2, norm="instance"), ResVNet(n_filters=2, norm="instance"), feature_dim=4).train()
    with pytest.raises(ValueError, match="one tensor"):
        ProbabilitySlidingWindowInferer((32, 32, 32))(torch.randn(1, 1, 32, 32, 32), net)


def test_probabilities_underflowing_to_zero_stay_finite() -> None:
    def confident(window: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(window), torch.full_like(window, 1e4)], dim=1)

    out = ProbabilitySlidingWindowInferer((4, 4, 4), overlap=0.5)(torch.zeros(1, 1, 6, 6, 6), confident)
    assert torch.isfinite(out).all() and float(out[0, 0].max()) < math.log(1e-30)


def _position_network(window: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, 2, *window)`` that depend on where a voxel lies in the window: not equivariant to flips."""
    ramp = torch.linspace(-2.0, 2.0, window.shape[2]).reshape(1, 1, -1, 1, 1)
    foreground = window + ramp * torch.linspace(0.5, 1.5, window.shape[3]).reshape(1, 1, 1, -1, 1)
    return torch.cat([torch.zeros_like(foreground), foreground], dim=1)


def test_mirroring_averages_the_probabilities_of_the_flipped_passes() -> None:
    torch.manual_seed(0)
    image = torch.randn(1, 1, 6, 5, 4)
    mirrored = ProbabilitySlidingWindowInferer((6, 5, 4), mirror_axes=[0, 1])
    passes = []
    for dims in [(), (2,), (3,), (2, 3)]:
        flipped = torch.flip(image, dims) if dims else image
        probs = torch.softmax(_position_network(flipped), dim=1)
        passes.append(torch.flip(probs, dims) if dims else probs)
    expected = torch.stack(passes).mean(0)
    assert torch.allclose(mirrored(image, _position_network).exp(), expected, atol=1e-6)
    plain = ProbabilitySlidingWindowInferer((6, 5, 4))(image, _position_network).exp()
    assert not torch.allclose(plain, expected, atol=1e-3)  # the network is not flip-equivariant: mirroring matters


def test_mirroring_runs_the_network_once_per_flip_and_leaves_an_equivariant_network_unchanged() -> None:
    calls = []

    def pointwise(window: torch.Tensor) -> torch.Tensor:
        calls.append(window.shape[0])
        return torch.cat([torch.zeros_like(window), 3.0 * window], dim=1)

    image = torch.randn(1, 1, 8, 8, 8)
    kwargs = {"roi_size": (4, 4, 4), "sw_batch_size": 8, "overlap": 0.5}
    mirrored = ProbabilitySlidingWindowInferer(**kwargs, mirror_axes=[0, 1, 2])(image, pointwise)
    assert len(calls) == 4 * 8 and sum(calls) == 27 * 8  # 27 windows in 4 batches of <= 8, 2**3 passes each
    plain = ProbabilitySlidingWindowInferer(**kwargs)(image, pointwise)
    assert torch.allclose(mirrored, plain, atol=1e-5)


@pytest.mark.parametrize("axes", [[0, 0], [-1]])
def test_mirror_axes_are_checked(axes: list[int]) -> None:
    with pytest.raises(ValueError, match="mirror_axes"):
        ProbabilitySlidingWindowInferer((4, 4, 4), mirror_axes=axes)


def test_a_mirror_axis_beyond_the_input_is_refused() -> None:
    with pytest.raises(ValueError, match="beyond the 3 spatial axes"):
        ProbabilitySlidingWindowInferer((4, 4, 4), mirror_axes=[3])(torch.zeros(1, 1, 4, 4, 4), _position_network)


@pytest.mark.parametrize("bundle", ["la", "pancreas", "brats"])
@pytest.mark.parametrize("file", ["train.json", "inference.json"])
def test_bundles_mirror_only_when_asked(bundle: str, file: str) -> None:
    config = Path(__file__).resolve().parent.parent / "bundles" / bundle / "configs" / file
    parser = ConfigParser()
    parser.read_config(str(config))
    assert parser.get_parsed_content("inferer").mirror_axes == []  # off by default: one pass per window
    parser["mirror_axes"] = [0, 1]
    assert parser.get_parsed_content("inferer", instantiate=True, lazy=False).mirror_axes == [0, 1]
