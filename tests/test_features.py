"""Tests of semiseg.networks.features: DecoderFeatureAdapter around MONAI networks."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import SegResNet, UNet

from semiseg.networks import DecoderFeatureAdapter


def _unet() -> UNet:
    return UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


def _capture(network: torch.nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    outputs = []
    handle = network.get_submodule(layer).register_forward_hook(lambda m, a, out: outputs.append(out))
    network(x)
    handle.remove()
    return outputs[-1]


def test_unet_outer_skip_is_upsampled_to_full_resolution():
    torch.manual_seed(0)
    unet = _unet().eval()
    adapter = DecoderFeatureAdapter(unet, layer="model.1")
    assert adapter.feature_channels == 8  # 2 * channels[0], found by the dry run
    assert adapter.out_channels == 2
    x = torch.rand(2, 1, 16, 16, 32)
    logits, features = adapter.forward_features(x)
    assert torch.equal(logits, unet(x)) and torch.equal(adapter(x), unet(x))
    half = _capture(unet, "model.1", x)
    assert half.shape == (2, 8, 8, 8, 16)
    expected = F.interpolate(half, size=(16, 16, 32), mode="trilinear", align_corners=False)
    assert features.shape == (2, 8, 16, 16, 32)
    assert torch.allclose(features, expected)
    # the hook lives only during forward_features
    assert len(unet.get_submodule("model.1")._forward_hooks) == 0


def test_segresnet_last_up_layer_is_full_resolution():
    torch.manual_seed(0)
    net = SegResNet(spatial_dims=3, init_filters=8, in_channels=1, out_channels=3).eval()
    adapter = DecoderFeatureAdapter(net, layer="up_layers.2")
    assert (adapter.feature_channels, adapter.out_channels) == (8, 3)
    x = torch.rand(1, 1, 16, 16, 16)
    logits, features = adapter.forward_features(x)
    assert logits.shape == (1, 3, 16, 16, 16)
    assert torch.equal(features, _capture(net, "up_layers.2", x))  # already full resolution: no resizing


def test_gradient_flows_through_features():
    torch.manual_seed(0)
    adapter = DecoderFeatureAdapter(_unet(), layer="model.1")
    _, features = adapter.forward_features(torch.rand(2, 1, 16, 16, 16))
    features.square().mean().backward()
    first_conv = adapter.network.get_submodule("model.0.conv.unit0.conv")
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_explicit_feature_channels_and_training_mode_kept():
    unet = _unet()
    adapter = DecoderFeatureAdapter(unet, layer="model.1", feature_channels=8)
    assert adapter.feature_channels == 8 and adapter.out_channels == 2
    assert DecoderFeatureAdapter(unet, layer="model.1").network.training  # the dry run restores training mode


def test_scripting_wraps_network_forward():
    torch.manual_seed(0)
    adapter = DecoderFeatureAdapter(_unet(), layer="model.1").eval()
    x = torch.rand(1, 1, 16, 16, 16)
    assert torch.allclose(torch.jit.script(adapter)(x), adapter(x), atol=1e-6)


def test_unknown_layer_lists_valid_names():
    message = "layer 'decoder' is not a submodule of UNet; valid names include: model, model.0"
    with pytest.raises(ValueError, match=re.escape(message)):
        DecoderFeatureAdapter(_unet(), layer="decoder")
    with pytest.raises(ValueError, match="layer '' is not a submodule"):
        DecoderFeatureAdapter(_unet(), layer="")


def test_argument_errors():
    with pytest.raises(ValueError, match="network must be a torch.nn.Module, got str."):
        DecoderFeatureAdapter("UNet", layer="model.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="feature_channels must be a positive integer or None, got 0."):
        DecoderFeatureAdapter(_unet(), layer="model.1", feature_channels=0)
    fixed_size = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(10, 2))
    with pytest.raises(ValueError, match="cannot infer feature_channels: a dry run of Sequential failed"):
        DecoderFeatureAdapter(fixed_size, layer="0")


def test_layer_larger_than_logits_is_rejected():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.AvgPool3d(2), torch.nn.Conv3d(4, 2, 1))
    adapter = DecoderFeatureAdapter(net, layer="0", feature_channels=4)
    assert adapter.out_channels == 2
    message = "layer '0' output (1, 4, 8, 8, 8) is larger than the logits (1, 2, 4, 4, 4)"
    with pytest.raises(ValueError, match=re.escape(message)):
        adapter.forward_features(torch.rand(1, 1, 8, 8, 8))
