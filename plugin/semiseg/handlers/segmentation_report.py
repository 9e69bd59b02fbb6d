"""Per-case segmentation metrics in millimetres, written as CSV, JSON summary, a printed table and a PNG."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance, compute_iou
from monai.utils import min_version, optional_import

from semiseg.visualize import plot_segmentation_slices

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["SegmentationReportHandler", "METRIC_NAMES", "segmentation_metrics"]

METRIC_NAMES = ("dice", "jaccard", "hd95", "asd")


def segmentation_metrics(pred: torch.Tensor, label: torch.Tensor, spacing: Any = None) -> dict[str, list[float]]:
    """Dice, Jaccard, 95 % Hausdorff distance and average (symmetric) surface distance of one case.

    Args:
        pred: one-hot prediction (C, *spatial).
        label: one-hot ground truth (C, *spatial).
        spacing: voxel size in mm (distances in mm); None measures in voxels.

    Returns:
        each metric name mapped to one value per foreground class (background excluded).
    """
    y_pred, y = pred[None].float(), label[None].float()
    sp = None if spacing is None else [float(s) for s in spacing]
    values = {
        "dice": compute_dice(y_pred, y, include_background=False),
        "jaccard": compute_iou(y_pred, y, include_background=False),
        "hd95": compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95, spacing=sp),
        "asd": compute_average_surface_distance(y_pred, y, include_background=False, symmetric=True, spacing=sp),
    }
    return {k: [float(x) for x in v.reshape(-1)] for k, v in values.items()}


class SegmentationReportHandler:
    """Evaluator handler: metrics per case with the image spacing, then CSV, JSON summary, table and PNG.

    Expects decollated evaluator output items with one-hot ``pred`` and ``label`` (after ``AsDiscreted``) and the
    ``image``; spacing comes from the label's MetaTensor (``pixdim``), so distances are in mm.

    Args:
        output_dir: where ``metrics.csv``, ``summary.json`` and ``slices.png`` go.
        class_names: names of the foreground classes, for the column headers.
        plot_cases: how many cases the PNG shows.
        name: logger name.
    """

    def __init__(
        self,
        output_dir: str,
        class_names: tuple[str, ...] = ("foreground",),
        plot_cases: int = 4,
        name: str = "semiseg.report",
    ) -> None:
        if plot_cases < 0:
            raise ValueError(f"plot_cases must be >= 0, got {plot_cases}.")
        self.output_dir = Path(output_dir)
        self.class_names = tuple(class_names)
        self.plot_cases = plot_cases
        self.logger = logging.getLogger(name)
        self.rows: list[dict[str, Any]] = []
        self._slices: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []

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
            for metric, values in segmentation_metrics(pred, label, spacing).items():
                for cls, value in zip(self.class_names, values):
                    row[f"{metric}_{cls}"] = value
            self.rows.append(row)
            if len(self._slices) < self.plot_cases:
                image = item["image"][0].detach().cpu().numpy()
                self._slices.append((name, image, _labels(label), _labels(pred)))

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
            plot_segmentation_slices(self._slices, self.output_dir / "slices.png")
        self.logger.info("\n" + self.table(summary))

    def table(self, summary: dict[str, dict[str, float]]) -> str:
        """The summary as a Markdown table: one row per metric and class, mean +- std."""
        lines = [f"| metric ({len(self.rows)} cases) | mean | std |", "|---|---|---|"]
        for key, stats in summary.items():
            unit = " (mm)" if key.startswith(("hd95", "asd")) else ""
            lines.append(f"| {key}{unit} | {stats['mean']:.4f} | {stats['std']:.4f} |")
        return "\n".join(lines)


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
