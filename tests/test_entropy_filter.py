from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from semiseg.losses import EntropyFilteredLoss, ReliabilityMasks, batch_percentile, compute_reliability, voxel_entropy

# (B=1, C=2, 4 voxels), foreground probabilities of each network; with q = 50 the two lowest entropies are reliable:
# A: |p - 0.5| = .45 .40 .10 .05 -> reliable v0, v1;  B: |p - 0.5| = .499 .45 .498 .02 -> reliable v0, v2.
FG_A = [0.95, 0.9, 0.6, 0.55]
FG_B = [0.001, 0.05, 0.002, 0.48]
# v0: both reliable, B has lower entropy -> B's 0 (A says 1); v1: only A -> 1 (mean of probabilities says 0);
# v2: only B -> 0 (A says 1); v3: uncertain -> argmax of the mean (0.515 foreground) -> 1 (B says 0)
EXPECTED_LABEL = [0, 1, 0, 1]


def _probs(foreground: list[float]) -> torch.Tensor:
    fg = torch.tensor(foreground, dtype=torch.float64)
    return torch.stack([1 - fg, fg])[None]  # (1, 2, 4)


def test_voxel_entropy_by_hand():
    probs = torch.tensor([[[0.25, 1.0], [0.75, 0.0]]])  # (1, 2, 2): voxel 0 (0.25, 0.75), voxel 1 (1, 0)
    entropy = voxel_entropy(probs)
    assert entropy.shape == (1, 1, 2)
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert entropy[0, 0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert entropy[0, 0, 1].item() == 0.0  # a zero probability contributes 0, not NaN
    uniform = torch.full((2, 3, 2, 2, 2), 1 / 3)
    assert torch.allclose(voxel_entropy(uniform), torch.full((2, 1, 2, 2, 2), math.log(3)))
    with pytest.raises(
        ValueError, match=r"probs must have shape \(B, C, \*spatial\) with C >= 2 classes, got \(4, 1, 3\)"
    ):
        voxel_entropy(torch.ones(4, 1, 3))


@pytest.mark.parametrize("q", [0.0, 5.0, 20.0, 50.0, 73.3, 99.9, 100.0])
def test_batch_percentile_matches_numpy(q):
    torch.manual_seed(0)
    values = torch.rand(3, 1, 7, 5, 11)
    expected = np.percentile(values.numpy(), q)
    result = batch_percentile(values, q)
    assert result.ndim == 0
    assert result.item() == pytest.approx(expected, abs=1e-6)


def test_batch_percentile_single_element_and_errors():
    assert batch_percentile(torch.tensor([3.5]), 40.0).item() == 3.5
    with pytest.raises(ValueError, match=r"q must be a number in \[0, 100\], got 100.5"):
        batch_percentile(torch.rand(5), 100.5)
    with pytest.raises(ValueError, match=r"q must be a number in \[0, 100\], got -1"):
        batch_percentile(torch.rand(5), -1)
    with pytest.raises(ValueError, match="values must have at least one element"):
        batch_percentile(torch.zeros(0), 20.0)


def test_batch_percentile_on_a_full_la_batch():
    # 4 x 2 x 112 x 112 x 80 = 8,028,160 elements, more than a full LA batch of entropies
    generator = torch.Generator().manual_seed(0)
    values = torch.rand(4, 2, 112, 112, 80, generator=generator)
    start = time.perf_counter()
    result = batch_percentile(values, 20.0)
    elapsed = time.perf_counter() - start
    assert result.item() == pytest.approx(np.percentile(values.numpy(), 20.0), abs=1e-6)
    assert elapsed < 10.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batch_percentile_and_reliability_on_cuda_match_cpu():
    torch.manual_seed(0)
    values = torch.rand(4, 2, 112, 112, 80)
    for q in (0.0, 20.0, 50.0, 100.0):
        assert batch_percentile(values.cuda(), q).item() == pytest.approx(batch_percentile(values, q).item(), abs=1e-7)
    probs_a = torch.softmax(torch.randn(2, 2, 16, 16, 8) * 3, 1)
    probs_b = torch.softmax(torch.randn(2, 2, 16, 16, 8), 1)
    on_cpu = compute_reliability(probs_a, probs_b, 20.0)
    on_cuda = compute_reliability(probs_a.cuda(), probs_b.cuda(), 20.0)
    for expected, result in zip(on_cpu[:5], on_cuda[:5]):
        assert torch.equal(expected, result.cpu())


def test_compute_reliability_by_hand():
    masks = compute_reliability(_probs(FG_A), _probs(FG_B), 50.0)
    assert isinstance(masks, ReliabilityMasks)
    for field in masks:
        assert field.shape == (1, 1, 4)
    assert masks.reliable_a.flatten().tolist() == [True, True, False, False]
    assert masks.reliable_b.flatten().tolist() == [True, False, True, False]
    assert masks.reliable.flatten().tolist() == [True, True, True, False]
    assert masks.uncertain.flatten().tolist() == [False, False, False, True]
    assert masks.pseudo_label.dtype == torch.long
    assert masks.pseudo_label.flatten().tolist() == EXPECTED_LABEL
    expected_entropy = [-(p * math.log(p) + (1 - p) * math.log(1 - p)) for p in FG_A]
    assert masks.entropy_a.flatten().tolist() == pytest.approx(expected_entropy, rel=1e-6)


def test_agreement_fusion_trusts_only_voxels_reliable_for_both_with_one_label():
    # FG_A / FG_B: v0 is reliable for both but they disagree, v1 and v2 for one network only -> nothing trusted,
    # every pseudo-label is the argmax of the mean (v1: A's confident 1 against B's confident 0 gives 0)
    masks = compute_reliability(_probs(FG_A), _probs(FG_B), 50.0, fusion="agreement")
    assert masks.reliable.flatten().tolist() == [False] * 4 and masks.uncertain.all()
    assert masks.pseudo_label.flatten().tolist() == [0, 0, 0, 1]
    assert masks.reliable_a.flatten().tolist() == [True, True, False, False]  # per-network masks unchanged
    # both networks reliable on v0 (both 1) and v3 (both 0); v1, v2 reliable for neither
    fg_a, fg_b = [0.95, 0.9, 0.6, 0.05], [0.99, 0.02, 0.45, 0.01]
    agreement = compute_reliability(_probs(fg_a), _probs(fg_b), 50.0, fusion="agreement")
    assert agreement.reliable.flatten().tolist() == [True, False, False, True]
    assert agreement.pseudo_label.flatten().tolist() == [1, 0, 1, 0]
    confident = compute_reliability(_probs(fg_a), _probs(fg_b), 50.0)
    assert torch.equal(confident.reliable, agreement.reliable)  # here both rules trust the same voxels
    with pytest.raises(ValueError, match="fusion must be one of"):
        compute_reliability(_probs(fg_a), _probs(fg_b), 50.0, fusion="vote")


@pytest.mark.parametrize("q", [5.0, 20.0, 50.0, 90.0])
def test_reliable_fraction_follows_percentile(q):
    torch.manual_seed(0)
    logits_a, logits_b = torch.randn(2, 2, 16, 16, 8) * 3, torch.randn(2, 2, 16, 16, 8) * 3
    masks = compute_reliability(torch.softmax(logits_a, 1), torch.softmax(logits_b, 1), q)
    assert masks.reliable_a.float().mean().item() == pytest.approx(q / 100, abs=0.005)
    assert masks.reliable_b.float().mean().item() == pytest.approx(q / 100, abs=0.005)
    assert torch.equal(masks.uncertain, ~(masks.reliable_a | masks.reliable_b))


def _imbalanced_probs(seed: int) -> torch.Tensor:
    """A small, less confident foreground (about 8 % of the voxels) in a confident background, as on LA patches."""
    g = torch.Generator().manual_seed(seed)
    fg = torch.rand(2, 1, 16, 16, 8, generator=g) * 0.05  # background: p(fg) in [0, 0.05)
    blob = torch.zeros_like(fg, dtype=torch.bool)
    blob[:, :, 5:10, 5:10, 2:6] = True
    fg = torch.where(blob, 0.6 + torch.rand(fg.shape, generator=g) * 0.35, fg)  # foreground: p(fg) in [0.6, 0.95)
    return torch.cat([1 - fg, fg], dim=1)


@pytest.mark.parametrize("q", [20.0, 80.0])
def test_class_balanced_reliability_keeps_q_percent_of_every_class(q):
    probs_a, probs_b = _imbalanced_probs(0), _imbalanced_probs(1)
    is_fg = probs_a[:, 1:] > 0.5
    global_masks = compute_reliability(probs_a, probs_b, q)
    assert not (global_masks.reliable_a & is_fg).any()  # the batch-wide percentile drops the whole foreground
    masks = compute_reliability(probs_a, probs_b, q, class_balanced=True)
    for reliable in (masks.reliable_a, masks.reliable_b):
        for members in (is_fg, ~is_fg):
            assert reliable[members].float().mean().item() == pytest.approx(q / 100, abs=0.01)
    assert masks.pseudo_label[masks.reliable & is_fg].eq(1).all()


def test_class_balanced_must_be_a_bool():
    with pytest.raises(ValueError, match="class_balanced must be True or False"):
        EntropyFilteredLoss(class_balanced="false")


def test_class_balanced_loss_supervises_the_foreground():
    logits_a = torch.log(_imbalanced_probs(0)).requires_grad_()
    logits_b = torch.log(_imbalanced_probs(1))
    fg_voxels = logits_a[:, 1:].detach() > logits_a[:, :1].detach()
    for class_balanced, expect_fg_gradient in ((False, False), (True, True)):
        logits_a.grad = None
        EntropyFilteredLoss(percentile=20.0, class_balanced=class_balanced)(logits_a, logits_b).backward()
        fg_grad = logits_a.grad.abs().sum(1, keepdim=True)[fg_voxels]
        assert bool((fg_grad > 0).any()) is expect_fg_gradient


def test_ties_at_the_threshold_are_reliable():
    uniform = torch.full((1, 2, 3, 3, 3), 0.5)
    masks = compute_reliability(uniform, uniform, 20.0)
    assert masks.reliable.all()  # constant entropy: every voxel ties with the threshold
    # saturated voxels (entropy exactly 0) are all reliable even when they are more than q % of the batch
    saturated = torch.zeros(1, 2, 10)
    saturated[:, 0, :6] = 1.0
    saturated[:, :, 6:] = torch.tensor([0.3, 0.7])[:, None]
    assert compute_reliability(saturated, saturated, 20.0).reliable_a.sum().item() == 6


def test_compute_reliability_has_no_gradient_and_validates():
    probs = torch.softmax(torch.randn(1, 2, 4, 4, requires_grad=True), 1)
    masks = compute_reliability(probs, probs, 20.0)
    assert not masks.entropy_a.requires_grad
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\], got 0.0"):
        compute_reliability(probs, probs, 0.0)
    with pytest.raises(
        ValueError, match=r"probs_a and probs_b must have the same shape, got \(1, 2, 4, 4\) and \(1, 2, 4, 3\)"
    ):
        compute_reliability(probs, probs[..., :3], 20.0)


def _hand_loss_terms() -> list[float]:
    # CE of both networks against the fused label on the reliable voxels v0 (label 0), v1 (1), v2 (0)
    terms = []
    for voxel, label in zip(range(3), EXPECTED_LABEL):
        p_a = FG_A[voxel] if label == 1 else 1 - FG_A[voxel]
        p_b = FG_B[voxel] if label == 1 else 1 - FG_B[voxel]
        terms.append(-math.log(p_a) - math.log(p_b))
    return terms


def test_entropy_filtered_loss_by_hand():
    logits_a, logits_b = torch.log(_probs(FG_A)), torch.log(_probs(FG_B))
    terms = _hand_loss_terms()
    loss = EntropyFilteredLoss(percentile=50.0)
    assert loss(logits_a, logits_b).item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    masks = compute_reliability(_probs(FG_A), _probs(FG_B), 50.0)
    assert loss(logits_a, logits_b, masks).item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    assert EntropyFilteredLoss(50.0, reduction="sum")(logits_a, logits_b).item() == pytest.approx(sum(terms), rel=1e-6)
    loss_map = EntropyFilteredLoss(50.0, reduction="none")(logits_a, logits_b)
    assert loss_map.shape == (1, 1, 4)
    assert loss_map.flatten().tolist() == pytest.approx(terms + [0.0], rel=1e-6)


def test_gradient_reaches_both_networks_on_reliable_voxels_only():
    torch.manual_seed(0)
    logits_a = torch.randn(2, 2, 6, 6, 4, requires_grad=True)
    logits_b = torch.randn(2, 2, 6, 6, 4, requires_grad=True)
    loss = EntropyFilteredLoss(percentile=20.0)
    masks = compute_reliability(torch.softmax(logits_a, 1), torch.softmax(logits_b, 1), 20.0)
    loss(logits_a, logits_b, masks).backward()
    for grad in (logits_a.grad, logits_b.grad):
        assert torch.isfinite(grad).all()
        voxel_grad = grad.abs().sum(1, keepdim=True)
        assert (voxel_grad[masks.reliable] > 0).all()
        assert (voxel_grad[masks.uncertain] == 0).all()


def test_no_reliable_voxel_gives_connected_zero():
    logits_a = torch.randn(1, 2, 3, 3, requires_grad=True)
    logits_b = torch.randn(1, 2, 3, 3, requires_grad=True)
    none = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    masks = ReliabilityMasks(none, none, none, ~none, torch.zeros(1, 1, 3, 3, dtype=torch.long), none, none)
    loss = EntropyFilteredLoss()(logits_a, logits_b, masks)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits_a.grad, torch.zeros_like(logits_a))


def test_percentile_is_validated_when_set():
    loss = EntropyFilteredLoss()
    assert loss.percentile == 20.0
    loss.percentile = 35
    assert loss.percentile == 35.0 and isinstance(loss.percentile, float)
    for bad in (0.0, -5.0, 100.1, float("nan")):
        with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\]"):
            loss.percentile = bad
    assert loss.percentile == 35.0
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\], got 0"):
        EntropyFilteredLoss(percentile=0)
    with pytest.raises(ValueError, match=r"percentile must be a number in \(0, 100\], got '20'"):
        EntropyFilteredLoss(percentile="20")
    with pytest.raises(ValueError, match=r"reduction must be one of 'mean', 'sum', 'none', got 'max'"):
        EntropyFilteredLoss(reduction="max")


def test_shape_errors():
    loss = EntropyFilteredLoss()
    with pytest.raises(ValueError, match=r"same shape, got \(1, 2, 4, 4\) and \(2, 2, 4, 4\)"):
        loss(torch.zeros(1, 2, 4, 4), torch.zeros(2, 2, 4, 4))
    masks = compute_reliability(torch.full((1, 2, 4, 3), 0.5), torch.full((1, 2, 4, 3), 0.5), 20.0)
    with pytest.raises(ValueError, match=r"masks.reliable must have shape \(1, 1, 4, 4\) .* got \(1, 1, 4, 3\)"):
        loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), masks)


def test_class_percentiles_equal_the_percentile_of_each_class_without_a_loop() -> None:
    from semiseg.losses import class_percentiles

    gen = torch.Generator().manual_seed(0)
    values = torch.rand(2, 1, 9, 7, 5, generator=gen)
    label = torch.randint(0, 4, values.shape, generator=gen)
    label[label == 2] = 1  # class 2 has no element
    for q in (0.0, 12.5, 20.0, 50.0, 99.0, 100.0):
        got = class_percentiles(values, label, q)
        assert got.shape == (4,) and got[2] == 0
        for c in (0, 1, 3):
            assert got[c] == batch_percentile(values[label == c], q), (q, c)
    single = class_percentiles(torch.tensor([0.3, 0.1]), torch.tensor([1, 0]), 40.0)
    assert single.tolist() == pytest.approx([0.1, 0.3])
    with pytest.raises(ValueError, match="same non-empty shape"):
        class_percentiles(values, label[:1], 20.0)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        class_percentiles(values, label, 101.0)
