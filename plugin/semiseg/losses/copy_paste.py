"""Bidirectional copy-paste supervision: labeled crops pasted into unlabeled ones and back, both branches taught.

Adapts Bai, Y., Chen, D., Li, Q., Shen, W., Wang, Y. (2023) "Bidirectional Copy-Paste for Semi-Supervised Medical
Image Segmentation", CVPR 2023 (arXiv 2305.00673), to the dual-network method: a cuboid of one crop is pasted into
the other, the mixed crop's target is the ground truth where the labeled crop shows and the pseudo-label of the
unlabeled crop elsewhere, and, as in cross pseudo supervision (Chen et al., CVPR 2021), each branch reads the
pseudo-labels of its partner. The labels of the few labeled volumes so appear in the contexts of the unlabeled ones,
and the unlabeled anatomy around labeled structures.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from semiseg.losses.validation import check_logits_pair, check_reduction

__all__ = ["CopyPasteBatch", "CopyPasteSupervision", "cuboid_mask"]


@dataclass
class CopyPasteBatch:
    """Mixed crops and their targets, as ``CopyPasteSupervision.mix`` makes them.

    Attributes:
        image: the mixed crops, (B_m, C_in, *spatial).
        target_a: target of branch A (ground truth in the labeled region, branch B's pseudo-label elsewhere),
            (B_m, 1, *spatial), integer class indices.
        target_b: target of branch B (its partner's pseudo-label from branch A), same shape.
        labeled_region: True where the target is ground truth, (B_m, 1, *spatial), bool.
    """

    image: torch.Tensor
    target_a: torch.Tensor
    target_b: torch.Tensor
    labeled_region: torch.Tensor


def cuboid_mask(spatial_size: tuple[int, ...], ratio: float, device: torch.device | str | None = None) -> torch.Tensor:
    """A bool mask (1, *spatial_size), True in one axis-aligned cuboid of ``round(ratio * size)`` voxels per axis.

    The cuboid's position is uniform over the positions that keep it inside the crop, drawn from torch's global
    generator (seeded by ``monai.utils.set_determinism``).
    """
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}.")
    mask = torch.zeros((1, *spatial_size), dtype=torch.bool)
    region = [slice(None)]
    for size in spatial_size:
        extent = min(max(1, round(ratio * size)), size)
        start = int(torch.randint(0, size - extent + 1, (1,)))
        region.append(slice(start, start + extent))
    mask[tuple(region)] = True
    return mask.to(device) if device is not None else mask


class CopyPasteSupervision(_Loss):
    """Supervision of both branches on labeled/unlabeled copy-paste mixes of the batch.

    ``mix`` pairs labeled crop ``i`` with unlabeled crop ``i`` (the first ``min(B_l, B_u)`` of each) and draws one
    cuboid per pair. Pairs alternate direction: even pairs paste the labeled cuboid into the unlabeled crop
    ("inward"), odd pairs the unlabeled cuboid into the labeled crop ("outward"), so a batch of two unlabeled crops
    has one mix of each kind, as the paper's two mixes per pair, at half the cost. ``forward`` is, for each branch
    ``k`` and mixed crop, a voxel-weighted cross-entropy plus a voxel-weighted soft Dice loss of the foreground
    classes against ``target_k``, where ground-truth voxels weigh 1 and pseudo-labelled voxels
    ``unlabeled_region_weight`` (the paper's alpha, 0.5).

    Args:
        cuboid_ratio: edge of the pasted cuboid as a fraction of the crop's edge along each axis (the paper's 2/3).
        unlabeled_region_weight: weight of the pseudo-labelled voxels against the ground-truth ones, in [0, 1].
        reduction: ``"mean"`` (mean over mixed crops of the sum of both branches' losses), ``"sum"`` or ``"none"``
            (a (B_m,) tensor).

    Raises:
        ValueError: when ``cuboid_ratio`` is outside (0, 1), ``unlabeled_region_weight`` outside [0, 1], or
            ``reduction`` is not "mean", "sum", "none".
    """

    def __init__(
        self,
        cuboid_ratio: float = 2.0 / 3.0,
        unlabeled_region_weight: float = 0.5,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        if not 0.0 < cuboid_ratio < 1.0:
            raise ValueError(f"cuboid_ratio must be in (0, 1), got {cuboid_ratio}.")
        if not 0.0 <= unlabeled_region_weight <= 1.0:
            raise ValueError(f"unlabeled_region_weight must be in [0, 1], got {unlabeled_region_weight}.")
        super().__init__(reduction=check_reduction(reduction))
        self.cuboid_ratio = float(cuboid_ratio)
        self.unlabeled_region_weight = float(unlabeled_region_weight)

    @torch.no_grad()
    def mix(
        self,
        image_l: torch.Tensor,
        label_l: torch.Tensor,
        image_u: torch.Tensor,
        teacher_a: torch.Tensor,
        teacher_b: torch.Tensor,
    ) -> CopyPasteBatch:
        """Paste cuboids between labeled and unlabeled crops and build each branch's target.

        Args:
            image_l: labeled crops, (B_l, C_in, *spatial).
            label_l: their labels, (B_l, 1, *spatial), class indices.
            image_u: unlabeled crops, (B_u, C_in, *spatial).
            teacher_a: branch A's teaching logits of ``image_u`` (no gradient needed), (B_u, C, *spatial).
            teacher_b: branch B's, same shape.

        Returns:
            a ``CopyPasteBatch`` of ``min(B_l, B_u)`` mixed crops.

        Raises:
            ValueError: when the crops' spatial shapes or channels differ, or the label or logits do not match them.
        """
        if image_l.shape[1:] != image_u.shape[1:]:
            raise ValueError(
                f"copy-paste needs labeled and unlabeled crops of one shape, got {tuple(image_l.shape[1:])} and "
                f"{tuple(image_u.shape[1:])} (C_in, *spatial)."
            )
        spatial = tuple(image_u.shape[2:])
        if label_l.shape != (image_l.shape[0], 1, *spatial):
            raise ValueError(f"label_l must have shape {(image_l.shape[0], 1, *spatial)}, got {tuple(label_l.shape)}.")
        check_logits_pair(teacher_a, teacher_b, ("teacher_a", "teacher_b"))
        if teacher_a.shape[0] != image_u.shape[0] or tuple(teacher_a.shape[2:]) != spatial:
            raise ValueError(
                f"teacher logits {tuple(teacher_a.shape)} do not match the unlabeled crops {tuple(image_u.shape)}."
            )
        n = min(image_l.shape[0], image_u.shape[0])
        masks = torch.stack([cuboid_mask(spatial, self.cuboid_ratio, image_u.device) for _ in range(n)])
        inward = (torch.arange(n, device=image_u.device) % 2 == 0).view(n, *([1] * (len(spatial) + 1)))
        labeled_region = torch.where(inward, masks, ~masks)  # (n, 1, *spatial)
        image = torch.where(labeled_region, image_l[:n], image_u[:n])
        label = label_l[:n].long()
        target_a = torch.where(labeled_region, label, teacher_b[:n].max(dim=1, keepdim=True).indices)
        target_b = torch.where(labeled_region, label, teacher_a[:n].max(dim=1, keepdim=True).indices)
        return CopyPasteBatch(image=image, target_a=target_a, target_b=target_b, labeled_region=labeled_region)

    def forward(self, logits_a: torch.Tensor, logits_b: torch.Tensor, batch: CopyPasteBatch) -> torch.Tensor:
        """
        Args:
            logits_a: branch A's logits of ``batch.image``, (B_m, C, *spatial), C >= 2.
            logits_b: branch B's, same shape.
            batch: the mixes and targets from ``mix``.

        Returns:
            a 0-dim tensor for ``reduction`` "mean" and "sum"; (B_m,) for "none".

        Raises:
            ValueError: when the logits are not (B_m, C, *spatial) of the batch's mixes.
        """
        check_logits_pair(logits_a, logits_b)
        if logits_a.shape[0] != batch.image.shape[0] or logits_a.shape[2:] != batch.image.shape[2:]:
            raise ValueError(
                f"logits {tuple(logits_a.shape)} do not match the mixed crops {tuple(batch.image.shape)}."
            )
        weight = torch.where(batch.labeled_region, 1.0, self.unlabeled_region_weight).to(logits_a.dtype)
        per_item = self._branch_loss(logits_a, batch.target_a, weight) + self._branch_loss(
            logits_b, batch.target_b, weight
        )
        if self.reduction == LossReduction.MEAN.value:
            return per_item.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_item.sum()
        return per_item

    @staticmethod
    def _branch_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Voxel-weighted cross-entropy plus voxel-weighted soft Dice loss of the foreground classes, per item (B,)."""
        dims = tuple(range(2, logits.ndim))
        ce = F.cross_entropy(logits, target[:, 0], reduction="none").unsqueeze(1)
        weighted_ce = (weight * ce).sum(dims).squeeze(1) / weight.sum(dims).squeeze(1).clamp_min(1e-6)
        prob = torch.softmax(logits, dim=1)[:, 1:]
        onehot = F.one_hot(target[:, 0], logits.shape[1]).movedim(-1, 1)[:, 1:].to(prob.dtype)
        intersection = (weight * prob * onehot).sum(dims)
        denominator = (weight * prob).sum(dims) + (weight * onehot).sum(dims)
        dice = (2.0 * intersection + 1e-5) / (denominator + 1e-5)  # (B, C - 1)
        return weighted_ce + (1.0 - dice).mean(1)
