"""Tests of semiseg.networks.vnet: the 3x3x3 V-Net of the semi-supervised benchmarks."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from semiseg.networks import VNet
from semiseg.networks.vnet import VNetStage, norm_spec

INPUT_SHAPE = (2, 1, 32, 16, 16)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_exact_parameter_count_at_16_filters():
    assert _count(VNet(in_channels=1, out_channels=2, n_filters=16)) == 9_446_066
    # the plain stages of the benchmark have the same count: residual connections add no parameters
    assert _count(VNet(n_filters=16, residual=False)) == 9_446_066
    # without normalisation: no norm affine parameters (2 x 2,800) but 2,800 conv biases
    assert _count(VNet(n_filters=16, norm="none")) == 9_446_066 - 2 * 2_800 + 2_800


@pytest.mark.parametrize("norm", ["batch", "instance", "group", "none"])
def test_shapes_and_dtype_for_each_norm(norm):
    torch.manual_seed(0)
    net = VNet(in_channels=1, out_channels=3, n_filters=4, norm=norm)
    x = torch.rand(INPUT_SHAPE)
    logits, features = net.forward_features(x)
    assert logits.shape == (2, 3, 32, 16, 16) and logits.dtype == torch.float32
    assert features.shape == (2, 4, 32, 16, 16) and features.dtype == torch.float32
    assert net.feature_channels == 4 and net.out_channels == 3
    net.eval()
    assert torch.equal(net(x), net.forward_features(x)[0])


def test_group_norm_groups_and_norm_spec():
    assert norm_spec("group", 16) == ("group", {"num_groups": 8})
    assert norm_spec("group", 4) == ("group", {"num_groups": 4})
    assert norm_spec("group", 12) == ("group", {"num_groups": 4})
    assert norm_spec("instance", 4) == ("group", {"num_groups": 4, "affine": True})  # one group per channel
    assert norm_spec("none", 4) is None
    groups = {m.num_groups for m in VNet(n_filters=4, norm="group").modules() if isinstance(m, torch.nn.GroupNorm)}
    assert groups == {4, 8}  # 4 channels -> 4 groups, 8..64 channels -> 8 groups



def test_instance_norm_is_group_norm_with_one_group_per_channel_and_loads_instance_norm_checkpoints():
    # norm="instance" is built as GroupNorm(C, C): InstanceNorm3d's statistics and parameters, faster on CPU
    torch.manual_seed(0)
    net = VNet(n_filters=4, norm="instance")
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == m.num_channels and m.affine for m in norms)
    assert not any(isinstance(m, torch.nn.InstanceNorm3d) for m in net.modules())
    reference = copy.deepcopy(net)
    for name, module in list(reference.named_modules()):
        if isinstance(module, torch.nn.GroupNorm):
            parent, _, attr = name.rpartition(".")
            setattr(reference.get_submodule(parent), attr, torch.nn.InstanceNorm3d(module.num_channels, affine=True))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    reference.load_state_dict(net.state_dict())  # same keys both ways
    net.load_state_dict(reference.state_dict())
    x = torch.randn(2, 1, 32, 32, 16)
    net.eval(), reference.eval()
    assert torch.allclose(net(x), reference(x), atol=1e-4)

def test_stage_residual_connection_adds_the_input():
    x = torch.randn(1, 3, 4, 4, 4)
    for residual, expected in ((True, torch.relu(x)), (False, torch.zeros_like(x))):
        stage = VNetStage(3, 3, num_convs=2, norm="none", residual=residual)
        for p in stage.parameters():
            torch.nn.init.zeros_(p)
        # zero convolutions: the residual stage reduces to relu(0 + x), the plain stage to relu(0)
        assert torch.equal(stage(x), expected)
    # a stage that changes the width cannot be residual
    assert not VNetStage(1, 4, num_convs=1).residual


def test_biases_only_without_normalisation():
    convs = [m for m in VNet(n_filters=4).modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    with_bias = [m for m in convs if m.bias is not None]
    assert len(with_bias) == 1 and with_bias[0].kernel_size == (1, 1, 1)  # only the output convolution
    assert all(m.bias is not None for m in VNet(n_filters=4, norm="none").modules() if isinstance(m, torch.nn.Conv3d))


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = VNet(n_filters=4, dropout=0.5)
    net(torch.rand(INPUT_SHAPE)).logsumexp(1).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_dropout_layers():
    torch.manual_seed(0)
    net = VNet(n_filters=4, dropout=0.5)
    drops = [m for m in net.modules() if isinstance(m, torch.nn.Dropout3d)]
    assert len(drops) == 2 and all(m.p == 0.5 for m in drops)
    assert not any(isinstance(m, torch.nn.Dropout3d) for m in VNet(n_filters=4, dropout=0.0).modules())
    x = torch.rand(INPUT_SHAPE)
    assert not torch.equal(net(x), net(x))  # stochastic in training mode
    net.eval()
    assert torch.equal(net(x), net(x))


def test_torchscript_and_trace_match_eager():
    torch.manual_seed(0)
    net = VNet(n_filters=4).eval()
    x = torch.rand(1, 1, 16, 32, 16)
    expected = net(x)
    assert torch.allclose(torch.jit.script(net)(x), expected, atol=1e-5)
    assert torch.allclose(torch.jit.trace(net, x)(x), expected, atol=1e-5)


def test_input_errors():
    net = VNet(n_filters=4)
    with pytest.raises(ValueError, match=re.escape("VNet input spatial size (16, 16, 8) must be divisible by 16")):
        net(torch.rand(1, 1, 16, 16, 8))
    with pytest.raises(ValueError, match="VNet was built with in_channels=1, but the input has 2 channels"):
        net(torch.rand(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match=re.escape("VNet expects a 5D input (B, C, D, H, W), got shape (1, 16, 16)")):
        net(torch.rand(1, 16, 16))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"norm": "layer"}, "norm must be one of ('batch', 'instance', 'group', 'none'), got 'layer'."),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0."),
        ({"n_filters": 0}, "n_filters must be a positive integer, got 0."),
        ({"in_channels": 1.5}, "in_channels must be a positive integer, got 1.5."),
        ({"out_channels": -2}, "out_channels must be a positive integer, got -2."),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        VNet(**kwargs)
