from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semiseg.losses import PrototypeContrastiveLoss

# (B=1, F=2, 5 voxels): v0, v4 reliable of class 0, v1 reliable of class 1, v2 (class 0) and v3 (class 1) uncertain
FEATURES = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.28, 0.96], [0.6, 0.8]]  # per voxel
LABELS = [0, 1, 0, 1, 0]
RELIABLE = [True, True, False, False, True]
UNCERTAIN = [False, False, True, True, False]


def _inputs(requires_grad: bool = False) -> tuple[torch.Tensor, ...]:
    features = torch.tensor(FEATURES).t()[None].contiguous().requires_grad_(requires_grad)  # (1, 2, 5)
    labels = torch.tensor(LABELS)[None, None]
    reliable = torch.tensor(RELIABLE)[None, None]
    uncertain = torch.tensor(UNCERTAIN)[None, None]
    return features, labels, reliable, uncertain


def _hand_losses(temperature: float) -> list[float]:
    proto0 = np.array([1.0 + 0.6, 0.0 + 0.8]) / 2
    proto0 /= np.linalg.norm(proto0)  # (2, 1) / sqrt(5)
    proto1 = np.array([0.0, 1.0])
    losses = []
    for voxel in (2, 3):
        f = np.array(FEATURES[voxel])
        logits = np.array([f @ proto0, f @ proto1]) / temperature
        losses.append(-(logits[LABELS[voxel]] - math.log(np.exp(logits).sum())))
    return losses


def test_value_by_hand():
    expected = _hand_losses(0.5)
    inputs = _inputs()
    assert PrototypeContrastiveLoss(temperature=0.5)(*inputs).item() == pytest.approx(np.mean(expected), rel=1e-5)
    assert PrototypeContrastiveLoss(temperature=0.5, reduction="sum")(*inputs).item() == pytest.approx(
        sum(expected), rel=1e-5
    )
    per_anchor = PrototypeContrastiveLoss(temperature=0.5, reduction="none")(*inputs)
    assert per_anchor.shape == (2,)
    assert sorted(per_anchor.tolist()) == pytest.approx(sorted(expected), rel=1e-5)


def test_features_need_not_be_normalised():
    """Each voxel's feature is normalised before use: a positive scale per voxel changes neither loss nor prototypes."""
    features, labels, reliable, uncertain = _inputs(requires_grad=True)
    scale = torch.tensor([3.0, 0.5, 7.0, 0.2, 2.0])
    scaled = (features.detach() * scale).requires_grad_(True)
    unit_loss, scaled_loss = PrototypeContrastiveLoss(temperature=0.5), PrototypeContrastiveLoss(temperature=0.5)
    unit_value = unit_loss(features, labels, reliable, uncertain)
    scaled_value = scaled_loss(scaled, labels, reliable, uncertain)
    assert scaled_value.item() == pytest.approx(unit_value.item(), rel=1e-5)
    assert torch.allclose(scaled_loss.prototypes, unit_loss.prototypes, atol=1e-6)
    unit_value.backward()
    scaled_value.backward()
    assert torch.allclose(scaled.grad * scale, features.grad, atol=1e-5)  # chain rule through f / |f|


def test_prototypes_are_stored_normalised():
    loss = PrototypeContrastiveLoss(temperature=0.5)
    loss(*_inputs())
    expected = torch.tensor([[2.0, 1.0], [0.0, math.sqrt(5.0)]]) / math.sqrt(5.0)
    assert torch.allclose(loss.prototypes, expected, atol=1e-6)
    assert loss.prototype_valid.tolist() == [True, True]


def test_prototypes_read_only_the_reliable_voxels():
    # a non-finite feature on a voxel that is neither reliable nor an anchor must not reach the prototypes
    features, labels, reliable, uncertain = _inputs()
    features = torch.cat([features, torch.full((1, 2, 1), float("nan"))], dim=2)  # v5: class 1, not read
    labels = torch.cat([labels, torch.ones(1, 1, 1, dtype=labels.dtype)], dim=2)
    reliable = torch.cat([reliable, torch.zeros(1, 1, 1, dtype=torch.bool)], dim=2)
    uncertain = torch.cat([uncertain, torch.zeros(1, 1, 1, dtype=torch.bool)], dim=2)
    loss = PrototypeContrastiveLoss(temperature=0.5)
    value = loss(features, labels, reliable, uncertain)
    expected = torch.tensor([[2.0, 1.0], [0.0, math.sqrt(5.0)]]) / math.sqrt(5.0)
    assert torch.allclose(loss.prototypes, expected, atol=1e-6)
    assert value.item() == pytest.approx(float(np.mean(_hand_losses(0.5))), rel=1e-5)


def test_gradient_reaches_anchor_features_only():
    features, labels, reliable, uncertain = _inputs(requires_grad=True)
    PrototypeContrastiveLoss(temperature=0.5)(features, labels, reliable, uncertain).backward()
    per_voxel = features.grad.abs().sum(1)[0]
    assert torch.isfinite(features.grad).all()
    assert (per_voxel[[2, 3]] > 0).all()  # anchors
    assert (per_voxel[[0, 1, 4]] == 0).all()  # reliable voxels only build the detached prototypes


def test_class_without_reliable_voxel_is_dropped():
    features, labels, reliable, uncertain = _inputs(requires_grad=True)
    reliable = reliable & (labels == 0)  # class 1 has no prototype
    loss = PrototypeContrastiveLoss(temperature=0.5, reduction="none")
    per_anchor = loss(features, labels, reliable, uncertain)
    # the class-1 anchor is skipped; the class-0 anchor sees one prototype only, so its loss is exactly 0
    assert per_anchor.tolist() == [0.0]
    assert loss.prototype_valid.tolist() == [True, False]
    assert torch.equal(loss.prototypes[1], torch.zeros(2))
    # only anchors of the class without prototype: a zero connected to the graph
    uncertain = uncertain & (labels == 1)
    total = PrototypeContrastiveLoss(temperature=0.5)(features, labels, reliable, uncertain)
    assert total.item() == 0.0 and total.requires_grad
    total.backward()
    assert torch.isfinite(features.grad).all()


def test_no_anchor_and_no_prototype_give_connected_zero():
    features, labels, reliable, uncertain = _inputs(requires_grad=True)
    for rel, unc in ((reliable, torch.zeros_like(uncertain)), (torch.zeros_like(reliable), uncertain)):
        loss = PrototypeContrastiveLoss()(features, labels, rel, unc)
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()


def test_ema_update_and_memory_of_absent_classes():
    loss = PrototypeContrastiveLoss(temperature=0.5, ema_momentum=0.5)
    loss(*_inputs())
    first = loss.prototypes.clone()
    # second batch: the class-0 prototype is (0, 1), class 1 absent
    features = torch.tensor([[0.0, 1.0], [0.6, 0.8]]).t()[None]
    labels = torch.tensor([[[0, 0]]])
    reliable = torch.tensor([[[True, False]]])
    uncertain = torch.tensor([[[False, True]]])
    loss(features, labels, reliable, uncertain)
    blended = 0.5 * first[0] + 0.5 * torch.tensor([0.0, 1.0])
    assert torch.allclose(loss.prototypes[0], blended / blended.norm(), atol=1e-6)
    assert torch.allclose(loss.prototypes[1], first[1])  # absent: the stored prototype is kept
    assert loss.prototype_valid.tolist() == [True, True]
    # without EMA the absent class has no prototype
    plain = PrototypeContrastiveLoss(temperature=0.5)
    plain(*_inputs())
    plain(features, labels, reliable, uncertain)
    assert plain.prototype_valid.tolist() == [True, False]


def test_eval_mode_does_not_update_the_stored_prototypes():
    loss = PrototypeContrastiveLoss(ema_momentum=0.9)
    loss(*_inputs())
    stored = loss.prototypes.clone()
    loss.eval()
    features = torch.tensor([[0.0, 1.0], [0.6, 0.8]]).t()[None]
    loss(features, torch.tensor([[[0, 1]]]), torch.tensor([[[True, True]]]), torch.tensor([[[False, False]]]))
    assert torch.equal(loss.prototypes, stored)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(2, 8, 6, 6, 4), dim=1)
    labels = torch.randint(0, 3, (2, 1, 6, 6, 4))
    reliable = torch.rand(2, 1, 6, 6, 4) < 0.3
    source = PrototypeContrastiveLoss(num_classes=3, ema_momentum=0.9)
    source(features, labels, reliable, ~reliable)
    state = source.state_dict()
    assert set(state) == {"prototypes", "prototype_valid"}
    assert state["prototypes"].shape == (3, 8)
    restored = PrototypeContrastiveLoss(num_classes=3, ema_momentum=0.9)
    restored.load_state_dict(state)
    assert torch.equal(restored.prototypes, source.prototypes)
    assert torch.equal(restored.prototype_valid, source.prototype_valid)
    torch.manual_seed(1)
    expected = source(features.flip(2), labels, reliable, ~reliable)
    torch.manual_seed(1)
    assert restored(features.flip(2), labels, reliable, ~reliable).item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.equal(restored.prototypes, source.prototypes)


def test_sample_bound_and_reproducibility():
    torch.manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(2, 4, 8, 8, 4), dim=1).requires_grad_(True)
    labels = torch.randint(0, 2, (2, 1, 8, 8, 4))
    reliable = torch.rand(2, 1, 8, 8, 4) < 0.2
    loss = PrototypeContrastiveLoss(max_samples=5, reduction="none")
    torch.manual_seed(3)
    first = loss(features, labels, reliable, ~reliable)
    assert first.shape == (5,)
    first.sum().backward()
    assert (features.grad.abs().sum(1) > 0).sum().item() == 5  # gradient at the 5 sampled voxels only
    torch.manual_seed(3)
    assert torch.equal(loss(features, labels, reliable, ~reliable), first.detach())
    torch.manual_seed(4)
    assert not torch.equal(loss(features, labels, reliable, ~reliable), first.detach())


def test_sampling_is_uniform_over_uncertain_voxels():
    torch.manual_seed(0)
    features = torch.nn.functional.normalize(torch.randn(1, 2, 20), dim=1)
    labels = (torch.arange(20) % 2)[None, None]  # two classes, so every anchor has a non-zero gradient
    reliable = torch.zeros(1, 1, 20, dtype=torch.bool)
    reliable[..., :4] = True
    loss = PrototypeContrastiveLoss(max_samples=4)
    counts = torch.zeros(20)
    for _ in range(200):
        features.grad = None
        features.requires_grad_(True)
        loss(features, labels, reliable, ~reliable).backward()
        counts += (features.grad.abs().sum(1)[0] > 0).float()
    assert counts[:4].sum() == 0
    # 16 uncertain voxels, 4 drawn per call: each expected 50 times in 200 calls (std 6.1)
    assert counts[4:].min() > 25 and counts[4:].max() < 75


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"temperature must be a number > 0, got 0.0"):
        PrototypeContrastiveLoss(temperature=0.0)
    with pytest.raises(ValueError, match=r"temperature must be a number > 0, got -1"):
        PrototypeContrastiveLoss(temperature=-1)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"ema_momentum must be None or a number in \[0, 1\), got {bad}"):
            PrototypeContrastiveLoss(ema_momentum=bad)
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 2, got 1"):
        PrototypeContrastiveLoss(num_classes=1)
    with pytest.raises(ValueError, match=r"max_samples must be a positive integer, got 0"):
        PrototypeContrastiveLoss(max_samples=0)
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', 'none', got 'batch'"):
        PrototypeContrastiveLoss(reduction="batch")


def test_forward_errors():
    features, labels, reliable, uncertain = _inputs()
    loss = PrototypeContrastiveLoss()
    with pytest.raises(
        ValueError,
        match=r"uncertain must have shape \(1, 1, 5\) to match features of shape \(1, 2, 5\), got \(1, 1, 4\)",
    ):
        loss(features, labels, reliable, uncertain[..., :4])
    with pytest.raises(ValueError, match=r"reliable must be a bool tensor, got dtype torch.float32"):
        loss(features, labels, reliable.float(), uncertain)
    with pytest.raises(ValueError, match=r"pseudo_label must be an integer tensor, got dtype torch.float32"):
        loss(features, labels.float(), reliable, uncertain)
    with pytest.raises(ValueError, match=r"pseudo_label values must be in \[0, 2\), got values in \[0, 2\]"):
        loss(features, labels * 2, reliable, uncertain)
    loss(features, labels, reliable, uncertain)
    with pytest.raises(ValueError, match=r"features have 3 channels but the stored prototypes have 2"):
        loss(torch.ones(1, 3, 5), labels, reliable, uncertain)
