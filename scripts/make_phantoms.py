"""Write a synthetic phantom dataset (the embedded default of the demo bundles), optionally with a preview PNG.

Usage (from the repository root)::

    python scripts/make_phantoms.py --out_dir /tmp/la_phantoms [--kind la] [--num_train 40] [--num_test 10] \
        [--seed 0] [--shape 80,80,48] [--spacing 1.25,1.25,2.5] [--preview /tmp/la_phantoms.png]

Generation is skipped when ``out_dir`` already holds the same dataset (see
:func:`semiseg.data.phantoms.write_phantom_dataset`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import fire
import nibabel as nib
import numpy as np

from semiseg.data.phantoms import write_phantom_dataset

__all__ = ["make_phantoms", "save_preview"]


def save_preview(datalist: str | Path, png: str | Path, num_cases: int = 4) -> Path:
    """Save mid slices (axial, coronal, sagittal) of the first training cases with the label contour in red.

    Args:
        datalist: ``datalist.json`` written by :func:`write_phantom_dataset` (paths relative to its folder).
        png: output image file.
        num_cases: how many training cases to show, one per row.
    """
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(datalist).parent
    cases = json.loads(Path(datalist).read_text())["training"][:num_cases]
    figure, axes = plt.subplots(len(cases), 3, figsize=(9, 3 * len(cases)), squeeze=False)
    for row, case in enumerate(cases):
        image_file = nib.load(str(root / case["image"]))
        image = np.asarray(image_file.dataobj, dtype=np.float32)
        label = np.asarray(nib.load(str(root / case["label"])).dataobj)
        spacing = image_file.header.get_zooms()[:3]
        centre = np.round(np.argwhere(label > 0).mean(0)).astype(int) if label.any() else np.array(label.shape) // 2
        low, high = np.percentile(image, (0.5, 99.5))
        views = (
            ("axial", image[:, :, centre[2]], label[:, :, centre[2]], spacing[1] / spacing[0]),
            ("coronal", image[:, centre[1], :], label[:, centre[1], :], spacing[2] / spacing[0]),
            ("sagittal", image[centre[0], :, :], label[centre[0], :, :], spacing[2] / spacing[1]),
        )
        for column, (name, plane, mask, aspect) in enumerate(views):
            axis = axes[row, column]
            axis.imshow(plane.T, cmap="gray", origin="lower", vmin=low, vmax=high, aspect=aspect)
            if mask.any():
                axis.contour(mask.T, levels=[0.5], colors="red", linewidths=0.8)
            axis.set_title(f"{Path(case['image']).name.split('.')[0]} {name}", fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110)
    plt.close(figure)
    return png


def make_phantoms(
    out_dir: str,
    kind: str = "la",
    num_train: int = 40,
    num_test: int = 10,
    seed: int = 0,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    preview: str | None = None,
) -> str:
    """Write (or reuse) a phantom dataset and print the path of its datalist.

    Args:
        out_dir: output folder.
        kind: ``la``, ``pancreas`` or ``brats``.
        num_train: number of training cases, all labeled.
        num_test: number of test cases.
        seed: dataset seed.
        shape: volume size X,Y,Z in voxels; default per kind (80,80,48).
        spacing: voxel size X,Y,Z in mm; default per kind.
        preview: optional PNG file for mid slices of the first training cases.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    datalist = write_phantom_dataset(
        out_dir,
        num_train=num_train,
        num_test=num_test,
        kind=kind,
        seed=seed,
        shape=tuple(shape) if shape is not None else None,
        spacing=tuple(spacing) if spacing is not None else None,
    )
    if preview:
        print(f"preview: {save_preview(datalist, preview)}")
    return str(datalist)


if __name__ == "__main__":
    fire.Fire(make_phantoms)
