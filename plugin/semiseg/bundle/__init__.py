"""Small helpers that the bundle configs call: where the bundle is, its data, its sliding-window geometry."""

from __future__ import annotations

from .dataset import DatasetNotFoundError, image_datalist, load_bundle_datalist, require_cases
from .flags import flag
from .root import default_bundle_root
from .sliding_window import overlap_for_stride

__all__ = [
    "DatasetNotFoundError",
    "default_bundle_root",
    "flag",
    "image_datalist",
    "load_bundle_datalist",
    "overlap_for_stride",
    "require_cases",
]
