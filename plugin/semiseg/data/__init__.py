"""Datalists, synthetic phantoms, dataset checks and release-preparation helpers."""

from __future__ import annotations

from .checks import DatasetError, DatasetProblem, assert_valid_dataset, assert_valid_test_cases, check_cases
from .datalist import SemiSupervisedDatalist, load_semisupervised_datalist, unlabeled_from_images
from .phantoms import PHANTOM_KINDS, default_phantom_geometry, make_phantom, phantom_case_seed, write_phantom_dataset
from .release import read_case_list, save_volume, write_datalist

__all__ = [
    "DatasetError",
    "DatasetProblem",
    "PHANTOM_KINDS",
    "SemiSupervisedDatalist",
    "assert_valid_dataset",
    "assert_valid_test_cases",
    "check_cases",
    "default_phantom_geometry",
    "load_semisupervised_datalist",
    "make_phantom",
    "phantom_case_seed",
    "read_case_list",
    "save_volume",
    "unlabeled_from_images",
    "write_datalist",
    "write_phantom_dataset",
]
