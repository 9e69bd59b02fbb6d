"""Argument and shape checks and the voxel-map reduction that every loss of the package shares."""

from __future__ import annotations

import torch
from monai.utils import LossReduction

from semiseg.losses.distributed import global_mean_divisor

__all__ = ["check_logits_pair", "check_reduction", "reduce_voxel_map"]


def check_reduction(reduction: LossReduction | str) -> str:
    """The value of ``reduction`` as a string, or a ValueError naming the accepted ones."""
    try:
        return LossReduction(reduction).value
    except ValueError:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}.") from None


def check_logits_pair(
    first: torch.Tensor, second: torch.Tensor, names: tuple[str, str] = ("logits_a", "logits_b")
) -> None:
    """Raise a ValueError unless both logits are (B, C, *spatial) with C >= 2 and of the same shape."""
    if first.ndim < 3 or first.shape[1] < 2:
        raise ValueError(f"{names[0]} must have shape (B, C, *spatial) with C >= 2 classes, got {tuple(first.shape)}.")
    if first.shape != second.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(first.shape)} and {tuple(second.shape)}."
        )


def reduce_voxel_map(loss_map: torch.Tensor, reduction: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce a per-voxel loss map (B, 1, *spatial): "none" returns it, "sum" sums it, "mean" averages it.

    With ``mask`` (bool, same shape; the map is zero outside it) "mean" is the mean over the masked voxels, and 0
    (still connected to the graph) when the mask is empty; inside ``global_batch`` of a data-parallel run it is
    divided so that DDP's average of the processes' values is the mean over the masked voxels of all processes.
    """
    if reduction == LossReduction.MEAN.value:
        return loss_map.mean() if mask is None else loss_map.sum() / global_mean_divisor(mask.sum())
    if reduction == LossReduction.SUM.value:
        return loss_map.sum()
    return loss_map
