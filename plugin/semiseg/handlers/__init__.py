"""MONAI-style handlers of the project: run-wide progress bar, segmentation report."""

from __future__ import annotations

from .progress import ProgressBarHandler
from .segmentation_report import METRIC_NAMES, SegmentationReportHandler, segmentation_metrics

__all__ = ["METRIC_NAMES", "ProgressBarHandler", "SegmentationReportHandler", "segmentation_metrics"]
