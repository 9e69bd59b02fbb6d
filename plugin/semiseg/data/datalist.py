"""Labeled, unlabeled, validation and test lists of a semi-supervised run, read from an MSD-style datalist JSON.

The file follows the Medical Segmentation Decathlon layout that :func:`monai.data.load_decathlon_datalist` reads::

    {
        "training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}, {"image": "imagesTr/b.nii.gz"}],
        "unlabeled": [{"image": "extra/c.nii.gz"}],
        "validation": [{"image": "...", "label": "..."}],
        "test": [{"image": "...", "label": "..."}]
    }

The first ``num_labeled`` training entries that carry a label (file order, as the semi-supervised benchmarks count
"the first N cases") keep it; every other training entry, and every entry of the ``"unlabeled"`` list, is unlabeled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semiseg.arguments import is_integer

__all__ = [
    "SemiSupervisedDatalist",
    "load_semisupervised_datalist",
    "read_json_file",
    "split_datalist",
    "unlabeled_from_images",
]


@dataclass
class SemiSupervisedDatalist:
    """The data of a semi-supervised segmentation run; every path is absolute.

    Attributes:
        labeled: ``[{"image": ..., "label": ...}, ...]`` training cases whose labels are used.
        unlabeled: ``[{"image": ...}, ...]`` training cases used without labels.
        validation: cases for model selection during training (image and label), possibly empty.
        test: held-out cases (image, and label where the datalist gives one), possibly empty.
    """

    labeled: list[dict] = field(default_factory=list)
    unlabeled: list[dict] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        """One line with the size of each list."""
        return (
            f"{len(self.labeled)} labeled, {len(self.unlabeled)} unlabeled, "
            f"{len(self.validation)} validation, {len(self.test)} test"
        )


def load_semisupervised_datalist(
    datalist: str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    num_labeled: int | None = None,
    unlabeled_key: str = "unlabeled",
) -> SemiSupervisedDatalist:
    """Read an MSD-style datalist file once and split it into labeled, unlabeled, validation and test lists.

    Args:
        datalist: path of the datalist JSON.
        dataset_dir: folder that relative paths in the datalist start from; default the datalist's folder.
        num_labeled: how many labeled training entries keep their label (the first ones, in file order); the
            remaining training entries become unlabeled. Default None: all labeled training entries keep it.
        unlabeled_key: key of an optional list of extra unlabeled images (dicts with ``"image"``, or plain paths).

    Returns:
        The four lists, with absolute, normalised paths. Unlabeled entries have no ``"label"`` key.

    Raises:
        FileNotFoundError: when the datalist file does not exist.
        ValueError: see :func:`split_datalist`, and when the file is not valid JSON.
    """
    path = Path(datalist).expanduser().resolve()
    return split_datalist(read_json_file(path), path, dataset_dir, num_labeled, unlabeled_key)


def split_datalist(
    content: Any,
    path: Path,
    dataset_dir: str | os.PathLike | None = None,
    num_labeled: int | None = None,
    unlabeled_key: str = "unlabeled",
) -> SemiSupervisedDatalist:
    """Split the parsed content of the datalist file ``path`` (see :func:`load_semisupervised_datalist`).

    Relative paths are joined to ``dataset_dir`` (default the file's folder) as
    :func:`monai.data.load_decathlon_datalist` joins them: ``image`` and ``label`` always, any other key only when the
    joined path exists.

    Raises:
        ValueError: when ``content`` is not an object, has no ``"training"`` list, a list is not a list, an entry has
            no ``"image"``, no training entry has a label, or ``num_labeled`` is below 1 or above the number of labeled
            training entries.
    """
    if not isinstance(content, dict):
        raise ValueError(
            f"datalist {path} must hold a JSON object with a 'training' list, got {type(content).__name__}"
        )
    if "training" not in content:
        raise ValueError(f"datalist {path} has no 'training' list (keys: {sorted(content)})")
    base_dir = Path(dataset_dir).expanduser().resolve() if dataset_dir is not None else path.parent
    if num_labeled is not None and not is_integer(num_labeled):
        raise ValueError(f"num_labeled must be an integer or None, got {num_labeled!r}")

    lists: dict[str, list[dict]] = {}
    for key in ("training", "validation", "test", unlabeled_key):
        entries = content.get(key)
        if entries is None:
            lists[key] = []
            continue
        if not isinstance(entries, list):
            raise ValueError(f"datalist {path}: '{key}' must be a list, got {type(entries).__name__}")
        if key != "training":  # MSD test lists may hold bare image paths
            entries = [{"image": entry} if isinstance(entry, str) else entry for entry in entries]
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or "image" not in entry:
                raise ValueError(f"datalist {path}: '{key}' entry {index} has no 'image': {entry!r}")
        lists[key] = [_joined(entry, base_dir) for entry in entries]

    training = lists["training"]
    with_label = [entry for entry in training if entry.get("label") is not None]
    if not with_label:
        raise ValueError(f"datalist {path}: none of the {len(training)} 'training' entries has a 'label'")
    if num_labeled is None:
        num_labeled = len(with_label)
    if not 1 <= num_labeled <= len(with_label):
        raise ValueError(
            f"num_labeled must be between 1 and {len(with_label)} (the labeled 'training' entries of {path}), "
            f"got {num_labeled}"
        )
    keep = {id(entry) for entry in with_label[:num_labeled]}
    labeled = [entry for entry in training if id(entry) in keep]
    unlabeled = [_without_label(entry) for entry in training if id(entry) not in keep]
    unlabeled += [_without_label(entry) for entry in lists[unlabeled_key]]
    return SemiSupervisedDatalist(
        labeled=labeled, unlabeled=unlabeled, validation=lists["validation"], test=lists["test"]
    )


def read_json_file(path: Path) -> Any:
    """The parsed content of the datalist file ``path``.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: when it is not valid JSON; the message names the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"datalist file not found: {path}")
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"datalist {path} is not valid JSON: {error}") from error


def unlabeled_from_images(images: Sequence[str | os.PathLike], labeled: Sequence[dict]) -> list[dict]:
    """Unlabeled entries ``[{"image": path}, ...]`` for the images that are not the image of a labeled entry.

    Used to turn a folder of images, some of which have labels (e.g. annotated in MONAI Label), into the unlabeled
    stream. Paths are compared after normalisation to absolute paths; order is kept and duplicates are dropped.

    Args:
        images: image paths.
        labeled: entries with an ``"image"`` key (their label is not looked at).
    """
    taken = {_normal(entry["image"]) for entry in labeled if isinstance(entry.get("image"), (str, os.PathLike))}
    result = []
    for image in images:
        key = _normal(image)
        if key not in taken:
            taken.add(key)
            result.append({"image": os.fspath(image)})
    return result


def _joined(entry: dict, base_dir: Path) -> dict:
    """Copy of ``entry`` with its paths joined to ``base_dir`` by the rule of MONAI's datalist reader.

    ``image`` and ``label`` (a path, or a list of paths) are always joined; a path under any other key only when the
    joined path exists; other values are kept.
    """
    return {key: _joined_value(value, base_dir, key in ("image", "label")) for key, value in entry.items()}


def _joined_value(value: Any, base_dir: Path, always: bool) -> Any:
    def join(item: str | os.PathLike) -> str:
        result = os.path.normpath(os.path.join(base_dir, item))
        return result if always or os.path.exists(result) else os.fspath(item)

    if isinstance(value, (str, os.PathLike)):
        return join(value)
    if isinstance(value, list) and all(isinstance(item, (str, os.PathLike)) for item in value):
        return [join(item) for item in value]
    return value


def _without_label(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "label"}


def _normal(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.abspath(os.fspath(path)))
