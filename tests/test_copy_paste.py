from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from semiseg.engines import DualNetworkObjective
from semiseg.losses import CopyPasteBatch, CopyPasteSupervision, CrossPseudoSupervisionLoss, cuboid_mask


def test_cuboid_mask_is_one_box_of_the_asked_size_inside_the_crop() -> None:
    torch.manual_seed(0)
    for _ in range(20):
        mask = cuboid_mask((12, 9, 6), 2 / 3)
        assert mask.shape == (1, 12, 9, 6) and mask.dtype == torch.bool
        assert int(mask.sum()) == 8 * 6 * 4
        idx = mask[0].nonzero()
        extent = (idx.max(0).values - idx.min(0).values + 1).tolist()
        assert extent == [8, 6, 4]  # one box, no wrap-around
    starts = {tuple(cuboid_mask((12, 9, 6), 0.5)[0].nonzero().min(0).values.tolist()) for _ in range(30)}
    assert len(starts) > 1  # the position is drawn
    with pytest.raises(ValueError, match="ratio"):
        cuboid_mask((4, 4, 4), 1.0)


def _batch(seed: int = 0, n_l: int = 2, n_u: int = 2, size: int = 8):
    gen = torch.Generator().manual_seed(seed)
    image_l = torch.randn(n_l, 1, size, size, size, generator=gen)
    label_l = (torch.rand(n_l, 1, size, size, size, generator=gen) > 0.5).float()
    image_u = torch.randn(n_u, 1, size, size, size, generator=gen) + 10.0
    teacher_a = torch.randn(n_u, 2, size, size, size, generator=gen)
    teacher_b = torch.randn(n_u, 2, size, size, size, generator=gen)
    return image_l, label_l, image_u, teacher_a, teacher_b


def test_mix_pastes_inward_then_outward_and_each_branch_reads_its_partner() -> None:
    torch.manual_seed(0)
    image_l, label_l, image_u, teacher_a, teacher_b = _batch(n_l=2, n_u=3)
    mixed = CopyPasteSupervision(cuboid_ratio=0.5).mix(image_l, label_l, image_u, teacher_a, teacher_b)
    assert mixed.image.shape == (2, 1, 8, 8, 8)  # min(B_l, B_u) mixes
    region = mixed.labeled_region
    assert int(region[0].sum()) == 4**3 and int((~region[1]).sum()) == 4**3  # pair 0 inward, pair 1 outward
    assert torch.equal(mixed.image[region], image_l[:2][region])
    assert torch.equal(mixed.image[~region], image_u[:2][~region])
    assert torch.equal(mixed.target_a[region], label_l[:2].long()[region])
    assert torch.equal(mixed.target_a[~region], teacher_b[:2].argmax(1, keepdim=True)[~region])
    assert torch.equal(mixed.target_b[~region], teacher_a[:2].argmax(1, keepdim=True)[~region])


def test_mix_refuses_crops_that_do_not_match() -> None:
    image_l, label_l, image_u, teacher_a, teacher_b = _batch()
    loss = CopyPasteSupervision()
    with pytest.raises(ValueError, match="one shape"):
        loss.mix(image_l, label_l, image_u[..., :4], teacher_a, teacher_b)
    with pytest.raises(ValueError, match="label_l"):
        loss.mix(image_l, label_l[..., :4], image_u, teacher_a, teacher_b)
    with pytest.raises(ValueError, match="teacher"):
        loss.mix(image_l, label_l, image_u, teacher_a[:1], teacher_b[:1])


def _mixed(unlabeled_weight: float = 0.5, seed: int = 0) -> tuple[CopyPasteSupervision, CopyPasteBatch]:
    torch.manual_seed(seed)
    loss = CopyPasteSupervision(unlabeled_region_weight=unlabeled_weight)
    return loss, loss.mix(*_batch(seed))


def test_with_equal_weights_it_is_cross_entropy_plus_monai_dice_per_branch() -> None:
    loss, mixed = _mixed(unlabeled_weight=1.0)
    logits_a, logits_b = torch.randn(2, 2, 8, 8, 8), torch.randn(2, 2, 8, 8, 8)
    dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, reduction="none")
    expected = torch.zeros(2)
    for logits, target in ((logits_a, mixed.target_a), (logits_b, mixed.target_b)):
        ce = F.cross_entropy(logits, target[:, 0], reduction="none").mean((1, 2, 3))
        expected += ce + dice(logits, target).flatten()
    got = CopyPasteSupervision(unlabeled_region_weight=1.0, reduction="none")(logits_a, logits_b, mixed)
    assert torch.allclose(got, expected, atol=1e-5)
    assert loss(logits_a, logits_b, mixed).item() == pytest.approx(expected.mean().item(), rel=1e-5)


def test_zero_weight_ignores_the_pseudo_labelled_voxels() -> None:
    loss, mixed = _mixed(unlabeled_weight=0.0)
    logits_a, logits_b = torch.randn(2, 2, 8, 8, 8), torch.randn(2, 2, 8, 8, 8)
    changed_a = torch.where(mixed.labeled_region, logits_a, torch.randn_like(logits_a) * 5)
    assert loss(changed_a, logits_b, mixed).item() == pytest.approx(loss(logits_a, logits_b, mixed).item(), rel=1e-5)


def test_perfect_prediction_has_near_zero_loss_and_reductions_agree() -> None:
    loss, mixed = _mixed()
    perfect_a = F.one_hot(mixed.target_a[:, 0], 2).movedim(-1, 1).float() * 40 - 20
    perfect_b = F.one_hot(mixed.target_b[:, 0], 2).movedim(-1, 1).float() * 40 - 20
    assert loss(perfect_a, perfect_b, mixed).item() < 1e-4
    logits_a, logits_b = torch.randn(2, 2, 8, 8, 8), torch.randn(2, 2, 8, 8, 8)
    per_item = CopyPasteSupervision(reduction="none")(logits_a, logits_b, mixed)
    assert per_item.shape == (2,)
    assert CopyPasteSupervision(reduction="sum")(logits_a, logits_b, mixed).item() == pytest.approx(
        per_item.sum().item(), rel=1e-6
    )


def test_gradient_reaches_both_branches() -> None:
    loss, mixed = _mixed()
    logits_a = torch.randn(2, 2, 8, 8, 8, requires_grad=True)
    logits_b = torch.randn(2, 2, 8, 8, 8, requires_grad=True)
    loss(logits_a, logits_b, mixed).backward()
    for grad in (logits_a.grad, logits_b.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="cuboid_ratio"):
        CopyPasteSupervision(cuboid_ratio=0.0)
    with pytest.raises(ValueError, match="unlabeled_region_weight"):
        CopyPasteSupervision(unlabeled_region_weight=1.5)
    with pytest.raises(ValueError, match="reduction"):
        CopyPasteSupervision(reduction="max")
    loss, mixed = _mixed()
    with pytest.raises(ValueError, match="mixed crops"):
        loss(torch.randn(3, 2, 8, 8, 8), torch.randn(3, 2, 8, 8, 8), mixed)


def test_objective_needs_a_teaching_pass_and_the_mixes() -> None:
    with pytest.raises(ValueError, match="pseudo_label_pass"):
        DualNetworkObjective(copy_paste=CopyPasteSupervision())
    objective = DualNetworkObjective(
        cross_pseudo=CrossPseudoSupervisionLoss(),
        copy_paste=CopyPasteSupervision(),
        copy_paste_weight=0.7,
        pseudo_label_pass="no_dropout",
    )
    assert objective.uses_unlabeled
    torch.manual_seed(0)
    outputs = {k: torch.randn(4, 2, 8, 8, 8, requires_grad=True) for k in ("logits_a", "logits_b")}
    outputs.update({k: torch.randn(4, 4, 8, 8, 8) for k in ("features_a", "features_b")})
    label = (torch.rand(2, 1, 8, 8, 8) > 0.5).float()
    teacher = {k: torch.randn(2, 2, 8, 8, 8) for k in ("logits_a", "logits_b")}
    with pytest.raises(ValueError, match="copy-paste term"):
        objective(outputs, label, 0, teacher)
    image = torch.randn(4, 1, 8, 8, 8)
    mixed = objective.copy_paste.mix(image[:2], label, image[2:], teacher["logits_a"], teacher["logits_b"])
    mixed_outputs = {k: torch.randn(2, 2, 8, 8, 8, requires_grad=True) for k in ("logits_a", "logits_b")}
    terms = objective(outputs, label, 0, teacher, (mixed_outputs, mixed))
    assert terms["weight_copy_paste"].item() == pytest.approx(0.7)
    expected = terms["sup_a"] + terms["sup_b"] + 0.1 * terms["cps"] + 0.7 * terms["copy_paste"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    terms["loss"].backward()
    assert all(mixed_outputs[k].grad.abs().sum() > 0 for k in ("logits_a", "logits_b"))


def test_objective_with_copy_paste_alone_reads_no_unlabeled_output() -> None:
    torch.manual_seed(0)
    objective = DualNetworkObjective(copy_paste=CopyPasteSupervision(), copy_paste_weight=0.7,
                                     pseudo_label_pass="no_dropout")
    assert objective.uses_unlabeled and objective.needs_teacher_pass and not objective.reads_unlabeled_outputs
    outputs = {k: torch.randn(2, 2, 8, 8, 8, requires_grad=True) for k in ("logits_a", "logits_b")}  # labeled only
    label = (torch.rand(2, 1, 8, 8, 8) > 0.5).float()
    teacher = {k: torch.randn(2, 2, 8, 8, 8) for k in ("logits_a", "logits_b")}
    image = torch.randn(4, 1, 8, 8, 8)
    mixed = objective.copy_paste.mix(image[:2], label, image[2:], teacher["logits_a"], teacher["logits_b"])
    mixed_outputs = {k: torch.randn(2, 2, 8, 8, 8, requires_grad=True) for k in ("logits_a", "logits_b")}
    terms = objective(outputs, label, 0, teacher, (mixed_outputs, mixed))
    expected = terms["sup_a"] + terms["sup_b"] + 0.7 * terms["copy_paste"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    terms["loss"].backward()
    assert all(t[k].grad.abs().sum() > 0 for t in (outputs, mixed_outputs) for k in ("logits_a", "logits_b"))
    with_cps = DualNetworkObjective(cross_pseudo=CrossPseudoSupervisionLoss(), copy_paste=CopyPasteSupervision(),
                                    pseudo_label_pass="no_dropout")
    assert with_cps.reads_unlabeled_outputs
    with pytest.raises(ValueError, match="hold only the 2 labeled items"):
        with_cps(outputs, label, 0, teacher, (mixed_outputs, mixed))
