"""Cross pseudo supervision between two segmentation networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from semiseg.losses.validation import check_logits_pair, check_reduction, reduce_voxel_map

__all__ = ["CrossPseudoSupervisionLoss"]


class CrossPseudoSupervisionLoss(_Loss):
    """
    Cross pseudo supervision: each network learns the other network's hard prediction by cross-entropy,

        ``L = CE(z_a, argmax z_b) + CE(z_b, argmax z_a)``,

    with both pseudo-labels detached, so the gradient of the first term reaches only ``z_a`` and that of the
    second only ``z_b``.

    The original paper:

        Chen, X., Yuan, Y., Zeng, G., Wang, J. (2021) Semi-Supervised Semantic Segmentation with Cross Pseudo
        Supervision. CVPR 2021.
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        """
        Args:
            reduction: how the per-voxel loss map is reduced: ``"mean"`` (mean over voxels of the sum of both
                cross-entropies, i.e. mean CE of network A plus mean CE of network B), ``"sum"`` (sum over voxels) or
                ``"none"`` (the per-voxel map, shape (B, 1, *spatial)).

        Raises:
            ValueError: when ``reduction`` is not one of "mean", "sum", "none".
        """
        reduction = check_reduction(reduction)
        super().__init__(reduction=reduction)

    def forward(
        self,
        logits_a: torch.Tensor,
        logits_b: torch.Tensor,
        teacher_a: torch.Tensor | None = None,
        teacher_b: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            logits_a: logits of network A, shape (B, C, *spatial), C >= 2 (softmax over dim 1).
            logits_b: logits of network B, same shape as ``logits_a``.
            teacher_a, teacher_b: optional logits of a separate teaching pass of each network (e.g. without
                dropout), same shape; when given, the pseudo-labels are their argmax instead of the students'.

        Returns:
            a 0-dim tensor for ``reduction`` "mean" and "sum"; the per-voxel map (B, 1, *spatial) for "none".

        Raises:
            ValueError: when the logits are not (B, C, *spatial) with C >= 2 or their shapes differ.
        """
        check_logits_pair(logits_a, logits_b)
        # hard labels carry no gradient; max(...).indices is the argmax (first index on ties), much faster than
        # Tensor.argmax over the channel axis on CPU
        teacher_a = logits_a if teacher_a is None else teacher_a
        teacher_b = logits_b if teacher_b is None else teacher_b
        check_logits_pair(teacher_a, logits_a, ("teacher_a", "logits_a"))
        check_logits_pair(teacher_b, logits_b, ("teacher_b", "logits_b"))
        pseudo_from_b = teacher_b.detach().max(dim=1).indices
        pseudo_from_a = teacher_a.detach().max(dim=1).indices
        ce_a = F.cross_entropy(logits_a, pseudo_from_b, reduction="none")
        ce_b = F.cross_entropy(logits_b, pseudo_from_a, reduction="none")
        loss_map = (ce_a + ce_b).unsqueeze(1)
        return reduce_voxel_map(loss_map, self.reduction)
