"""Datalist loading for the bundle configs, with errors that say how to get the data."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from semiseg.data.datalist import SemiSupervisedDatalist, load_semisupervised_datalist

__all__ = ["DatasetNotFoundError", "image_datalist", "load_bundle_datalist", "require_cases"]

IMAGE_PATTERNS = ("*.nii.gz", "*.nii", "*.nrrd", "*.mha", "*.mhd")


class DatasetNotFoundError(FileNotFoundError):
    """The bundle's dataset is not where the config says."""


def load_bundle_datalist(
    datalist: str, dataset_dir: str, num_labeled: int | None, bundle: str = "la"
) -> SemiSupervisedDatalist:
    """Load the bundle's datalist, or stop at once with a message that says how to prepare the data or run the demo.

    Args:
        datalist: path of the MSD-style datalist JSON.
        dataset_dir: folder the datalist's relative paths start from.
        num_labeled: how many labeled training cases keep their labels.
        bundle: the bundle's name, used in the message (``la``, ``pancreas``, ``brats``).
    """
    if not Path(datalist).is_file():
        configs = f"bundles/{bundle}/configs"
        raise DatasetNotFoundError(
            f"no datalist at {datalist!r} (dataset_dir={dataset_dir!r}).\n"
            f"  To train on the {bundle.upper()} benchmark, prepare it first:\n"
            f"    python scripts/prepare_{bundle}.py --src <release folder> --dst <data folder>\n"
            f"  then run with --dataset_dir <data folder> --datalist <data folder>/datalist.json\n"
            f"  (see bundles/{bundle}/docs/README.md). To try the method without data, run the phantom demo:\n"
            f"    python -m monai.bundle run --config_file \"['{configs}/train.json','{configs}/demo.json']\""
        )
    return load_semisupervised_datalist(datalist, dataset_dir=dataset_dir, num_labeled=num_labeled)


def image_datalist(input_dir: str, patterns: tuple[str, ...] = IMAGE_PATTERNS) -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for every image file in ``input_dir`` (inference input), sorted by name.

    Raises:
        DatasetNotFoundError: when the folder does not exist or holds no image.
    """
    if not os.path.isdir(input_dir):
        raise DatasetNotFoundError(f"inference input folder {input_dir!r} does not exist (set --input_dir).")
    files = sorted({f for p in patterns for f in glob.glob(os.path.join(input_dir, p))})
    if not files:
        raise DatasetNotFoundError(f"no image ({', '.join(patterns)}) in {input_dir!r} (set --input_dir).")
    return [{"image": f} for f in files]


def require_cases(cases: list[dict], role: str, datalist: str) -> list[dict]:
    """Return ``cases``, or raise a clear error when the datalist gave none for this ``role`` (e.g. ``test``)."""
    if not cases:
        raise DatasetNotFoundError(f"the datalist {datalist!r} lists no {role} case: add a {role!r} list to it.")
    return cases
