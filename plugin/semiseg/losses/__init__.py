"""Loss terms of dual-network semi-supervised segmentation, with MONAI loss conventions.

Every loss is a ``torch.nn.modules.loss._Loss`` taking logits (B, C, *spatial), C >= 2, and a ``reduction`` in
"mean", "sum", "none".
"""

from __future__ import annotations

from .consistency import CrossReliableSupervisionLoss, PredictionConsistencyLoss
from .copy_paste import CopyPasteBatch, CopyPasteSupervision, cuboid_mask
from .cross_pseudo import CrossPseudoSupervisionLoss
from .entropy_filter import (
    EntropyFilteredLoss,
    ReliabilityMasks,
    batch_percentile,
    class_percentiles,
    compute_reliability,
    voxel_entropy,
)
from .prototype import PrototypeContrastiveLoss
from .reliability import ReliabilityEstimator
from .uncertainty import KLUncertaintyLoss

__all__ = [
    "CopyPasteBatch",
    "CopyPasteSupervision",
    "CrossPseudoSupervisionLoss",
    "CrossReliableSupervisionLoss",
    "EntropyFilteredLoss",
    "KLUncertaintyLoss",
    "PredictionConsistencyLoss",
    "PrototypeContrastiveLoss",
    "ReliabilityEstimator",
    "ReliabilityMasks",
    "batch_percentile",
    "class_percentiles",
    "compute_reliability",
    "cuboid_mask",
    "voxel_entropy",
]
