"""Figures people look at instead of reading numbers: slices of image, ground truth and prediction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_segmentation_slices"]


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
    fig, axes = plt.subplots(len(cases), num_slices, figsize=(3 * num_slices, 3 * len(cases)), squeeze=False)
    for row, (name, image, label, pred) in enumerate(cases):
        reference = label if label is not None and label.any() else pred
        zs = np.nonzero(reference.any(axis=(0, 1)))[0]
        lo, hi = (zs.min(), zs.max()) if zs.size else (0, image.shape[2] - 1)
        for col, z in enumerate(np.linspace(lo, hi, num_slices + 2)[1:-1].round().astype(int)):
            ax = axes[row, col]
            ax.imshow(image[:, :, z].T, cmap="gray", origin="lower")
            if label is not None and label[:, :, z].any():
                ax.contour(label[:, :, z].T > 0, levels=[0.5], colors="lime", linewidths=0.8)
            if pred[:, :, z].any():
                ax.contour(pred[:, :, z].T > 0, levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(f"{name} z={z}", fontsize=8)
            ax.axis("off")
    fig.suptitle("green: ground truth, red: prediction", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
