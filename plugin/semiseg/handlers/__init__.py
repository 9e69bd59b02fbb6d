"""MONAI-style handlers of the project: run-wide progress bar, segmentation report, full-state checkpoints."""

from __future__ import annotations

from .progress import EpochCompleteFilter, ProgressBarHandler
from .segmentation_report import (
    DISTANCE_METRICS,
    METRIC_NAMES,
    SegmentationReportHandler,
    segmentation_metrics,
    surface_distance_metrics,
)
from .training_state import RandomState, TrainingStateHandler, find_resume_checkpoint

__all__ = [
    "DISTANCE_METRICS",
    "EpochCompleteFilter",
    "METRIC_NAMES",
    "ProgressBarHandler",
    "RandomState",
    "SegmentationReportHandler",
    "TrainingStateHandler",
    "find_resume_checkpoint",
    "segmentation_metrics",
    "surface_distance_metrics",
]
