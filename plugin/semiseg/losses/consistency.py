"""Two agreement terms of the mutual-correction training recipe: cross-reliable supervision and prediction consistency.

Both come from the released training recipe of Lu et al. (2025), which inherits them from

    Wang, Y., Xiao, B., Bi, X., Li, W., Gao, X. (2023) MCF: Mutual Correction Framework for Semi-Supervised Medical
    Image Segmentation. CVPR 2023.
"""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from semiseg.arguments import check_number
from semiseg.losses.validation import check_logits_pair, check_reduction, reduce_voxel_map

__all__ = ["CrossReliableSupervisionLoss", "PredictionConsistencyLoss"]


class CrossReliableSupervisionLoss(_Loss):
    """
    Squared error of both networks' foreground probabilities to the label, on the labeled voxels where exactly one
    network is confident of foreground.

    With ``p_fg = 1 - softmax(z)[:, 0]`` (every class but the background, channel 0) and ``y = (label > 0)``, the
    mask is ``(p_fg_a >= threshold) xor (p_fg_b >= threshold)`` and

        ``L = sum_{v in mask} [(p_fg_a - y)^2 + (p_fg_b - y)^2]_v / #mask``.

    The mask carries no gradient; both networks learn. An empty mask gives a 0 connected to the graph.

    After Wang et al. (2023), MCF: Mutual Correction Framework for Semi-Supervised Medical Image Segmentation,
    CVPR 2023, as used in the training recipe of Lu et al. (2025), Knowledge-Based Systems (arXiv 2509.13084).
    """

    def __init__(self, threshold: float = 0.6, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        """
        Args:
            threshold: foreground probability in (0, 1) from which a network counts as predicting foreground.
            reduction: ``"mean"`` (sum over masked voxels divided by their number), ``"sum"`` (sum over masked
                voxels) or ``"none"`` (the per-voxel map (B, 1, *spatial), zero outside the mask).

        Raises:
            ValueError: when ``threshold`` is outside (0, 1) or ``reduction`` is not "mean", "sum", "none".
        """
        check_number(threshold, "threshold", 0.0, 1.0, low_open=True, high_open=True)
        reduction = check_reduction(reduction)
        super().__init__(reduction=reduction)
        self.threshold = float(threshold)

    def forward(self, logits_a: torch.Tensor, logits_b: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits_a: logits of network A on labeled items, shape (B, C, *spatial), C >= 2, channel 0 background.
            logits_b: logits of network B, same shape as ``logits_a``.
            label: the labels, shape (B, 1, *spatial); any value > 0 is foreground.

        Returns:
            a 0-dim tensor for ``reduction`` "mean" and "sum"; the per-voxel map (B, 1, *spatial) for "none".

        Raises:
            ValueError: when the logits' shapes differ or are not (B, C, *spatial) with C >= 2, or ``label`` is not
                (B, 1, *spatial) like them.
        """
        check_logits_pair(logits_a, logits_b)
        expected = (logits_a.shape[0], 1, *logits_a.shape[2:])
        if tuple(label.shape) != expected:
            raise ValueError(
                f"label must have shape {expected} to match logits of shape {tuple(logits_a.shape)}, "
                f"got {tuple(label.shape)}."
            )
        foreground_a = 1.0 - torch.softmax(logits_a, dim=1)[:, :1]
        foreground_b = 1.0 - torch.softmax(logits_b, dim=1)[:, :1]
        target = (label > 0).to(foreground_a.dtype)
        mask = (foreground_a.detach() >= self.threshold) ^ (foreground_b.detach() >= self.threshold)
        squared_error = (foreground_a - target) ** 2 + (foreground_b - target) ** 2
        loss_map = torch.where(mask, squared_error, 0.0)
        return reduce_voxel_map(loss_map, self.reduction, mask)


class PredictionConsistencyLoss(_Loss):
    """
    Disagreement of two networks' class distributions, ``L = mean(1 - cos(p_a, p_b))``, with ``p = softmax(z)`` and
    the cosine taken over the class axis at every voxel. Both networks receive gradient; detach one argument to
    train only the other.

    After Wang et al. (2023), MCF: Mutual Correction Framework for Semi-Supervised Medical Image Segmentation,
    CVPR 2023, as used in the training recipe of Lu et al. (2025), Knowledge-Based Systems (arXiv 2509.13084).
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        """
        Args:
            reduction: ``"mean"`` (mean over voxels), ``"sum"`` (sum over voxels) or ``"none"`` (the per-voxel map
                ``1 - cos``, shape (B, 1, *spatial)).

        Raises:
            ValueError: when ``reduction`` is not one of "mean", "sum", "none".
        """
        reduction = check_reduction(reduction)
        super().__init__(reduction=reduction)

    def forward(self, logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits_a: logits of network A, shape (B, C, *spatial), C >= 2 (softmax over dim 1).
            logits_b: logits of network B, same shape as ``logits_a``.

        Returns:
            a 0-dim tensor for ``reduction`` "mean" and "sum"; the per-voxel map (B, 1, *spatial) for "none".

        Raises:
            ValueError: when the logits' shapes differ or are not (B, C, *spatial) with C >= 2.
        """
        check_logits_pair(logits_a, logits_b)
        probs_a, probs_b = torch.softmax(logits_a, dim=1), torch.softmax(logits_b, dim=1)
        # written out rather than F.cosine_similarity, which is far slower over the channel axis on CPU; the norm of
        # a probability vector is at least 1 / sqrt(C), so the division is safe
        norms = (probs_a.square().sum(dim=1) * probs_b.square().sum(dim=1)).sqrt()
        cosine = (probs_a * probs_b).sum(dim=1) / norms
        loss_map = (1.0 - cosine).unsqueeze(1)
        return reduce_voxel_map(loss_map, self.reduction)
