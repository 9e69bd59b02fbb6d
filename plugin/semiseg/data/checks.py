"""Validation of a dataset before training: every problem found, reported at once with the case and the file.

A run that stops after an hour on the 57th case because its label has another shape, or because a download was cut
short, wastes the hour; these checks read every file once up front and list all that is wrong:

- the entry has the keys it needs (``image``, and ``label`` for labeled cases);
- each file exists and can be read (nibabel for NIfTI, MONAI's ``LoadImage`` for other formats); a truncated or
  corrupt file is reported as ``cannot read <file>: <reason>``, never as a traceback;
- image and label agree in spatial shape, voxel spacing (relative tolerance 1e-3) and orientation
  (``nibabel.aff2axcodes`` of their affines);
- label values are integers in ``[0, num_classes)``; the image holds no NaN or infinity;
- the labeled list is not empty (an empty unlabeled list is allowed, with a warning: training is then supervised).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from semiseg.arguments import is_integer

from .datalist import SemiSupervisedDatalist

__all__ = ["DatasetError", "DatasetProblem", "assert_valid_dataset", "assert_valid_test_cases", "check_cases"]

logger = logging.getLogger(__name__)

SPACING_RTOL = 1e-3
"""Relative tolerance when image and label voxel spacings are compared."""

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass(frozen=True)
class DatasetProblem:
    """One thing wrong with a dataset.

    Attributes:
        case: which case, e.g. ``"labeled la_phantom_003"`` (list name and image file name).
        file: the file concerned, or ``""`` when the problem is not about one file.
        message: what is wrong.
    """

    case: str
    file: str
    message: str

    def __str__(self) -> str:
        if self.file and self.file not in self.message:
            return f"{self.case}: {self.file}: {self.message}"
        return f"{self.case}: {self.message}"


class DatasetError(ValueError):
    """The dataset has problems; ``problems`` lists them all and the message shows each on its own line."""

    def __init__(self, problems: Sequence[DatasetProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in the dataset:\n{lines}")


@dataclass
class _Volume:
    shape: tuple[int, ...]
    affine: np.ndarray
    data: np.ndarray | None


def check_cases(
    cases: Sequence[dict],
    num_classes: int,
    keys: Sequence[str] = ("image", "label"),
    check_values: bool = True,
    group: str = "case",
) -> list[DatasetProblem]:
    """Check every case of a list and return all problems found (an empty list when all is well).

    Args:
        cases: entries such as ``{"image": path, "label": path}``; an image may be a list of paths (channels).
        num_classes: number of classes, background included; label values must lie in ``[0, num_classes)``.
        keys: keys each case must have; ``"label"`` among them also turns on the image/label comparisons.
        check_values: read the voxel values (labels in range, no NaN/Inf in images, readable to the end). Without
            it only the headers are read: much faster, but a file truncated after its header passes.
        group: name of the list, used in :attr:`DatasetProblem.case`.

    Raises:
        ValueError: when ``num_classes`` is below 2 or ``keys`` does not hold ``"image"``.
    """
    if not is_integer(num_classes) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (background included), got {num_classes!r}")
    if "image" not in keys:
        raise ValueError(f"keys must include 'image', got {tuple(keys)}")
    problems: list[DatasetProblem] = []
    for index, case in enumerate(cases):
        problems.extend(_check_case(case, index, num_classes, tuple(keys), check_values, group))
    return problems


def assert_valid_dataset(
    datalist: SemiSupervisedDatalist, num_classes: int, check_values: bool = True, check_test: bool = True
) -> None:
    """Check all lists of a semi-supervised datalist; raise one error that lists every problem.

    Labeled and validation cases need image and label; unlabeled cases need an image; test cases need an image and
    their label is checked where they have one. An empty unlabeled list only logs a warning (training then falls
    back to supervised learning).

    Args:
        datalist: the lists, e.g. from :func:`semiseg.data.load_semisupervised_datalist`.
        num_classes: number of classes, background included.
        check_values: read voxel values too (see :func:`check_cases`).
        check_test: check the test list as well.

    Raises:
        DatasetError: listing every problem found.
    """
    problems: list[DatasetProblem] = []
    if not datalist.labeled:
        problems.append(DatasetProblem("labeled", "", "the labeled list is empty: at least one labeled case is needed"))
    problems += check_cases(datalist.labeled, num_classes, ("image", "label"), check_values, "labeled")
    if not datalist.unlabeled:
        logger.warning("the unlabeled list is empty: training falls back to supervised learning on the labeled cases")
    problems += check_cases(datalist.unlabeled, num_classes, ("image",), check_values, "unlabeled")
    problems += check_cases(datalist.validation, num_classes, ("image", "label"), check_values, "validation")
    if check_test:
        problems += _test_problems(datalist.test, num_classes, check_values)
    if problems:
        raise DatasetError(problems)
    logger.info("dataset checked: %s, no problem found", datalist.summary())


def assert_valid_test_cases(cases: Sequence[dict], num_classes: int, check_values: bool = True) -> None:
    """Check the test cases alone (what evaluation reads): an image each, and its label where it has one.

    Raises:
        DatasetError: listing every problem found.
    """
    problems = _test_problems(cases, num_classes, check_values)
    if problems:
        raise DatasetError(problems)
    logger.info("test cases checked: %d, no problem found", len(cases))


def _test_problems(cases: Sequence[dict], num_classes: int, check_values: bool) -> list[DatasetProblem]:
    problems: list[DatasetProblem] = []
    for case in cases:
        keys = ("image", "label") if case.get("label") is not None else ("image",)
        problems += check_cases([case], num_classes, keys, check_values, "test")
    return problems


def _case_name(case: object, index: int, group: str) -> str:
    image = case.get("image") if isinstance(case, dict) else None
    if isinstance(image, (list, tuple)) and image:
        image = image[0]
    if isinstance(image, (str, os.PathLike)):
        name = os.path.basename(os.fspath(image))
        for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".h5"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        return f"{group} {name}"
    return f"{group} #{index}"


def _check_case(
    case: object, index: int, num_classes: int, keys: tuple[str, ...], check_values: bool, group: str
) -> list[DatasetProblem]:
    name = _case_name(case, index, group)
    if not isinstance(case, dict):
        return [DatasetProblem(name, "", f"entry must be a dict with keys {list(keys)}, got {type(case).__name__}")]
    problems = [DatasetProblem(name, "", f"no '{key}' in the entry") for key in keys if case.get(key) is None]
    if problems:
        return problems

    image_files = case["image"] if isinstance(case["image"], (list, tuple)) else [case["image"]]
    images = []
    for file in image_files:
        volume, problem = _load(name, file, check_values)
        if problem is not None:
            problems.append(problem)
            continue
        if len(volume.shape) not in (3, 4):
            problems.append(
                DatasetProblem(name, str(file), f"image must be 3D (or 3D + channels), got shape {volume.shape}")
            )
            continue
        if volume.data is not None and not np.all(np.isfinite(volume.data)):
            bad = int(np.size(volume.data) - np.count_nonzero(np.isfinite(volume.data)))
            problems.append(DatasetProblem(name, str(file), f"image has {bad} NaN or infinite voxel(s)"))
        images.append((str(file), volume))

    if "label" not in keys:
        return problems
    label_file = str(case["label"])
    label, problem = _load(name, label_file, check_values)
    if problem is not None:
        return problems + [problem]
    spatial = label.shape[:3]
    if len(label.shape) not in (3, 4) or (len(label.shape) == 4 and label.shape[3] != 1):
        problems.append(DatasetProblem(name, label_file, f"label must be a 3D volume, got shape {label.shape}"))
    elif label.data is not None:
        problems.extend(_check_label_values(name, label_file, label.data, num_classes))
    for image_file, image in images:
        if image.shape[:3] != spatial:
            problems.append(
                DatasetProblem(
                    name, label_file, f"label shape {spatial} differs from image shape {image.shape[:3]} ({image_file})"
                )
            )
        image_spacing, label_spacing = _spacing(image.affine), _spacing(label.affine)
        if not np.allclose(image_spacing, label_spacing, rtol=SPACING_RTOL, atol=0.0):
            problems.append(
                DatasetProblem(
                    name,
                    label_file,
                    f"label spacing {_fmt(label_spacing)} mm differs from image spacing {_fmt(image_spacing)} mm "
                    f"({image_file})",
                )
            )
        image_axes, label_axes = _orientation(image.affine), _orientation(label.affine)
        if image_axes != label_axes:
            problems.append(
                DatasetProblem(
                    name,
                    label_file,
                    f"label orientation {''.join(label_axes)} differs from image orientation {''.join(image_axes)} "
                    f"({image_file})",
                )
            )
    return problems


def _check_label_values(name: str, file: str, data: np.ndarray, num_classes: int) -> list[DatasetProblem]:
    finite = np.isfinite(data)
    if not np.all(finite):
        return [DatasetProblem(name, file, f"label has {int(data.size - finite.sum())} NaN or infinite voxel(s)")]
    values = np.unique(data)
    fractional = values[values != np.round(values)]
    if fractional.size:
        return [DatasetProblem(name, file, f"label values must be integers, found {_few(fractional)}")]
    outside = values[(values < 0) | (values >= num_classes)]
    if outside.size:
        return [
            DatasetProblem(
                name,
                file,
                f"label values must lie in [0, {num_classes}) for num_classes={num_classes}, found {_few(outside)}",
            )
        ]
    return []


def _load(name: str, file: object, read_data: bool) -> tuple[_Volume, None] | tuple[None, DatasetProblem]:
    """Read a volume's header (and its voxels when ``read_data``), or describe why it cannot be read."""
    if not isinstance(file, (str, os.PathLike)):
        return None, DatasetProblem(name, str(file), f"a path is expected, got {type(file).__name__}")
    path = os.fspath(file)
    if not os.path.exists(path):
        return None, DatasetProblem(name, path, "file not found")
    if not os.path.isfile(path):
        return None, DatasetProblem(name, path, "not a file")
    try:
        if path.endswith(_NIFTI_SUFFIXES):
            image = nib.load(path)
            data = np.asanyarray(image.dataobj) if read_data else None
            return _Volume(tuple(int(n) for n in image.shape), np.asarray(image.affine, dtype=np.float64), data), None
        from monai.transforms import LoadImage

        loaded = LoadImage(image_only=True)(path)
        data = np.asarray(loaded)
        return (
            _Volume(tuple(data.shape), np.asarray(loaded.affine, dtype=np.float64), data if read_data else None),
            None,
        )
    except Exception as error:  # any reader failure is reported, not raised: the run should list all problems
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, DatasetProblem(name, path, f"cannot read {path}: {type(error).__name__}: {reason}")


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def _orientation(affine: np.ndarray) -> tuple[str, ...]:
    try:
        return tuple(str(code) for code in nib.aff2axcodes(np.asarray(affine)))
    except Exception:  # a singular affine has no orientation
        return ("?", "?", "?")


def _fmt(values: np.ndarray) -> str:
    return "x".join(f"{v:g}" for v in values)


def _few(values: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(f"{v:g}" for v in values[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}]"
