"""Figures people look at instead of reading numbers: slices of image, ground truth and prediction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["axial_slices", "plot_segmentation_slices", "plot_slice_rows"]

#: one axial slice: (z, image (X, Y), label (X, Y) or None, prediction (X, Y)); label maps hold class indices
Slice = tuple[int, np.ndarray, "np.ndarray | None", np.ndarray]


def axial_slices(image: np.ndarray, label: np.ndarray | None, pred: np.ndarray, num_slices: int = 3) -> list[Slice]:
    """``num_slices`` axial slices of one case, spread over the extent of the ground truth (or the prediction).

    Args:
        image: (X, Y, Z) intensities.
        label: (X, Y, Z) class indices, or None.
        pred: (X, Y, Z) class indices.
        num_slices: how many slices.

    Returns:
        ``(z, image[:, :, z], label[:, :, z], pred[:, :, z])`` per slice (copies, so the volumes can be freed).
    """
    if num_slices < 1:
        raise ValueError(f"num_slices must be >= 1, got {num_slices}.")
    reference = label if label is not None and label.any() else pred
    zs = np.nonzero(reference.any(axis=(0, 1)))[0]
    lo, hi = (zs.min(), zs.max()) if zs.size else (0, image.shape[2] - 1)
    picks = np.linspace(lo, hi, num_slices + 2)[1:-1].round().astype(int)
    return [
        (int(z), image[:, :, z].copy(), None if label is None else label[:, :, z].copy(), pred[:, :, z].copy())
        for z in picks
    ]


def plot_slice_rows(rows: Sequence[tuple[str, Sequence[Slice]]], path: str | Path) -> Path:
    """One row per case (its title, then its slices from :func:`axial_slices`): ground truth green, prediction red."""
    if not rows:
        raise ValueError("no case to plot.")
    num_slices = max(len(slices) for _, slices in rows)
    fig, axes = plt.subplots(len(rows), num_slices, figsize=(3 * num_slices, 3 * len(rows)), squeeze=False)
    for row, (title, slices) in enumerate(rows):
        for col in range(num_slices):
            ax = axes[row, col]
            ax.axis("off")
            if col >= len(slices):
                continue
            z, image, label, pred = slices[col]
            ax.imshow(image.T, cmap="gray", origin="lower")
            if label is not None and label.any():
                ax.contour(label.T > 0, levels=[0.5], colors="lime", linewidths=0.8)
            if pred.any():
                ax.contour(pred.T > 0, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{title}\nz={z}" if col == 0 else f"z={z}", fontsize=8, loc="left" if col == 0 else "center")
    fig.suptitle("green: ground truth, red: prediction", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_segmentation_slices(
    cases: Sequence[tuple[str, np.ndarray, np.ndarray | None, np.ndarray]], path: str | Path, num_slices: int = 3
) -> Path:
    """One row per case: axial slices of the image with the ground truth (green) and prediction (red) outlined.

    Args:
        cases: (name, image (X, Y, Z), label (X, Y, Z) or None, prediction (X, Y, Z)) per case; label maps hold
            class indices.
        path: the PNG to write.
        num_slices: slices per case, spread over the extent of the ground truth (or the prediction).
    """
    if not cases:
        raise ValueError("no case to plot.")
    rows = [(name, axial_slices(image, label, pred, num_slices)) for name, image, label, pred in cases]
    return plot_slice_rows(rows, path)
