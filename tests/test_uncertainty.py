from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semiseg.losses import KLUncertaintyLoss

# (B=1, C=2, 2 voxels)
STUDENT = [[0.0, 1.5], [1.0, -0.5]]  # [class][voxel]
TEACHER = [[2.0, 0.3], [0.0, 0.9]]  # teacher argmax per voxel: [0, 1]


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=0))
    return e / e.sum(axis=0)


def _hand_terms() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-voxel divergence D, weight w and cross-entropy CE, with numpy."""
    p_s, p_t = _softmax(np.array(STUDENT)), _softmax(np.array(TEACHER))
    divergence = (p_t * (np.log(p_t) - np.log(p_s))).sum(axis=0)
    weight = np.exp(-divergence)
    pseudo = p_t.argmax(axis=0)  # [0, 1]
    cross_entropy = -np.log(p_s[pseudo, np.arange(2)])
    return divergence, weight, cross_entropy


def test_value_by_hand():
    divergence, weight, cross_entropy = _hand_terms()
    student, teacher = torch.tensor([STUDENT]), torch.tensor([TEACHER])
    expected_map = weight * cross_entropy + divergence
    assert KLUncertaintyLoss()(student, teacher).item() == pytest.approx(
        np.mean(weight * cross_entropy) + np.mean(divergence), rel=1e-5
    )
    assert KLUncertaintyLoss(reduction="sum")(student, teacher).item() == pytest.approx(expected_map.sum(), rel=1e-5)
    loss_map = KLUncertaintyLoss(reduction="none")(student, teacher)
    assert loss_map.shape == (1, 1, 2)
    assert loss_map.flatten().tolist() == pytest.approx(expected_map.tolist(), rel=1e-5)


def test_agreeing_networks_reduce_to_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 2)
    expected = F.cross_entropy(logits, logits.argmax(1))  # D = 0, w = 1
    assert KLUncertaintyLoss()(logits, logits.clone()).item() == pytest.approx(expected.item(), rel=1e-5)


def test_weight_is_detached_and_teacher_gets_no_gradient():
    divergence, weight, _ = _hand_terms()
    student = torch.tensor([STUDENT], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([TEACHER], dtype=torch.float64, requires_grad=True)
    KLUncertaintyLoss()(student, teacher).backward()
    assert teacher.grad is None
    # reference: the same loss with w a constant, written with explicit ops
    reference = torch.tensor([STUDENT], dtype=torch.float64, requires_grad=True)
    log_p_s = torch.log_softmax(reference, 1)
    p_t = torch.softmax(torch.tensor([TEACHER], dtype=torch.float64), 1)
    ce = -log_p_s[0, [0, 1], [0, 1]]  # teacher's argmax per voxel is [0, 1]
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(1)[0]
    (torch.tensor(weight) * ce + kl).mean().backward()
    assert torch.allclose(student.grad, reference.grad, atol=1e-10)
    # a gradient through w would differ: this test can tell the two apart
    undetached = torch.tensor([STUDENT], dtype=torch.float64, requires_grad=True)
    log_p_u = torch.log_softmax(undetached, 1)
    kl_u = (p_t * (torch.log(p_t) - log_p_u)).sum(1)[0]
    (torch.exp(-kl_u) * -log_p_u[0, [0, 1], [0, 1]] + kl_u).mean().backward()
    assert not torch.allclose(student.grad, undetached.grad, atol=1e-4)


def test_gradient_reaches_student_in_both_directions():
    torch.manual_seed(0)
    logits_a = torch.randn(2, 2, 4, 4, 3, requires_grad=True)
    logits_b = torch.randn(2, 2, 4, 4, 3, requires_grad=True)
    loss = KLUncertaintyLoss()
    (loss(logits_a, logits_b) + loss(logits_b, logits_a)).backward()
    for grad in (logits_a.grad, logits_b.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_saturated_teacher_gives_finite_loss():
    student = torch.zeros(1, 2, 3, requires_grad=True)
    teacher = torch.tensor([[[200.0, -200.0, 0.0], [-200.0, 200.0, 0.0]]])  # probabilities underflow to 0
    loss = KLUncertaintyLoss()(student, teacher)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_errors():
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', 'none', got None"):
        KLUncertaintyLoss(reduction=None)
    loss = KLUncertaintyLoss()
    with pytest.raises(
        ValueError, match=r"student_logits and teacher_logits must have the same shape, got \(1, 2, 3\) and \(1, 3, 3\)"
    ):
        loss(torch.zeros(1, 2, 3), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match=r"C >= 2 classes, got \(2, 3\)"):
        loss(torch.zeros(2, 3), torch.zeros(2, 3))
