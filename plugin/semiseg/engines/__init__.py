"""Training engines, the method's objective and loss-weight schedules."""

from __future__ import annotations

from .objective import TEACHER_MODES, DualNetworkObjective
from .run_length import RunLength, scale_count, total_iterations
from .schedules import ConstantSchedule, GaussianRampUp, LinearRampUp
from .trainer import NonFiniteLossError, SemiSupervisedTrainer

__all__ = [
    "TEACHER_MODES",
    "ConstantSchedule",
    "DualNetworkObjective",
    "GaussianRampUp",
    "LinearRampUp",
    "NonFiniteLossError",
    "RunLength",
    "SemiSupervisedTrainer",
    "scale_count",
    "total_iterations",
]
