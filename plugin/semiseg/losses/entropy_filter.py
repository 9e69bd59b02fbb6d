"""Entropy-filtered supervision: both networks learn a fused pseudo-label on the voxels where one of them is reliable.

A voxel is reliable for a network when the entropy of its predicted class distribution is at most the q-th
percentile of that network's entropies over the batch, so the threshold adapts to the batch and about q % of the
voxels are reliable for each network. This is the entropy-based pseudo-label filtering of

    Lu, Wu, Chaddad, Daqqaq, Kateb (2025) Enhancing Dual Network Based Semi-Supervised Medical Image Segmentation
    with Uncertainty-Guided Pseudo-Labeling. Knowledge-Based Systems (arXiv 2509.13084).

Unlike that paper's released code, the entropy here is computed on softmax probabilities (never on logits) and the
cross-entropy keeps its gradient to the logits.

With ``class_balanced=True`` the percentile is taken separately over the voxels of each predicted class, so about
q % of every class is reliable. On a small foreground the batch-wide percentile keeps background voxels only: the
foreground is predicted with less confidence than the bulk of the background (on an LA phantom patch, 8 % foreground,
a trained demo checkpoint had no reliable foreground voxel at q = 20 nor at q = 80), so the filter teaches background
alone and the prototype contrast has no foreground prototype. Per-class thresholds in the spirit of class-wise confidence thresholds, e.g.

    Zhang, Wang, Hou, Wu, Wang, Okumura, Shinozaki (2021) FlexMatch: Boosting Semi-Supervised Learning with
    Curriculum Pseudo Labeling. NeurIPS 2021.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from semiseg.arguments import check_bool, check_number, is_number
from semiseg.losses.distributed import all_gather_cat
from semiseg.losses.validation import check_logits_pair, check_reduction, reduce_voxel_map

__all__ = [
    "ReliabilityMasks",
    "voxel_entropy",
    "batch_percentile",
    "class_percentiles",
    "compute_reliability",
    "EntropyFilteredLoss",
    "FUSIONS",
]


def voxel_entropy(probs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """
    Shannon entropy (natural log) of the class distribution of every voxel, ``H = -sum_c p_c log p_c``.

    Args:
        probs: class probabilities (for example a softmax output), shape (B, C, *spatial), summing to 1 over dim 1.
        eps: lower clamp of the probabilities inside the log, so a zero probability contributes 0, not NaN.

    Returns:
        the entropy map, shape (B, 1, *spatial), values in [0, log C].

    Raises:
        ValueError: when ``probs`` is not (B, C, *spatial) with C >= 2.
    """
    if probs.ndim < 3 or probs.shape[1] < 2:
        raise ValueError(f"probs must have shape (B, C, *spatial) with C >= 2 classes, got {tuple(probs.shape)}.")
    return -(probs * torch.log(probs.clamp_min(eps))).sum(dim=1, keepdim=True)


def batch_percentile(values: torch.Tensor, q: float) -> torch.Tensor:
    """
    The q-th percentile of all elements of ``values``, with the linear interpolation of ``numpy.percentile``.

    Unlike ``torch.quantile`` it has no limit on the input size. It selects the (at most two) neighbouring order
    statistics of the flattened tensor with ``torch.kthvalue`` on CPU (no full sort) and with ``torch.sort`` on
    other devices, where ``kthvalue`` over one long slice is slow (about 70 times slower than a sort on an H200 for
    4 M elements).

    Args:
        values: a tensor of any shape with at least one element, for example an entropy map (B, 1, *spatial).
        q: the percentile, in [0, 100].

    Returns:
        a 0-dim tensor on the device of ``values``.

    Raises:
        ValueError: when ``values`` is empty or ``q`` is outside [0, 100].
    """
    check_number(q, "q", 0.0, 100.0)
    flat = values.reshape(-1)
    n = flat.numel()
    if n == 0:
        raise ValueError("values must have at least one element, got an empty tensor.")
    position = float(q) / 100.0 * (n - 1)
    lower = math.floor(position)
    fraction = position - lower
    upper = min(lower + 1, n - 1)
    if flat.device.type == "cpu":
        lower_value = torch.kthvalue(flat, lower + 1).values
        if fraction == 0.0 or upper == lower:
            return lower_value
        upper_value = torch.kthvalue(flat, upper + 1).values
    else:
        ordered = torch.sort(flat).values
        lower_value, upper_value = ordered[lower], ordered[upper]
        if fraction == 0.0 or upper == lower:
            return lower_value
    return lower_value + (upper_value - lower_value) * fraction


class ReliabilityMasks(NamedTuple):
    """
    Per-voxel reliability of two networks' predictions on one batch, as made by :func:`compute_reliability`.

    All masks and maps have shape (B, 1, *spatial).

    Attributes:
        reliable_a: bool, the entropy of network A is at most its batch percentile.
        reliable_b: bool, the same for network B.
        reliable: bool, the voxels whose pseudo-label is trusted. With the ``"confident"`` fusion (the default of
            :func:`compute_reliability`) those reliable for at least one network (``reliable_a | reliable_b``);
            with ``"agreement"`` those reliable for both networks whose argmaxes agree.
        uncertain: bool, ``~reliable``.
        pseudo_label: long, the fused pseudo-label: on reliable voxels the argmax of the reliable network (of the
            lower-entropy one where both are; network A on an exact tie; with ``"agreement"`` the class both
            predict), elsewhere the argmax of the mean of both networks' probabilities.
        entropy_a: float, the entropy map of network A.
        entropy_b: float, the entropy map of network B.
    """

    reliable_a: torch.Tensor
    reliable_b: torch.Tensor
    reliable: torch.Tensor
    uncertain: torch.Tensor
    pseudo_label: torch.Tensor
    entropy_a: torch.Tensor
    entropy_b: torch.Tensor


def _check_percentile(percentile: float) -> float:
    """Return ``percentile`` as a float, or raise a ValueError when it is not a number in (0, 100]."""
    if not is_number(percentile):
        raise ValueError(f"percentile must be a number in (0, 100], got {percentile!r}.")
    if not 0.0 < percentile <= 100.0:  # also rejects NaN
        raise ValueError(f"percentile must be in (0, 100], got {percentile}.")
    return float(percentile)


def _below_percentile(entropy: torch.Tensor, label: torch.Tensor | None, q: float) -> torch.Tensor:
    """Voxels whose entropy is at most the q-th percentile, over the batch or (given ``label``) over each class.

    Inside :func:`semiseg.losses.distributed.global_batch` the percentiles are those of the batches of all
    processes together.
    """
    pooled = all_gather_cat(entropy)
    if label is None:
        return entropy <= batch_percentile(pooled, q)
    pooled_label = all_gather_cat(label)
    if entropy.device.type == "cpu":  # a host sync per class costs nothing here, and kthvalue beats a full sort
        reliable = torch.zeros_like(entropy, dtype=torch.bool)
        for c in pooled_label.unique().tolist():
            members = label == c
            reliable |= members & (entropy <= batch_percentile(pooled[pooled_label == c], q))
        return reliable
    return entropy <= class_percentiles(pooled, pooled_label, q)[label]


def class_percentiles(values: torch.Tensor, label: torch.Tensor, q: float) -> torch.Tensor:
    """
    The q-th percentile of ``values`` over the elements of each class, all classes at once and without a host sync.

    The same numbers as :func:`batch_percentile` of ``values[label == c]`` for every class c (linear interpolation of
    ``numpy.percentile``), from one sort of the values grouped by class: on a GPU the cost does not grow with the
    number of classes and nothing waits for the device.

    Args:
        values: a float tensor of any shape, for example an entropy map (B, 1, *spatial).
        label: non-negative integer class of every element, the same shape as ``values``.
        q: the percentile, in [0, 100].

    Returns:
        shape (max(label) + 1,) on the device of ``values``: the percentile of each class (0 for a class without
        elements).

    Raises:
        ValueError: when the shapes differ, ``values`` is empty or ``q`` is outside [0, 100].
    """
    check_number(q, "q", 0.0, 100.0)
    if values.shape != label.shape or values.numel() == 0:
        raise ValueError(
            f"values and label must have the same non-empty shape, got {tuple(values.shape)} and {tuple(label.shape)}."
        )
    flat, classes = values.reshape(-1), label.reshape(-1).long()
    # sorted by value, then (stably) by class: each class's values form one sorted run
    by_value = torch.sort(flat).indices
    grouped = by_value[torch.sort(classes[by_value], stable=True).indices]
    ordered = flat[grouped]
    counts = torch.bincount(classes)
    starts = torch.cumsum(counts, 0) - counts
    position = float(q) / 100.0 * (counts.double() - 1).clamp_min(0)
    lower = position.floor()
    fraction = (position - lower).to(values.dtype)
    upper = torch.minimum(lower + 1, (counts - 1).clamp_min(0).double())
    last = ordered.numel() - 1
    lower_value = ordered[(starts + lower.long()).clamp_max(last)]
    upper_value = ordered[(starts + upper.long()).clamp_max(last)]
    return torch.where(counts > 0, lower_value + (upper_value - lower_value) * fraction, 0.0)


FUSIONS: tuple[str, ...] = ("confident", "agreement")
"""Rules of :func:`compute_reliability` for which voxels' pseudo-labels are trusted."""


def _check_fusion(fusion: str) -> str:
    """Return ``fusion``, or raise a ValueError when it is not one of :data:`FUSIONS`."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}.")
    return fusion


@torch.no_grad()
def compute_reliability(
    probs_a: torch.Tensor,
    probs_b: torch.Tensor,
    percentile: float,
    class_balanced: bool = False,
    fusion: str = "confident",
) -> ReliabilityMasks:
    """
    Reliability masks and the fused pseudo-label of two networks' predictions on one batch (no gradient).

    A voxel is reliable for network k when its entropy ``H_k`` is at most the ``percentile``-th percentile of
    ``H_k`` over the whole batch (all items and voxels). Voxels tied with the threshold count as reliable, so the
    reliable fraction is about ``percentile / 100`` for continuous entropies and never 0: saturated predictions
    whose entropy is exactly 0 are all reliable even when they are more than ``percentile`` % of the batch, and a
    batch of constant entropy is entirely reliable.

    Args:
        probs_a: class probabilities of network A, shape (B, C, *spatial), C >= 2.
        probs_b: class probabilities of network B, same shape as ``probs_a``.
        percentile: q in (0, 100].
        class_balanced: take the percentile of ``H_k`` over the voxels that network k assigns to each class
            separately, so that about q % of every predicted class is reliable (see the module docstring).
        fusion: ``"confident"`` (the paper's rule): a voxel reliable for either network is trusted, with the label
            of the reliable (or the more confident) network, even where the partner predicts another class with
            confidence; ``"agreement"``: only voxels reliable for both networks whose labels agree are trusted.

    Returns:
        the :class:`ReliabilityMasks` of the batch, every field of shape (B, 1, *spatial).

    Raises:
        ValueError: when ``percentile`` is outside (0, 100], ``fusion`` is not one of :data:`FUSIONS`, the shapes
            differ or are not (B, C, *spatial), C >= 2.
    """
    q = _check_percentile(percentile)
    _check_fusion(fusion)
    if probs_a.ndim < 3 or probs_a.shape[1] < 2:
        raise ValueError(
            f"probs_a must have shape (B, C, *spatial) with C >= 2 classes, got {tuple(probs_a.shape)}."
        )
    if probs_a.shape != probs_b.shape:
        raise ValueError(
            f"probs_a and probs_b must have the same shape, got {tuple(probs_a.shape)} and {tuple(probs_b.shape)}."
        )
    entropy_a = voxel_entropy(probs_a)
    entropy_b = voxel_entropy(probs_b)
    # max(...).indices is the argmax (first index on ties), much faster than Tensor.argmax over dim 1 on CPU
    label_a = probs_a.max(dim=1, keepdim=True).indices
    label_b = probs_b.max(dim=1, keepdim=True).indices
    reliable_a = _below_percentile(entropy_a, label_a if class_balanced else None, q)
    reliable_b = _below_percentile(entropy_b, label_b if class_balanced else None, q)
    label_mean = (probs_a + probs_b).max(dim=1, keepdim=True).indices
    if fusion == "agreement":
        reliable = reliable_a & reliable_b & (label_a == label_b)
        pseudo_label = torch.where(reliable, label_a, label_mean)
    else:
        reliable = reliable_a | reliable_b
        from_a = reliable_a & (~reliable_b | (entropy_a <= entropy_b))
        from_b = reliable_b & ~from_a
        pseudo_label = torch.where(from_a, label_a, torch.where(from_b, label_b, label_mean))
    return ReliabilityMasks(
        reliable_a=reliable_a,
        reliable_b=reliable_b,
        reliable=reliable,
        uncertain=~reliable,
        pseudo_label=pseudo_label,
        entropy_a=entropy_a,
        entropy_b=entropy_b,
    )


class EntropyFilteredLoss(_Loss):
    """
    Entropy-filtered supervision of two networks by their fused pseudo-label on reliable voxels only:

        ``L = sum_{v reliable} [CE(z_a, y_fused)_v + CE(z_b, y_fused)_v] / #reliable``,

    where reliability and ``y_fused`` come from :func:`compute_reliability` (a voxel is dropped only when it is
    uncertain for both networks). The pseudo-label and the masks carry no gradient; the cross-entropy trains both
    networks' logits. A batch without reliable voxels gives a 0 that is still connected to the graph.

    ``percentile`` and ``class_balanced`` apply only when ``forward`` is called without masks (the loss used on
    its own). ``DualNetworkObjective`` always passes the masks of its
    :class:`~semiseg.losses.reliability.ReliabilityEstimator`, the one place where the objective's percentile,
    schedule and class balance are set. ``percentile`` is validated when set.

    After Lu et al. (2025), Knowledge-Based Systems (arXiv 2509.13084), see :mod:`semiseg.losses.entropy_filter`.
    """

    def __init__(
        self, percentile: float = 20.0, class_balanced: bool = False, reduction: LossReduction | str = LossReduction.MEAN
    ) -> None:
        """
        Args:
            percentile: q in (0, 100]: a voxel is reliable for a network when its entropy is at most the q-th
                percentile of that network's entropies over the batch. Used when ``forward`` is given no masks.
            class_balanced: the percentile is taken over each predicted class separately (see
                :func:`compute_reliability`). Used when ``forward`` is given no masks.
            reduction: ``"mean"`` (sum over reliable voxels divided by their number), ``"sum"`` (sum over reliable
                voxels) or ``"none"`` (the per-voxel map (B, 1, *spatial), zero on voxels that are not reliable).

        Raises:
            ValueError: when ``percentile`` is outside (0, 100], ``class_balanced`` is not a bool or ``reduction`` is
                not "mean", "sum", "none".
        """
        check_bool(class_balanced, "class_balanced")
        reduction = check_reduction(reduction)
        super().__init__(reduction=reduction)
        self.percentile = percentile
        self.class_balanced = class_balanced

    @property
    def percentile(self) -> float:
        """The percentile q in (0, 100] of the entropy threshold."""
        return self._percentile

    @percentile.setter
    def percentile(self, value: float) -> None:
        self._percentile = _check_percentile(value)

    def forward(
        self, logits_a: torch.Tensor, logits_b: torch.Tensor, masks: ReliabilityMasks | None = None
    ) -> torch.Tensor:
        """
        Args:
            logits_a: logits of network A, shape (B, C, *spatial), C >= 2 (softmax over dim 1).
            logits_b: logits of network B, same shape as ``logits_a``.
            masks: reliability masks of this batch from :func:`compute_reliability`; when None they are computed
                here from the detached softmax of both logits with ``self.percentile``.

        Returns:
            a 0-dim tensor for ``reduction`` "mean" and "sum"; the per-voxel map (B, 1, *spatial) for "none".

        Raises:
            ValueError: when the logits' shapes differ or are not (B, C, *spatial) with C >= 2, or when the masks
                are not shaped (B, 1, *spatial) like the logits.
        """
        check_logits_pair(logits_a, logits_b)
        if masks is None:
            masks = compute_reliability(
                torch.softmax(logits_a.detach(), dim=1),
                torch.softmax(logits_b.detach(), dim=1),
                self.percentile,
                self.class_balanced,
            )
        expected = (logits_a.shape[0], 1, *logits_a.shape[2:])
        for name in ("reliable", "pseudo_label"):
            shape = tuple(getattr(masks, name).shape)
            if shape != expected:
                raise ValueError(
                    f"masks.{name} must have shape {expected} to match logits of shape {tuple(logits_a.shape)}, "
                    f"got {shape}."
                )
        target = masks.pseudo_label[:, 0].long()
        ce_a = F.cross_entropy(logits_a, target, reduction="none")
        ce_b = F.cross_entropy(logits_b, target, reduction="none")
        reliable = masks.reliable.bool()
        loss_map = torch.where(reliable, (ce_a + ce_b).unsqueeze(1), 0.0)
        # mean over the reliable voxels; with none reliable this is 0 and keeps the graph
        return reduce_voxel_map(loss_map, self.reduction, reliable)
