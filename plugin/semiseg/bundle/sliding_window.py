"""Sliding-window geometry of the benchmark protocols expressed as MONAI ``SlidingWindowInferer`` overlaps."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["overlap_for_stride"]


def overlap_for_stride(roi_size: Sequence[int], stride: Sequence[int]) -> list[float]:
    """Per-axis ``overlap`` for which MONAI's sliding window steps exactly ``stride`` voxels.

    The LA literature tests with a 112x112x80 window moved by 18x18x4 voxels; MONAI takes an overlap fraction and
    steps ``int(roi * (1 - overlap))`` voxels, so the fraction is nudged to land on the integer stride.

    Raises:
        ValueError: when the lengths differ or a stride is not in [1, roi].
    """
    if len(roi_size) != len(stride):
        raise ValueError(f"roi_size {list(roi_size)} and stride {list(stride)} must have the same length.")
    overlaps = []
    for roi, step in zip(roi_size, stride):
        if not 1 <= step <= roi:
            raise ValueError(f"stride {step} must be between 1 and the window size {roi}.")
        overlap = 1.0 - (step + 0.5) / roi
        overlap = max(overlap, 0.0)
        if int(roi * (1.0 - overlap)) != step:
            raise ValueError(f"no overlap gives a stride of {step} for a window of {roi}.")
        overlaps.append(overlap)
    return overlaps
