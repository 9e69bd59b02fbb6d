from __future__ import annotations

import pytest
import torch

from semiseg.engines import DualNetworkObjective, GaussianRampUp
from semiseg.losses import (
    CrossPseudoSupervisionLoss,
    CrossReliableSupervisionLoss,
    EntropyFilteredLoss,
    KLUncertaintyLoss,
    PredictionConsistencyLoss,
    PrototypeContrastiveLoss,
    ReliabilityEstimator,
    compute_reliability,
)

UNLABELED_TERMS = ("cps", "entropy_filter", "kl", "consistency", "contrastive")


def full_objective(**kwargs) -> DualNetworkObjective:
    """Every term on; ``kwargs`` override a term (``None`` switches it off) or set another argument."""
    terms = {
        "cross_pseudo": CrossPseudoSupervisionLoss(),
        "entropy_filter": EntropyFilteredLoss(),
        "kl_uncertainty": KLUncertaintyLoss(),
        "consistency": PredictionConsistencyLoss(),
        "contrastive": PrototypeContrastiveLoss(num_classes=2, temperature=0.1),
        "cross_reliable": CrossReliableSupervisionLoss(threshold=0.6),
    }
    return DualNetworkObjective(**{**terms, **kwargs})


def fake_outputs(n: int = 4, size: int = 6, feat: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    outputs = {
        "logits_a": torch.randn(n, 2, size, size, size, generator=gen) * 2,
        "logits_b": torch.randn(n, 2, size, size, size, generator=gen) * 2,
        "features_a": torch.nn.functional.normalize(torch.randn(n, feat, size, size, size, generator=gen), dim=1),
        "features_b": torch.nn.functional.normalize(torch.randn(n, feat, size, size, size, generator=gen), dim=1),
    }
    return {k: v.requires_grad_() for k, v in outputs.items()}


def labels(n: int = 2, size: int = 6) -> torch.Tensor:
    return (torch.rand(n, 1, size, size, size, generator=torch.Generator().manual_seed(1)) > 0.5).float()


def test_total_is_the_weighted_sum_of_the_terms() -> None:
    objective = full_objective(unlabeled_weight=0.3, contrastive_weight=0.2)
    out = objective(fake_outputs(), labels(), iteration=5)
    for name in ("sup_a", "sup_b", "cross_reliable", *UNLABELED_TERMS):
        assert name in out, name
    expected = (
        out["sup_a"]
        + out["sup_b"]
        + out["cross_reliable"]
        + 0.3 * (out["cps"] + out["entropy_filter"] + out["kl"] + out["consistency"])
        + 0.2 * out["contrastive"]
    )
    assert torch.allclose(out["loss"], expected)
    assert out["weight_unlabeled"].item() == pytest.approx(0.3)
    assert out["weight_contrastive"].item() == pytest.approx(0.2)
    assert 0.0 < out["reliable_fraction"].item() < 1.0


def test_schedules_follow_the_iteration() -> None:
    objective = full_objective(unlabeled_weight=GaussianRampUp(0.1, 100), contrastive_weight=0.0)
    early = objective(fake_outputs(), labels(), iteration=0)["weight_unlabeled"].item()
    late = objective(fake_outputs(), labels(), iteration=100)["weight_unlabeled"].item()
    assert early == pytest.approx(0.1 * torch.exp(torch.tensor(-5.0)).item(), rel=1e-5)
    assert late == pytest.approx(0.1)


def test_percentile_schedule_drives_the_masks_the_objective_exposes() -> None:
    objective = full_objective(reliability=ReliabilityEstimator(schedule=lambda t: 10.0 + t))
    outputs = fake_outputs()
    out = objective(outputs, labels(), iteration=30)
    assert out["percentile"].item() == pytest.approx(40.0)
    u_a, u_b = (torch.softmax(outputs[k][2:].detach(), 1) for k in ("logits_a", "logits_b"))
    expected = compute_reliability(u_a, u_b, 40.0)
    assert objective.masks is not None
    for got, want in zip(objective.masks, expected):
        assert torch.equal(got, want)
    assert out["reliable_fraction"].item() == pytest.approx(expected.reliable.float().mean().item())
    # the entropy filter is fed the objective's masks: its own percentile is not read
    objective.entropy_filter.percentile = 99.0
    again = objective(outputs, labels(), iteration=30)
    assert again["entropy_filter"].item() == pytest.approx(out["entropy_filter"].item())
    objective(outputs, labels()[:0].new_zeros(4, 1, 6, 6, 6), iteration=30)  # no unlabeled item: no masks
    assert objective.masks is None


def test_reliability_estimator_validates_and_follows_its_schedule() -> None:
    estimator = ReliabilityEstimator(percentile=25, class_balanced=True)
    assert estimator.percentile_at(7) == 25.0 and estimator.class_balanced
    assert ReliabilityEstimator(schedule=lambda t: 5.0 * t).percentile_at(3) == 15.0
    with pytest.raises(ValueError, match="percentile"):
        ReliabilityEstimator(schedule=lambda t: 0.0).percentile_at(1)
    with pytest.raises(ValueError, match="percentile"):
        ReliabilityEstimator(percentile=0)
    # command-line text is read as a flag (the bundle passes --class_balanced_reliability through unchanged)
    assert ReliabilityEstimator(class_balanced="false").class_balanced is False
    assert ReliabilityEstimator(class_balanced=" True ").class_balanced is True
    with pytest.raises(ValueError, match="for class_balanced, got 'maybe'"):
        ReliabilityEstimator(class_balanced="maybe")
    with pytest.raises(ValueError, match="class_balanced must be True or False"):
        ReliabilityEstimator(class_balanced=1)
    with pytest.raises(ValueError, match="schedule"):
        ReliabilityEstimator(schedule=20.0)
    with pytest.raises(ValueError, match="fusion must be one of"):
        ReliabilityEstimator(fusion="vote")


@pytest.mark.parametrize("term", ("entropy_filter", "contrastive"))
def test_agreement_fusion_trains_both_branches_from_the_voxels_both_trust(term: str) -> None:
    objective = full_objective(reliability=ReliabilityEstimator(percentile=50.0, fusion="agreement"))
    outputs = fake_outputs()
    out = objective(outputs, labels(), iteration=0)
    masks = objective.masks
    assert masks is not None and torch.equal(masks.reliable, masks.reliable_a & masks.reliable_b & (
        torch.softmax(outputs["logits_a"][2:].detach(), 1).argmax(1, keepdim=True)
        == torch.softmax(outputs["logits_b"][2:].detach(), 1).argmax(1, keepdim=True)))  # fmt: skip
    assert 0 < masks.reliable.sum() < masks.reliable_a.sum()
    assert out["reliable_fraction"].item() == pytest.approx(masks.reliable.float().mean().item())
    out[term].backward()
    for key in ("features_a", "features_b") if term == "contrastive" else ("logits_a", "logits_b"):
        grad = outputs[key].grad[2:].abs().sum(1, keepdim=True)
        assert grad.sum() > 0, key
        if term == "entropy_filter":
            assert (grad[masks.uncertain] == 0).all(), key  # voxels the networks disagree on teach nothing


def test_supervised_only_has_no_unlabeled_term_and_ignores_unlabeled_items() -> None:
    objective = DualNetworkObjective()
    assert not objective.uses_unlabeled
    outputs = fake_outputs()
    out = objective(outputs, labels(), iteration=0)
    assert set(out) == {"loss", "sup_a", "sup_b"}
    out["loss"].backward()
    grad = outputs["logits_a"].grad
    assert grad[:2].abs().sum() > 0 and grad[2:].abs().sum() == 0


@pytest.mark.parametrize("term", UNLABELED_TERMS)
def test_each_unlabeled_term_trains_both_branches_in_symmetric_mode(term: str) -> None:
    objective = full_objective()
    outputs = fake_outputs()
    out = objective(outputs, labels(), iteration=0)
    out[term].backward()
    keys = ("features_a", "features_b") if term == "contrastive" else ("logits_a", "logits_b")
    for key in keys:
        grad = outputs[key].grad
        assert grad is not None and torch.isfinite(grad).all(), (term, key)
        assert grad[2:].abs().sum() > 0, (term, key)  # the unlabeled items learn
        assert grad[:2].abs().sum() == 0, (term, key)  # the labeled items do not take pseudo-labels


@pytest.mark.parametrize("term", ("kl", "consistency", "contrastive"))
def test_weaker_mode_trains_only_the_branch_with_the_higher_supervised_loss(term: str) -> None:
    objective = full_objective(teacher_mode="weaker")
    outputs = fake_outputs()
    y = labels()
    with torch.no_grad():  # make branch B clearly better on the labeled items
        outputs["logits_b"][:2] = torch.cat([(1 - y) * 5, y * 5], dim=1)
    out = objective(outputs, y, iteration=0)
    assert out["sup_a"] > out["sup_b"]
    out[term].backward()
    weak, strong = ("features_a", "features_b") if term == "contrastive" else ("logits_a", "logits_b")
    assert outputs[weak].grad is not None and outputs[weak].grad.abs().sum() > 0
    assert outputs[strong].grad is None or outputs[strong].grad.abs().sum() == 0


@pytest.mark.parametrize(
    "objective",
    [
        full_objective(),
        full_objective(teacher_mode="weaker"),
        DualNetworkObjective(cross_pseudo=CrossPseudoSupervisionLoss()),
        DualNetworkObjective(),
    ],
)
def test_trains_both_feature_maps_says_which_features_get_gradient(objective: DualNetworkObjective) -> None:
    """What multi_gpu_train.json reads to decide DDP's find_unused_parameters: checked against the gradients."""
    outputs = fake_outputs()
    objective(outputs, labels(), iteration=0)["loss"].backward()
    both = all(outputs[k].grad is not None and outputs[k].grad.abs().sum() > 0 for k in ("features_a", "features_b"))
    assert objective.trains_both_feature_maps == both


@pytest.mark.parametrize(
    "objective, reads",
    [
        (full_objective(), True),
        (full_objective(entropy_filter=None), True),  # prototype contrast alone reads them
        (full_objective(contrastive=None), True),  # the entropy filter alone reads them
        (full_objective(entropy_filter=None, contrastive=None), False),
        (DualNetworkObjective(cross_pseudo=CrossPseudoSupervisionLoss()), False),
    ],
)
def test_reliability_masks_are_computed_only_where_a_term_reads_them(objective: DualNetworkObjective, reads: bool):
    out = objective(fake_outputs(), labels(), iteration=0)
    assert objective.reads_reliability_masks == reads == ("reliable_fraction" in out)


def test_class_balanced_reliability_gives_the_contrastive_term_a_foreground_prototype() -> None:
    # unlabeled items: a small, less confident foreground in a confident background, in both branches
    outputs = fake_outputs(n=4)
    with torch.no_grad():
        for key in ("logits_a", "logits_b"):
            outputs[key][:, 0] = 4.0 + torch.rand(outputs[key][:, 0].shape)
            outputs[key][:, 1] = 0.0
            outputs[key][:, 1, 1:3, 1:3, 1:3] = 5.0 + torch.rand(outputs[key][:, 1, 1:3, 1:3, 1:3].shape)
    for class_balanced in (False, True):
        objective = full_objective(
            unlabeled_weight=1.0,
            contrastive_weight=1.0,
            reliability=ReliabilityEstimator(class_balanced=class_balanced),
        )
        terms = objective(outputs, labels(), iteration=0)
        assert objective.contrastive_a.prototype_valid.tolist() == [True, class_balanced]
        if class_balanced:
            assert terms["contrastive"].item() > 0
            grad = torch.autograd.grad(terms["contrastive"], outputs["features_a"])[0]
            assert grad[2:].abs().sum() > 0  # reaches the unlabeled items' features
        else:
            assert terms["contrastive"].item() == 0.0  # one valid prototype only: the term trains nothing


def test_prototype_state_of_each_branch_is_separate_and_saved() -> None:
    objective = full_objective()
    assert objective.contrastive_a is not objective.contrastive_b
    state = objective.state_dict()
    assert any(k.startswith("contrastive_a.") for k in state) and any(k.startswith("contrastive_b.") for k in state)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="teacher_mode"):
        DualNetworkObjective(teacher_mode="both")
    with pytest.raises(ValueError, match="reliability must be a ReliabilityEstimator"):
        DualNetworkObjective(reliability=20.0)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        DualNetworkObjective(unlabeled_weight=-1.0)
