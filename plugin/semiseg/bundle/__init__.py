"""Small helpers that the bundle configs call: where the bundle is, its data (also when MONAI Label hands it only
labeled pairs), its sliding-window geometry. (The training length is the trainer's: ``semiseg.engines.RunLength``.)"""

from __future__ import annotations

from semiseg.arguments import flag

from .dataset import DatasetNotFoundError, image_datalist, load_bundle_datalist, require_cases
from .root import default_bundle_root
from .sliding_window import overlap_for_stride
from .unlabeled import extra_unlabeled_images, held_out_cases, images_in_folders, unlabeled_cases, validation_cases

__all__ = [
    "DatasetNotFoundError",
    "default_bundle_root",
    "extra_unlabeled_images",
    "flag",
    "held_out_cases",
    "image_datalist",
    "images_in_folders",
    "load_bundle_datalist",
    "overlap_for_stride",
    "require_cases",
    "unlabeled_cases",
    "validation_cases",
]
