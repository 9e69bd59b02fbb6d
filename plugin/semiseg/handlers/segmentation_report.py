"""Per-case segmentation metrics in millimetres, written as CSV, JSON summary, a printed table and a PNG.

Surface distances come in two conventions, reported side by side under distinct names so that nobody compares one
with the other:

- ``hd95_monai`` / ``asd_monai``: MONAI's ``compute_hausdorff_distance(percentile=95)`` (the larger of the two
  directed 95th percentiles) and ``compute_average_surface_distance(symmetric=True)`` (the mean over the surface
  voxels of both masks, each to the other's surface).
- ``hd95_medpy`` / ``asd_medpy``: medpy's ``medpy.metric.binary.hd95`` (the 95th percentile of both directed
  surface distances pooled) and ``asd`` (the mean distance from the prediction's surface to the reference's, one
  direction). These are the figures of the semi-supervised LA / Pancreas-CT / BraTS papers (UA-MT, SASSNet, DTC,
  MC-Net and their successors all evaluate with medpy), which report them in voxels.

Both come from one call of MONAI's ``get_edge_surface_distance`` per class (the same surface voxels and Euclidean
distance transform as medpy's); distances are in mm when the label carries its spacing, in voxels otherwise, and the
column names say which (``hd95_medpy_mm_<class>`` or ``hd95_medpy_vox_<class>``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice, compute_iou
from monai.metrics.utils import get_edge_surface_distance
from monai.utils import min_version, optional_import

from semiseg.visualize import axial_slices, plot_slice_rows

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = [
    "SegmentationReportHandler",
    "METRIC_NAMES",
    "DISTANCE_METRICS",
    "segmentation_metrics",
    "surface_distance_metrics",
]

DISTANCE_METRICS = ("hd95_monai", "asd_monai", "hd95_medpy", "asd_medpy")
METRIC_NAMES = ("dice", "jaccard", *DISTANCE_METRICS)


def segmentation_metrics(pred: torch.Tensor, label: torch.Tensor, spacing: Any = None) -> dict[str, list[float]]:
    """Dice, Jaccard and the surface distances of one case in both conventions (see the module docstring).

    Args:
        pred: one-hot prediction (C, *spatial).
        label: one-hot ground truth (C, *spatial).
        spacing: voxel size in mm (distances in mm); None measures in voxels.

    Returns:
        each name of ``METRIC_NAMES`` mapped to one value per foreground class (background excluded); a distance is
        NaN when the prediction or the reference of that class is empty.
    """
    y_pred, y = pred[None].float(), label[None].float()
    sp = None if spacing is None else [float(s) for s in spacing]
    values: dict[str, list[float]] = {
        "dice": [float(x) for x in compute_dice(y_pred, y, include_background=False).reshape(-1)],
        "jaccard": [float(x) for x in compute_iou(y_pred, y, include_background=False).reshape(-1)],
        **{name: [] for name in DISTANCE_METRICS},
    }
    for c in range(1, pred.shape[0]):
        for name, value in surface_distance_metrics(pred[c], label[c], sp, class_index=c).items():
            values[name].append(value)
    return values


def surface_distance_metrics(
    pred: torch.Tensor, label: torch.Tensor, spacing: list[float] | None = None, class_index: int = -1
) -> dict[str, float]:
    """HD95 and ASD of one binary mask pair ``(*spatial)`` in MONAI's and in medpy's conventions.

    The directed distances come from MONAI's ``get_edge_surface_distance``; NaN when either mask is empty.
    """
    _, (pred_to_ref, ref_to_pred), _ = get_edge_surface_distance(
        pred.float(), label.float(), spacing=spacing, symmetric=True, class_index=class_index
    )
    pred_to_ref, ref_to_pred = pred_to_ref.double().reshape(-1), ref_to_pred.double().reshape(-1)
    if not (bool(pred.any()) and bool(label.any())) or pred_to_ref.numel() == 0 or ref_to_pred.numel() == 0:
        return dict.fromkeys(DISTANCE_METRICS, math.nan)
    pooled = torch.cat([pred_to_ref, ref_to_pred])
    return {
        "hd95_monai": float(torch.maximum(torch.quantile(pred_to_ref, 0.95), torch.quantile(ref_to_pred, 0.95))),
        "asd_monai": float(pooled.mean()),
        "hd95_medpy": float(torch.quantile(pooled, 0.95)),
        "asd_medpy": float(pred_to_ref.mean()),
    }


class SegmentationReportHandler:
    """Evaluator handler: metrics per case with the image spacing, then CSV, JSON summary, table and PNG.

    Expects decollated evaluator output items with one-hot ``pred`` and ``label`` (after ``AsDiscreted``) and the
    ``image``; spacing comes from the label's MetaTensor (``pixdim``), so distances are in mm.

    Args:
        output_dir: where ``metrics.csv``, ``summary.json`` and ``slices.png`` go.
        class_names: names of the foreground classes, for the column headers.
        plot_cases: how many cases the PNG shows, chosen by their Dice (the mean over the foreground classes) spread
            evenly from the worst to the best: 3 shows the worst, the median and the best case, each with its Dice
            in the title; 0 writes no PNG.
        name: logger name.
    """

    def __init__(
        self,
        output_dir: str,
        class_names: tuple[str, ...] = ("foreground",),
        plot_cases: int = 3,
        name: str = "semiseg.report",
    ) -> None:
        if plot_cases < 0:
            raise ValueError(f"plot_cases must be >= 0, got {plot_cases}.")
        self.output_dir = Path(output_dir)
        self.class_names = tuple(class_names)
        self.plot_cases = plot_cases
        self.logger = logging.getLogger(name)
        self.rows: list[dict[str, Any]] = []
        self._slices: list[list] = []  # per case (in row order): its axial slices, kept for the PNG

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.rows, self._slices = [], []

    def _collect(self, engine: Any) -> None:
        for item in engine.state.output:
            pred, label = item["pred"], item["label"]
            if pred.shape[0] != len(self.class_names) + 1:
                raise ValueError(
                    f"expected one-hot pred with {len(self.class_names) + 1} channels, got shape {tuple(pred.shape)}"
                )
            spacing = getattr(label, "pixdim", None)
            name = _case_name(item)
            row: dict[str, Any] = {"case": name}
            unit = "vox" if spacing is None else "mm"
            for metric, values in segmentation_metrics(pred, label, spacing).items():
                column = f"{metric}_{unit}" if metric in DISTANCE_METRICS else metric
                for cls, value in zip(self.class_names, values):
                    row[f"{column}_{cls}"] = value
            self.rows.append(row)
            if self.plot_cases:
                image = item["image"][0].detach().cpu().numpy()
                self._slices.append(axial_slices(image, _labels(label), _labels(pred)))

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean, std (over cases, NaN-skipping) and count of every metric column."""
        out: dict[str, dict[str, float]] = {}
        for key in self.rows[0] if self.rows else []:
            if key == "case":
                continue
            values = np.array([r[key] for r in self.rows], dtype=float)
            finite = values[np.isfinite(values)]
            out[key] = {
                "mean": float(finite.mean()) if finite.size else math.nan,
                "std": float(finite.std()) if finite.size else math.nan,
                "n": int(finite.size),
            }
        return out

    def _write(self, engine: Any) -> None:
        if not self.rows:
            self.logger.warning("no case was evaluated: nothing to report.")
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        summary = self.summary()
        (self.output_dir / "summary.json").write_text(
            json.dumps({"cases": len(self.rows), "metrics": summary}, indent=2) + "\n"
        )
        if self._slices:
            plot_slice_rows(self._plot_rows(), self.output_dir / "slices.png")
        self.logger.info("\n" + self.table(summary))

    def plotted_cases(self) -> list[tuple[int, str]]:
        """``(row index, role)`` of the cases the PNG shows, worst first: ``plot_cases`` cases spread evenly over the
        ranking by Dice (cases whose Dice is NaN, an empty ground truth, are shown only when no other is left)."""
        dice = [_mean_dice(row) for row in self.rows]
        ranked = sorted((i for i, d in enumerate(dice) if math.isfinite(d)), key=lambda i: dice[i])
        ranked = ranked or list(range(len(self.rows)))
        if not ranked or not self.plot_cases:
            return []
        ranks = sorted(set(np.linspace(0, len(ranked) - 1, self.plot_cases).round().astype(int).tolist()))
        roles = {0: "worst", len(ranked) - 1: "best"}
        if self.plot_cases == 3 and len(ranks) == 3:
            roles[ranks[1]] = "median"
        return [(ranked[r], roles.get(r, f"rank {r + 1}/{len(ranked)}")) for r in ranks]

    def _plot_rows(self) -> list[tuple[str, list]]:
        rows = []
        for index, role in self.plotted_cases():
            row = self.rows[index]
            rows.append((f"{role}: {row['case']} Dice {_mean_dice(row):.3f}", self._slices[index]))
        return rows

    def table(self, summary: dict[str, dict[str, float]]) -> str:
        """The summary as a Markdown table: one row per metric and class, mean +- std."""
        lines = [f"| metric ({len(self.rows)} cases) | mean | std |", "|---|---|---|"]
        for key, stats in summary.items():
            lines.append(f"| {key} | {stats['mean']:.4f} | {stats['std']:.4f} |")
        return "\n".join(lines)


def _mean_dice(row: dict[str, Any]) -> float:
    values = [v for k, v in row.items() if k.startswith("dice_") and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def _labels(one_hot: torch.Tensor) -> np.ndarray:
    return one_hot.detach().cpu().argmax(0).numpy().astype(np.uint8)


def _case_name(item: dict) -> str:
    meta = getattr(item.get("image"), "meta", {}) or {}
    source = meta.get("filename_or_obj", "case")
    name = Path(str(source)).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".h5"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
