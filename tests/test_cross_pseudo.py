from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from semiseg.losses import CrossPseudoSupervisionLoss


def _tiny_logits() -> tuple[torch.Tensor, torch.Tensor]:
    # (B=1, C=2, 2 voxels): A predicts [0, 1], B predicts [1, 0]
    logits_a = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    logits_b = torch.tensor([[[0.0, 3.0], [1.0, 0.0]]])
    return logits_a, logits_b


def _hand_map() -> list[float]:
    # voxel 0: CE(A=[2,0], label 1) + CE(B=[0,1], label 0); voxel 1: CE(A=[0,1], label 0) + CE(B=[3,0], label 1)
    voxel0 = math.log(1 + math.exp(2)) + math.log(1 + math.exp(1))
    voxel1 = math.log(1 + math.exp(1)) + math.log(1 + math.exp(3))
    return [voxel0, voxel1]


def test_value_by_hand():
    logits_a, logits_b = _tiny_logits()
    expected = _hand_map()
    assert CrossPseudoSupervisionLoss()(logits_a, logits_b).item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    assert CrossPseudoSupervisionLoss(reduction="sum")(logits_a, logits_b).item() == pytest.approx(
        sum(expected), rel=1e-6
    )
    loss_map = CrossPseudoSupervisionLoss(reduction="none")(logits_a, logits_b)
    assert loss_map.shape == (1, 1, 2)
    assert loss_map.flatten().tolist() == pytest.approx(expected, rel=1e-6)


def test_symmetric_in_its_arguments():
    torch.manual_seed(0)
    logits_a, logits_b = torch.randn(2, 3, 4, 4, 3), torch.randn(2, 3, 4, 4, 3)
    loss = CrossPseudoSupervisionLoss()
    assert loss(logits_a, logits_b).item() == pytest.approx(loss(logits_b, logits_a).item(), rel=1e-6)


def test_gradient_reaches_both_networks_not_through_pseudo_labels():
    torch.manual_seed(0)
    logits_a = torch.randn(2, 2, 4, 4, 3, requires_grad=True)
    logits_b = torch.randn(2, 2, 4, 4, 3, requires_grad=True)
    CrossPseudoSupervisionLoss()(logits_a, logits_b).backward()
    # each network's gradient is that of its own CE against the other's fixed hard label
    reference_a = logits_a.detach().clone().requires_grad_(True)
    F.cross_entropy(reference_a, logits_b.detach().argmax(1)).backward()
    assert torch.allclose(logits_a.grad, reference_a.grad, atol=1e-7)
    assert logits_a.grad.abs().sum() > 0 and logits_b.grad.abs().sum() > 0
    assert torch.isfinite(logits_a.grad).all() and torch.isfinite(logits_b.grad).all()


def test_trains_a_when_b_is_detached():
    torch.manual_seed(1)
    logits_a = torch.randn(1, 2, 3, 3, 3, requires_grad=True)
    logits_b = torch.randn(1, 2, 3, 3, 3)
    loss = CrossPseudoSupervisionLoss()(logits_a, logits_b.detach())
    loss.backward()
    assert logits_a.grad.abs().sum() > 0


def test_errors():
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        CrossPseudoSupervisionLoss(reduction="avg")
    loss = CrossPseudoSupervisionLoss()
    with pytest.raises(ValueError, match=r"same shape, got \(1, 2, 4, 4\) and \(1, 2, 4, 3\)"):
        loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 3))
    with pytest.raises(ValueError, match=r"C >= 2 classes, got \(1, 1, 4, 4\)"):
        loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
