"""Training engines, the method's objective and loss-weight schedules."""

from __future__ import annotations

from .joint_forward import joint_forward
from .objective import TEACHER_MODES, DualNetworkObjective
from .pseudo_label_pass import PSEUDO_LABEL_PASSES, no_dropout_logits
from .run_length import RunLength, scale_count, total_iterations
from .schedules import ConstantSchedule, GaussianRampUp, LinearRampUp
from .trainer import STUDENT_VIEW_KEY, NonFiniteLossError, SemiSupervisedTrainer

__all__ = [
    "PSEUDO_LABEL_PASSES",
    "TEACHER_MODES",
    "ConstantSchedule",
    "DualNetworkObjective",
    "GaussianRampUp",
    "LinearRampUp",
    "NonFiniteLossError",
    "RunLength",
    "SemiSupervisedTrainer",
    "STUDENT_VIEW_KEY",
    "joint_forward",
    "no_dropout_logits",
    "scale_count",
    "total_iterations",
]
