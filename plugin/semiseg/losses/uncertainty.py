"""Pseudo-label supervision weighted by the KL divergence between a teacher and a student network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from semiseg.losses.validation import check_logits_pair, check_reduction, reduce_voxel_map

__all__ = ["KLUncertaintyLoss"]


class KLUncertaintyLoss(_Loss):
    """
    Uncertainty-rectified pseudo-label loss of a student network taught by a teacher network.

    Per voxel, with ``p_t = softmax(z_teacher)`` (detached) and ``p_s = softmax(z_student)``:

        ``D = KL(p_t || p_s) = sum_c p_t,c (log p_t,c - log p_s,c)``, ``w = exp(-D)``,

        ``L = mean(w * CE(z_student, argmax z_teacher)) + mean(D)``.

    Where the two networks disagree (large D) the teacher's hard label is trusted less (small w), and the mean of
    D pulls the student's distribution towards the teacher's. The trainer uses it in both directions (A teaches B
    and B teaches A) by swapping the arguments.

    The weight ``w`` is detached. With a gradient through ``w`` the pseudo-label term would contribute
    ``-w * CE * dD`` to the student's gradient: on voxels where ``w * CE > 1`` the student would be pushed away from
    the teacher, rewarded for disagreeing more to switch the weight off. In the original method the two
    distributions are two heads of one network, so that trade-off learns a variance; here the teacher is another,
    fixed network, and a student that can buy a low weight by diverging makes the term unstable. Detached, ``w`` is
    a per-voxel confidence, and the gradient of the student is ``w * dCE + dD``: both parts move it towards the
    teacher. No gradient reaches the teacher's logits.

    The original paper:

        Zheng, Z., Yang, Y. (2021) Rectifying Pseudo Label Learning via Uncertainty Estimation for Domain Adaptive
        Semantic Segmentation. International Journal of Computer Vision 129, 1106-1120.
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        """
        Args:
            reduction: ``"mean"`` (``mean(w * CE) + mean(D)`` over voxels), ``"sum"`` (the sums over voxels) or
                ``"none"`` (the per-voxel map ``w * CE + D``, shape (B, 1, *spatial)).

        Raises:
            ValueError: when ``reduction`` is not one of "mean", "sum", "none".
        """
        reduction = check_reduction(reduction)
        super().__init__(reduction=reduction)

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        """
        Args:
            student_logits: logits of the network that learns, shape (B, C, *spatial), C >= 2 (softmax over dim 1).
            teacher_logits: logits of the teaching network, same shape; detached here.

        Returns:
            a 0-dim tensor for ``reduction`` "mean" and "sum"; the per-voxel map (B, 1, *spatial) for "none".

        Raises:
            ValueError: when the logits' shapes differ or are not (B, C, *spatial) with C >= 2.
        """
        check_logits_pair(student_logits, teacher_logits, ("student_logits", "teacher_logits"))
        teacher_logits = teacher_logits.detach()
        log_p_student = F.log_softmax(student_logits, dim=1)
        log_p_teacher = F.log_softmax(teacher_logits, dim=1)
        # log-probabilities on both sides: a teacher probability that underflows to 0 contributes 0, not NaN
        divergence = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1, keepdim=True)
        weight = torch.exp(-divergence.detach().clamp_min(0.0))
        pseudo_label = teacher_logits.max(dim=1).indices  # the argmax, faster than Tensor.argmax(dim=1) on CPU
        cross_entropy = F.nll_loss(log_p_student, pseudo_label, reduction="none").unsqueeze(1)
        loss_map = weight * cross_entropy + divergence
        return reduce_voxel_map(loss_map, self.reduction)
