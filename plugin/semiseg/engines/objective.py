"""The training objective of the dual-network method: every loss term of one iteration and their weights.

Implements the total loss of Lu et al., "Enhancing Dual Network Based Semi-Supervised Medical Image Segmentation
with Uncertainty-Guided Pseudo-Labeling", Knowledge-Based Systems 2025 (arXiv 2509.13084), as the project defines
it in DESIGN.md:

    L = sum_k L_sup(z_k, y) + w_cr * L_cr + lambda(t) * (L_cps + L_ef + L_kl + L_cos) + lambda_c(t) * L_con
        [+ lambda_p(t) * L_cp, the optional copy-paste term of Bai et al., CVPR 2023, off by default]

Supervised terms use the labeled part of the batch, every other term the unlabeled part. Each term is an
optional module: ``None`` switches it off (the ablation), and with every unlabeled term off the objective is plain
supervised training of the two branches.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn as nn
from monai.losses import DiceCELoss

from semiseg.engines.pseudo_label_pass import PSEUDO_LABEL_PASSES
from semiseg.engines.schedules import ConstantSchedule
from semiseg.losses import (
    CopyPasteBatch,
    CopyPasteSupervision,
    PrototypeContrastiveLoss,
    ReliabilityEstimator,
    ReliabilityMasks,
)
from semiseg.losses.distributed import all_reduce_sum, global_batch

__all__ = ["DualNetworkObjective", "TEACHER_MODES"]

TEACHER_MODES = ("symmetric", "weaker")


class DualNetworkObjective(nn.Module):
    """All loss terms of one iteration of dual-network semi-supervised training.

    Args:
        supervised_loss: loss of each branch against the labels; default ``DiceCELoss(to_onehot_y=True, softmax=True)``.
        cross_pseudo: cross pseudo supervision between the branches (``CrossPseudoSupervisionLoss``) or None.
        entropy_filter: entropy-filtered supervision (``EntropyFilteredLoss``) or None.
        kl_uncertainty: KL uncertainty weighting (``KLUncertaintyLoss``), applied teacher -> student, or None.
        consistency: prediction consistency (``PredictionConsistencyLoss``) or None.
        contrastive: prototype contrastive loss (``PrototypeContrastiveLoss``) or None; each branch gets its own
            copy, since each keeps its own prototypes.
        cross_reliable: cross-reliable supervision on labeled voxels (``CrossReliableSupervisionLoss``) or None.
        cross_reliable_weight: weight of ``cross_reliable`` inside the supervised part.
        unlabeled_weight: schedule ``iteration -> lambda(t)`` of the pseudo-label terms (CPS, entropy filter, KL,
            consistency), or a number for a constant weight.
        contrastive_weight: schedule ``iteration -> lambda_c(t)`` of the contrastive term, or a number.
        reliability: the ``ReliabilityEstimator`` (entropy percentile, its optional schedule, class balance) whose
            masks the entropy filter and the prototype contrast read; the one place these are configured (the entropy
            filter's own percentile applies only when it is called alone). None: ``ReliabilityEstimator()`` (q = 20,
            over the whole batch).
        teacher_mode: ``"symmetric"``: both branches learn every unlabeled term. ``"weaker"``: as in the released
            recipe, the KL, consistency and contrastive terms train only the branch with the higher supervised loss
            of the iteration, taught by the other.
        pseudo_label_pass: where the teaching side of the pseudo-label terms comes from (reliability masks and fused
            pseudo-labels, CPS's hard labels, KL's teacher distribution): ``"train"`` (default) the training forward
            itself, dropout included; ``"no_dropout"`` the logits of a gradient-free forward without dropout
            (``semiseg.engines.no_dropout_logits``), which ``SemiSupervisedTrainer`` runs and passes as
            ``teacher_logits``; ``"mean_teacher"`` the same pass of the trainer's ``teacher_network`` (an
            exponential moving average of the network's weights). The students (the logits that get gradient) are the
            training forward either way.
        copy_paste: copy-paste supervision on labeled/unlabeled mixes (``CopyPasteSupervision``) or None (default).
            Its pseudo-labels come from the teaching pass, so it needs ``pseudo_label_pass`` "no_dropout" or
            "mean_teacher"; ``SemiSupervisedTrainer`` makes the mixes and runs them in the training forward.
        copy_paste_weight: schedule ``iteration -> lambda_p(t)`` of the copy-paste term, or a number.

    After each call with unlabeled items, ``masks`` holds the ``ReliabilityMasks`` of those items (None when no term
    reads them), so diagnostics reuse the objective's own masks instead of recomputing them.

    Under ``DistributedDataParallel`` each process computes the terms of its shard of the batch inside
    ``semiseg.losses.distributed.global_batch``: the entropy percentiles, the prototypes, the divisors of the masked
    means and the choice of the weaker branch are those of the global batch, so the averaged gradients are those of
    one process with the whole batch (up to float rounding; the contrastive anchors are sampled per process).
    """

    def __init__(
        self,
        supervised_loss: nn.Module | None = None,
        cross_pseudo: nn.Module | None = None,
        entropy_filter: nn.Module | None = None,
        kl_uncertainty: nn.Module | None = None,
        consistency: nn.Module | None = None,
        contrastive: PrototypeContrastiveLoss | None = None,
        cross_reliable: nn.Module | None = None,
        cross_reliable_weight: float = 0.5,
        unlabeled_weight: Callable[[int], float] | float = 0.1,
        contrastive_weight: Callable[[int], float] | float = 0.1,
        reliability: ReliabilityEstimator | None = None,
        teacher_mode: str = "symmetric",
        pseudo_label_pass: str = "train",
        copy_paste: CopyPasteSupervision | None = None,
        copy_paste_weight: Callable[[int], float] | float = 1.0,
    ) -> None:
        super().__init__()
        if copy_paste is not None and pseudo_label_pass == "train":
            raise ValueError(
                "copy_paste needs the pseudo-labels of the clean unlabeled crops before the training forward: set "
                "pseudo_label_pass='no_dropout' or 'mean_teacher'."
            )
        if pseudo_label_pass not in PSEUDO_LABEL_PASSES:
            raise ValueError(f"pseudo_label_pass must be one of {PSEUDO_LABEL_PASSES}, got {pseudo_label_pass!r}.")
        if teacher_mode not in TEACHER_MODES:
            raise ValueError(f"teacher_mode must be one of {TEACHER_MODES}, got {teacher_mode!r}.")
        if cross_reliable_weight < 0:
            raise ValueError(f"cross_reliable_weight must be >= 0, got {cross_reliable_weight}.")
        if reliability is not None and not isinstance(reliability, ReliabilityEstimator):
            raise ValueError(f"reliability must be a ReliabilityEstimator or None, got {type(reliability).__name__}.")
        self.supervised_loss = supervised_loss or DiceCELoss(to_onehot_y=True, softmax=True)
        self.cross_pseudo = cross_pseudo
        self.entropy_filter = entropy_filter
        self.kl_uncertainty = kl_uncertainty
        self.consistency = consistency
        self.contrastive_a = contrastive
        self.contrastive_b = copy.deepcopy(contrastive)
        self.cross_reliable = cross_reliable
        self.cross_reliable_weight = float(cross_reliable_weight)
        self.unlabeled_weight = _as_schedule(unlabeled_weight)
        self.contrastive_weight = _as_schedule(contrastive_weight)
        self.reliability = reliability or ReliabilityEstimator()
        self.masks: ReliabilityMasks | None = None
        self.teacher_mode = teacher_mode
        self.pseudo_label_pass = pseudo_label_pass
        self.copy_paste = copy_paste
        self.copy_paste_weight = _as_schedule(copy_paste_weight)

    @property
    def uses_unlabeled(self) -> bool:
        """Whether any term learns from unlabeled volumes: one that reads the outputs on them, or copy-paste."""
        return self.reads_unlabeled_outputs or self.copy_paste is not None

    @property
    def reads_unlabeled_outputs(self) -> bool:
        """Whether a term reads the network's output on the unlabeled crops themselves (CPS, entropy filter, KL,
        consistency, prototype contrast). Copy-paste alone reads only its mixes: the trainer then leaves the crops
        out of the training forward, as the self-training stage of Bai et al. (CVPR 2023) trains on the mixes only."""
        terms = (self.cross_pseudo, self.entropy_filter, self.kl_uncertainty, self.consistency, self.contrastive_a)
        return any(t is not None for t in terms)

    @property
    def trains_both_feature_maps(self) -> bool:
        """Whether every iteration with unlabeled items sends gradient to both ``features_a`` and ``features_b``.

        False when the contrastive term is off or teaches only the weaker branch: a projection head is then left
        without a gradient, which ``DistributedDataParallel`` accepts only with ``find_unused_parameters=True``.
        """
        return self.contrastive_a is not None and self.teacher_mode == "symmetric"

    @property
    def reads_reliability_masks(self) -> bool:
        """Whether a term reads the reliability masks (the entropy filter, prototype contrast); without one the
        objective does not compute them."""
        return self.entropy_filter is not None or self.contrastive_a is not None

    @property
    def needs_teacher_pass(self) -> bool:
        """Whether ``forward`` needs ``teacher_logits`` of the unlabeled items (a ``pseudo_label_pass`` but "train")."""
        return self.pseudo_label_pass != "train" and self.uses_unlabeled

    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        label: torch.Tensor,
        iteration: int,
        teacher_logits: dict[str, torch.Tensor] | None = None,
        copy_paste: tuple[dict[str, torch.Tensor], CopyPasteBatch] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute every active term and the weighted total.

        Args:
            outputs: the training-mode output of ``DualNet``: ``logits_a``, ``logits_b`` (B, C, *spatial) and
                ``features_a``, ``features_b`` (B, F, *spatial) for a batch whose first ``label.shape[0]`` items are
                labeled and the rest unlabeled (only labeled ones when no term reads them, see
                ``reads_unlabeled_outputs``).
            label: labels of the labeled items, (B_l, 1, *spatial).
            iteration: the trainer's iteration, read by the schedules.
            teacher_logits: with ``pseudo_label_pass="no_dropout"``, ``{"logits_a", "logits_b"}`` (B_u, C, *spatial)
                of the unlabeled items from the teaching pass; ignored with ``"train"``.
            copy_paste: with a copy-paste term, the training-mode output of ``DualNet`` on the mixed crops (the
                ``logits_a``, ``logits_b`` entries are read) and the ``CopyPasteBatch`` they were made from.

        Returns:
            a dict of 0-dim tensors: ``loss`` (the total, to back-propagate), one entry per active term, and the
            statistics ``weight_unlabeled``, ``weight_contrastive`` (``weight_copy_paste`` with that term) and,
            when reliability is computed, ``percentile`` and ``reliable_fraction``.
        """
        with global_batch():
            return self._terms(outputs, label, iteration, teacher_logits, copy_paste)

    def _terms(
        self,
        outputs: dict[str, torch.Tensor],
        label: torch.Tensor,
        iteration: int,
        teacher_logits: dict[str, torch.Tensor] | None,
        copy_paste: tuple[dict[str, torch.Tensor], CopyPasteBatch] | None,
    ) -> dict[str, torch.Tensor]:
        n_l = label.shape[0]
        self.masks = None
        z_a, z_b = outputs["logits_a"].float(), outputs["logits_b"].float()
        terms = {"sup_a": self.supervised_loss(z_a[:n_l], label), "sup_b": self.supervised_loss(z_b[:n_l], label)}
        if self.cross_reliable is not None:
            terms["cross_reliable"] = self.cross_reliable_weight * self.cross_reliable(z_a[:n_l], z_b[:n_l], label)
        total = sum(terms.values())

        stats: dict[str, torch.Tensor] = {}
        unlabeled_terms: dict[str, torch.Tensor] = {}
        if self.uses_unlabeled and (z_a.shape[0] > n_l or copy_paste is not None):
            if self.reads_unlabeled_outputs:
                if z_a.shape[0] == n_l:
                    raise ValueError(
                        "the objective's unlabeled terms read the outputs on the unlabeled crops, but the outputs "
                        f"hold only the {n_l} labeled items; pass the unlabeled crops to joint_forward."
                    )
                teacher = self._teacher(z_a[n_l:], z_b[n_l:], teacher_logits)
                unlabeled_terms, stats = self._unlabeled_terms(
                    outputs, z_a[n_l:], z_b[n_l:], teacher, n_l, terms, iteration
                )
            weights = {"weight_unlabeled": self.unlabeled_weight(iteration), "weight_contrastive": 0.0}
            for name, value in unlabeled_terms.items():
                weight = weights["weight_unlabeled"]
                if name == "contrastive":
                    weight = weights["weight_contrastive"] = self.contrastive_weight(iteration)
                total = total + weight * value
            if self.copy_paste is not None:
                weight = weights["weight_copy_paste"] = self.copy_paste_weight(iteration)
                unlabeled_terms["copy_paste"] = self._copy_paste_term(copy_paste)
                total = total + weight * unlabeled_terms["copy_paste"]
            terms.update(unlabeled_terms)
            stats.update({k: torch.tensor(float(v), device=z_a.device) for k, v in weights.items()})
        return {"loss": total, **terms, **stats}

    def _copy_paste_term(self, copy_paste: tuple[dict[str, torch.Tensor], CopyPasteBatch] | None) -> torch.Tensor:
        """The copy-paste term on the network's output on the mixes (``logits_a``, ``logits_b``, (B_m, C, *spatial))."""
        if copy_paste is None:
            raise ValueError(
                "the objective has a copy-paste term: pass copy_paste=(the network's output on the mixes, "
                "the CopyPasteBatch from copy_paste.mix); SemiSupervisedTrainer does."
            )
        mixed_outputs, mixed = copy_paste
        return self.copy_paste(mixed_outputs["logits_a"].float(), mixed_outputs["logits_b"].float(), mixed)

    def _unlabeled_terms(
        self,
        outputs: dict[str, torch.Tensor],
        u_a: torch.Tensor,
        u_b: torch.Tensor,
        teacher: dict[str, torch.Tensor] | None,
        n_l: int,
        supervised: dict[str, torch.Tensor],
        iteration: int,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The pseudo-label, uncertainty and contrastive terms on the unlabeled logits ``u_a``, ``u_b``.

        ``teacher`` holds the teaching logits ``{"a", "b"}`` of a separate pass, or is None to teach from ``u_a``,
        ``u_b`` themselves."""
        terms: dict[str, torch.Tensor] = {}
        t_a, t_b = (u_a, u_b) if teacher is None else (teacher["a"], teacher["b"])
        stats: dict[str, torch.Tensor] = {}
        masks: ReliabilityMasks | None = None
        if self.reads_reliability_masks:
            q = self.reliability.percentile_at(iteration)
            masks = self.reliability(torch.softmax(t_a.detach(), 1), torch.softmax(t_b.detach(), 1), iteration)
            self.masks = masks
            stats["percentile"] = torch.tensor(q, device=u_a.device)
            stats["reliable_fraction"] = masks.reliable.float().mean()
        if self.cross_pseudo is not None:
            teaching = {} if teacher is None else {"teacher_a": t_a, "teacher_b": t_b}
            terms["cps"] = self.cross_pseudo(u_a, u_b, **teaching)
        if self.entropy_filter is not None:
            terms["entropy_filter"] = self.entropy_filter(u_a, u_b, masks)

        # who learns the uncertainty-guided terms: both branches, or only the weaker one taught by the stronger
        learners = ("a", "b")
        if self.teacher_mode == "weaker":
            sup_a, sup_b = all_reduce_sum(torch.stack([supervised["sup_a"], supervised["sup_b"]]).detach())
            learners = ("a",) if sup_a >= sup_b else ("b",)
        logits = {"a": u_a, "b": u_b}
        teaching_logits = {"a": t_a, "b": t_b}
        partner = {"a": "b", "b": "a"}
        if self.kl_uncertainty is not None:
            terms["kl"] = sum(self.kl_uncertainty(logits[k], teaching_logits[partner[k]]) for k in learners)
        if self.consistency is not None:
            if len(learners) == 2:
                terms["consistency"] = self.consistency(u_a, u_b)
            else:
                k = learners[0]
                terms["consistency"] = self.consistency(logits[k], logits[partner[k]].detach())
        if self.contrastive_a is not None and masks is not None:
            heads = {"a": self.contrastive_a, "b": self.contrastive_b}
            # each network's reliable voxels among the trusted ones (all of them with the "confident" fusion)
            reliable = {"a": masks.reliable_a & masks.reliable, "b": masks.reliable_b & masks.reliable}
            terms["contrastive"] = sum(
                heads[k](outputs[f"features_{k}"][n_l:].float(), masks.pseudo_label, reliable[k], masks.uncertain)
                for k in learners
            )
        return terms, stats

    def _teacher(
        self, u_a: torch.Tensor, u_b: torch.Tensor, teacher_logits: dict[str, torch.Tensor] | None
    ) -> dict[str, torch.Tensor] | None:
        if self.pseudo_label_pass == "train":
            return None
        if teacher_logits is None:
            raise ValueError(
                f"pseudo_label_pass={self.pseudo_label_pass!r} needs teacher_logits of the unlabeled items "
                "(semiseg.engines.no_dropout_logits); SemiSupervisedTrainer passes them."
            )
        teacher = {"a": teacher_logits["logits_a"].float().detach(), "b": teacher_logits["logits_b"].float().detach()}
        for k, student in (("a", u_a), ("b", u_b)):
            if teacher[k].shape != student.shape:
                raise ValueError(
                    f"teacher_logits['logits_{k}'] has shape {tuple(teacher[k].shape)}, the unlabeled logits "
                    f"{tuple(student.shape)}."
                )
        return teacher


def _as_schedule(value: Callable[[int], float] | float) -> Callable[[int], float]:
    if callable(value):
        return value
    if value < 0:
        raise ValueError(f"a loss weight must be >= 0, got {value}.")
    return ConstantSchedule(float(value))
