"""Tests of semiseg.networks.dual: DualNet in training, evaluation, TorchScript and DDP."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.networks.nets import SegResNet, UNet
from monai.networks.utils import convert_to_torchscript
from torch.nn.parallel import DistributedDataParallel

from semiseg.networks import DecoderFeatureAdapter, DualNet, ResVNet, VNet

INPUT_SHAPE = (2, 1, 32, 16, 16)


def _dual(dropout: float = 0.5, norm: str = "batch", feature_dim: int = 8) -> DualNet:
    torch.manual_seed(0)
    branch_a = VNet(n_filters=4, norm=norm, dropout=dropout)
    branch_b = ResVNet(n_filters=4, norm=norm, dropout=dropout)
    return DualNet(branch_a, branch_b, feature_dim=feature_dim)


class _ConstantBranch(torch.nn.Module):
    """A branch whose logits are a fixed tensor (broadcast over the batch), features are ones."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)
        self.feature_channels = 2
        self.out_channels = logits.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1, *x.shape[2:])

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(x), x.new_ones((x.shape[0], self.feature_channels) + tuple(x.shape[2:]))


def test_training_mode_returns_logits_and_projected_features():
    net = _dual().train()
    x = torch.rand(INPUT_SHAPE)
    torch.manual_seed(0)
    out = net(x)
    assert set(out) == {"logits_a", "logits_b", "features_a", "features_b"}
    for key in ("logits_a", "logits_b"):
        assert out[key].shape == (2, 2, 32, 16, 16) and out[key].dtype == torch.float32
    for key in ("features_a", "features_b"):
        assert out[key].shape == (2, 8, 32, 16, 16) and out[key].dtype == torch.float32
    # the heads' outputs as they are: the contrastive loss normalises the voxels it reads
    torch.manual_seed(0)  # same dropout masks
    _, decoder_a = net.branch_a.forward_features(x)
    _, decoder_b = net.branch_b.forward_features(x)
    assert torch.allclose(out["features_a"], net.head_a(decoder_a), atol=1e-6)
    assert torch.allclose(out["features_b"], net.head_b(decoder_b), atol=1e-6)
    assert not torch.allclose(out["features_a"].norm(dim=1), torch.ones(2, 32, 16, 16), atol=1e-2)


def test_eval_mode_is_log_of_mean_softmax():
    net = _dual().eval()
    x = torch.rand(INPUT_SHAPE)
    out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, 32, 16, 16) and out.dtype == torch.float32
    logits_a, logits_b = net.forward_branches(x)
    assert torch.equal(logits_a, net.branch_a(x)) and torch.equal(logits_b, net.branch_b(x))
    mean_probs = (logits_a.softmax(1) + logits_b.softmax(1)) / 2
    assert torch.allclose(out, mean_probs.log(), atol=1e-6)
    assert torch.allclose(out.softmax(1), mean_probs, atol=1e-6)  # what Activationsd(softmax=True) gives


def test_eval_output_is_exact_and_finite_where_probabilities_underflow():
    # softmax of (0, -200) underflows to (1, 0) in float32: a plain log of the mean would give -inf
    branch_a = _ConstantBranch(torch.tensor([0.0, -200.0]).view(2, 1, 1, 1))
    branch_b = _ConstantBranch(torch.tensor([0.0, -300.0]).view(2, 1, 1, 1))
    out = DualNet(branch_a, branch_b, feature_dim=2).eval()(torch.rand(1, 1, 2, 2, 2))
    assert torch.isfinite(out).all()
    # log((e^-200 + e^-300) / 2) ~= -200 - log 2
    assert torch.allclose(out[:, 1], torch.full((1, 2, 2, 2), -200.0 - math.log(2.0)))
    assert torch.allclose(out[:, 0], torch.zeros(1, 2, 2, 2), atol=1e-6)


def test_torchscript_export_matches_eager():
    net = _dual().eval()
    x = torch.rand(1, 1, 16, 32, 16)
    expected = net(x)
    scripted = torch.jit.script(net)
    assert torch.allclose(scripted(x), expected, atol=1e-5)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    assert torch.allclose(loaded(x), expected, atol=1e-5)
    # the scripted module has only the eval path: it returns one tensor even in training mode
    in_training_mode = loaded.train()(x)
    assert isinstance(in_training_mode, torch.Tensor) and in_training_mode.shape == expected.shape
    # the path of `python -m monai.bundle ckpt_export`, with its own verification
    convert_to_torchscript(net, verify=True, inputs=[x], rtol=0.0, atol=1e-5)
    assert torch.allclose(torch.jit.trace(net, x)(x), expected, atol=1e-5)


def test_monai_unet_and_segresnet_branches():
    torch.manual_seed(0)
    unet = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2))
    segresnet = SegResNet(spatial_dims=3, init_filters=8, in_channels=1, out_channels=2)
    net = DualNet(DecoderFeatureAdapter(unet, "model.1"), DecoderFeatureAdapter(segresnet, "up_layers.2"), 6)
    x = torch.rand(2, 1, 16, 16, 16)
    out = net.train()(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "logits_a": (2, 2, 16, 16, 16),
        "logits_b": (2, 2, 16, 16, 16),
        "features_a": (2, 6, 16, 16, 16),
        "features_b": (2, 6, 16, 16, 16),
    }
    net.eval()
    ensemble = net(x)
    assert ensemble.shape == (2, 2, 16, 16, 16)
    expected = ((unet(x).softmax(1) + segresnet(x).softmax(1)) / 2).log()
    assert torch.allclose(ensemble, expected, atol=1e-6)
    assert torch.allclose(torch.jit.script(net)(x), ensemble, atol=1e-5)


def test_ddp_trains_every_parameter(tmp_path):
    torch.manual_seed(0)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        net = _dual(dropout=0.0)
        model = DistributedDataParallel(net)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.rand(2, 1, 32, 32, 32)
        labels = (x[:, 0] > 0.5).long()
        for _ in range(2):  # DDP raises on the second step if a parameter missed the first reduction
            optimizer.zero_grad()
            out = model(x)
            loss = (
                F.cross_entropy(out["logits_a"], labels)
                + F.cross_entropy(out["logits_b"], labels)
                + (out["features_a"] * out["features_b"]).sum(1).mean()
            )
            loss.backward()
            named = list(net.named_parameters())
            assert {name.split(".")[0] for name, _ in named} == {"branch_a", "branch_b", "head_a", "head_b"}
            for name, p in named:
                assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
            optimizer.step()
    finally:
        dist.destroy_process_group()


def test_argument_errors():
    vnet, resvnet = VNet(n_filters=4), ResVNet(n_filters=4)
    with pytest.raises(ValueError, match="feature_dim must be a positive integer, got 0."):
        DualNet(vnet, resvnet, feature_dim=0)
    unet = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
    with pytest.raises(ValueError, match=re.escape("branch_b (UNet) has no forward_features(x) -> (logits, features)")):
        DualNet(vnet, unet)
    message = "the branches must have the same out_channels, got 2 (branch_a) and 3 (branch_b)."
    with pytest.raises(ValueError, match=re.escape(message)):
        DualNet(vnet, ResVNet(out_channels=3, n_filters=4))
    branch = _ConstantBranch(torch.zeros(2, 1, 1, 1))
    branch.feature_channels = None
    message = "branch_a (_ConstantBranch) needs a positive integer feature_channels, got None."
    with pytest.raises(ValueError, match=re.escape(message)):
        DualNet(branch, vnet)


def test_built_from_a_bundle_config():
    from monai.bundle import ConfigParser

    config = {
        "network_def": {
            "_target_": "semiseg.networks.DualNet",
            "branch_a": {"_target_": "semiseg.networks.VNet", "n_filters": 4, "norm": "group"},
            "branch_b": {
                "_target_": "semiseg.networks.DecoderFeatureAdapter",
                "network": {"_target_": "monai.networks.nets.SegResNet", "init_filters": 8, "out_channels": 2},
                "layer": "up_layers.2",
            },
            "feature_dim": 16,
        }
    }
    net = ConfigParser(config).get_parsed_content("network_def")
    assert isinstance(net, DualNet) and isinstance(net.branch_b.network, SegResNet)
    assert net.head_a[2].out_channels == 16 and net.head_b[0].in_channels == 8
