"""Image lists of the bundle configs (inference input, required lists), with errors that say how to get the data."""

from __future__ import annotations

import glob
import os

__all__ = ["DatasetNotFoundError", "image_datalist", "require_cases"]

IMAGE_PATTERNS = ("*.nii.gz", "*.nii", "*.nrrd", "*.mha", "*.mhd")


class DatasetNotFoundError(FileNotFoundError):
    """The bundle's dataset is not where the config says."""


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
