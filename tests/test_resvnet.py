"""Tests of semiseg.networks.resvnet: the ResNet-34 encoder with a V-Net decoder."""

from __future__ import annotations

import re

import pytest
import torch
from monai.networks.nets.resnet import ResNetBlock

from semiseg.networks import ResVNet

INPUT_SHAPE = (2, 1, 32, 16, 16)


def test_exact_parameter_count_at_16_filters():
    assert sum(p.numel() for p in ResVNet(in_channels=1, out_channels=2, n_filters=16).parameters()) == 17_924_402


def test_resnet34_layout():
    net = ResVNet(n_filters=4)
    assert [len(stage) for stage in net.stages] == [3, 4, 6, 3]
    assert all(isinstance(block, ResNetBlock) for stage in net.stages for block in stage)
    assert [stage[0].stride for stage in net.stages] == [2, 2, 2, 2]
    assert [stage[-1].conv2.out_channels for stage in net.stages] == [8, 16, 32, 64]


def test_stage_resolutions_reach_one_sixteenth():
    net = ResVNet(n_filters=4)
    shapes = []
    handles = [stage.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape))) for stage in net.stages]
    net(torch.rand(INPUT_SHAPE))
    for handle in handles:
        handle.remove()
    assert shapes == [(2, 8, 16, 8, 8), (2, 16, 8, 4, 4), (2, 32, 4, 2, 2), (2, 64, 2, 1, 1)]


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_shapes_and_dtype_for_each_norm(norm):
    torch.manual_seed(0)
    net = ResVNet(in_channels=1, out_channels=3, n_filters=4, norm=norm)
    x = torch.rand(INPUT_SHAPE)
    logits, features = net.forward_features(x)
    assert logits.shape == (2, 3, 32, 16, 16) and logits.dtype == torch.float32
    assert features.shape == (2, 4, 32, 16, 16) and features.dtype == torch.float32
    assert net.feature_channels == 4 and net.out_channels == 3
    net.eval()
    assert torch.equal(net(x), net.forward_features(x)[0])
    if norm == "none":
        assert not any(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in net.modules())


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = ResVNet(n_filters=4, dropout=0.0)
    net(torch.rand(INPUT_SHAPE)).logsumexp(1).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_torchscript_matches_eager():
    torch.manual_seed(0)
    net = ResVNet(n_filters=4, norm="group").eval()
    x = torch.rand(1, 1, 16, 16, 32)
    assert torch.allclose(torch.jit.script(net)(x), net(x), atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match=re.escape("ResVNet input spatial size (24, 16, 16) must be divisible by 16")):
        ResVNet(n_filters=4)(torch.rand(1, 1, 24, 16, 16))
    with pytest.raises(ValueError, match=re.escape("norm must be one of ('batch', 'instance', 'group', 'none')")):
        ResVNet(norm="BATCH")
    with pytest.raises(ValueError, match=re.escape("dropout must be in [0, 1), got -0.1.")):
        ResVNet(dropout=-0.1)
    with pytest.raises(ValueError, match="n_filters must be a positive integer, got 0."):
        ResVNet(n_filters=0)
