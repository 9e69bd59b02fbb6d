"""What the bundle configs call: where the bundle is, its data (``BundleData``: the datalist read once, also when
MONAI Label hands it only labeled pairs), this process's device and allocator settings, its sliding-window geometry.
(The training length is the trainer's: ``semiseg.engines.RunLength``.)"""

from __future__ import annotations

from semiseg.arguments import flag

from .allocator import ALLOCATOR_ENV, keep_freed_memory
from .data import BundleData
from .dataset import DatasetNotFoundError, image_datalist, require_cases
from .device import conv_memory_format, process_device
from .root import default_bundle_root
from .sliding_window import overlap_for_stride
from .unlabeled import extra_unlabeled_images, images_in_folders

__all__ = [
    "ALLOCATOR_ENV",
    "BundleData",
    "conv_memory_format",
    "DatasetNotFoundError",
    "default_bundle_root",
    "extra_unlabeled_images",
    "flag",
    "image_datalist",
    "images_in_folders",
    "keep_freed_memory",
    "overlap_for_stride",
    "process_device",
    "require_cases",
]
