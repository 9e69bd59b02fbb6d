from __future__ import annotations

import math

import pytest
import torch

from semiseg.losses import CrossReliableSupervisionLoss, PredictionConsistencyLoss

# (B=1, C=2, 3 voxels) foreground probabilities; with threshold 0.6: A >= [T, F, T], B >= [F, T, T] -> mask [T, T, F]
FG_A = [0.7, 0.5, 0.9]
FG_B = [0.3, 0.65, 0.8]
LABEL = [1, 0, 1]


def _logits(foreground: list[float], requires_grad: bool = False) -> torch.Tensor:
    fg = torch.tensor(foreground, dtype=torch.float64)
    return torch.log(torch.stack([1 - fg, fg]))[None].requires_grad_(requires_grad)


def _label() -> torch.Tensor:
    return torch.tensor(LABEL)[None, None]


def test_cross_reliable_value_by_hand():
    v0 = (0.7 - 1) ** 2 + (0.3 - 1) ** 2  # 0.58
    v1 = (0.5 - 0) ** 2 + (0.65 - 0) ** 2  # 0.6725
    logits_a, logits_b = _logits(FG_A), _logits(FG_B)
    assert CrossReliableSupervisionLoss()(logits_a, logits_b, _label()).item() == pytest.approx((v0 + v1) / 2)
    assert CrossReliableSupervisionLoss(reduction="sum")(logits_a, logits_b, _label()).item() == pytest.approx(v0 + v1)
    loss_map = CrossReliableSupervisionLoss(reduction="none")(logits_a, logits_b, _label())
    assert loss_map.shape == (1, 1, 3)
    assert loss_map.flatten().tolist() == pytest.approx([v0, v1, 0.0])
    # a lower threshold moves voxel 1 out of the mask (both >= 0.5) and keeps voxel 0 (0.7 vs 0.3)
    assert CrossReliableSupervisionLoss(threshold=0.5)(logits_a, logits_b, _label()).item() == pytest.approx(v0)


def test_cross_reliable_multiclass_foreground_is_all_but_background():
    # 3 classes: foreground probability = 1 - p(background) = 0.7 for A, 0.2 for B; label 2 counts as foreground
    probs_a = torch.tensor([0.3, 0.3, 0.4]).reshape(1, 3, 1)
    probs_b = torch.tensor([0.8, 0.1, 0.1]).reshape(1, 3, 1)
    loss = CrossReliableSupervisionLoss()(probs_a.log(), probs_b.log(), torch.tensor([[[2]]]))
    assert loss.item() == pytest.approx((0.7 - 1) ** 2 + (0.2 - 1) ** 2, rel=1e-6)


def test_cross_reliable_gradient_and_empty_mask():
    logits_a, logits_b = _logits(FG_A, True), _logits(FG_B, True)
    CrossReliableSupervisionLoss()(logits_a, logits_b, _label()).backward()
    for grad in (logits_a.grad, logits_b.grad):
        assert torch.isfinite(grad).all()
        assert (grad.abs().sum(1)[0, :2] > 0).all() and grad[0, :, 2].abs().sum() == 0
    # both networks agree everywhere: empty mask, a zero connected to the graph
    logits_a, logits_b = _logits([0.9, 0.1], True), _logits([0.8, 0.2], True)
    loss = CrossReliableSupervisionLoss()(logits_a, logits_b, torch.tensor([[[1, 0]]]))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits_a.grad, torch.zeros_like(logits_a))


def test_cross_reliable_errors():
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=rf"threshold must be a number in \(0, 1\), got {bad}"):
            CrossReliableSupervisionLoss(threshold=bad)
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', 'none', got 'Mean!'"):
        CrossReliableSupervisionLoss(reduction="Mean!")
    loss = CrossReliableSupervisionLoss()
    with pytest.raises(
        ValueError, match=r"label must have shape \(1, 1, 3\) to match logits of shape \(1, 2, 3\), got \(1, 3\)"
    ):
        loss(_logits(FG_A), _logits(FG_B), torch.tensor([LABEL]))
    with pytest.raises(
        ValueError, match=r"logits_a and logits_b must have the same shape, got \(1, 2, 3\) and \(1, 2, 2\)"
    ):
        loss(_logits(FG_A), _logits(FG_B[:2]), _label())


def test_prediction_consistency_value_by_hand():
    # voxel 0: p_a = (0.2, 0.8), p_b = (0.6, 0.4); voxel 1: identical distributions
    logits_a = torch.log(torch.tensor([[[0.2, 0.5], [0.8, 0.5]]]))
    logits_b = torch.log(torch.tensor([[[0.6, 0.5], [0.4, 0.5]]]))
    cosine = (0.2 * 0.6 + 0.8 * 0.4) / (math.hypot(0.2, 0.8) * math.hypot(0.6, 0.4))
    assert PredictionConsistencyLoss()(logits_a, logits_b).item() == pytest.approx((1 - cosine) / 2, rel=1e-5)
    assert PredictionConsistencyLoss(reduction="sum")(logits_a, logits_b).item() == pytest.approx(1 - cosine, rel=1e-5)
    loss_map = PredictionConsistencyLoss(reduction="none")(logits_a, logits_b)
    assert loss_map.shape == (1, 1, 2)
    assert loss_map.flatten().tolist() == pytest.approx([1 - cosine, 0.0], abs=1e-6)


def test_prediction_consistency_gradient_to_both():
    torch.manual_seed(0)
    logits_a = torch.randn(2, 3, 4, 4, 2, requires_grad=True)
    logits_b = torch.randn(2, 3, 4, 4, 2, requires_grad=True)
    PredictionConsistencyLoss()(logits_a, logits_b).backward()
    for grad in (logits_a.grad, logits_b.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # detaching one side trains only the other
    logits_c = torch.randn(2, 3, 4, 4, 2, requires_grad=True)
    PredictionConsistencyLoss()(logits_c, logits_b.detach()).backward()
    assert logits_c.grad.abs().sum() > 0


def test_prediction_consistency_errors():
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', 'none', got 'all'"):
        PredictionConsistencyLoss(reduction="all")
    with pytest.raises(ValueError, match=r"C >= 2 classes, got \(1, 1, 3\)"):
        PredictionConsistencyLoss()(torch.zeros(1, 1, 3), torch.zeros(1, 1, 3))
