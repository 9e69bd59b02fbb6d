"""Where the unlabeled stream comes from when a tool hands the bundle only labeled pairs (MONAI Label).

MONAI Label's ``BundleTrainTask`` overrides ``train#dataset#data`` with the labeled pairs of its datastore and nothing
else. The bundle then finds its unlabeled volumes itself, with :func:`unlabeled_cases`:

- when the bundle's datalist exists (``--datalist``), its unlabeled cases, as on the command line;
- otherwise the datastore's images that have no label: the image files beside the labeled images (MONAI Label keeps
  the images of a local datastore in one folder and their labels in ``labels/final/`` below it);
- in both cases, plus the configured extra list ``unlabeled_images`` (image files, folders of images, or JSON lists).

A case that is labeled (or a validation case) is never also used as unlabeled.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from semiseg.data.datalist import load_semisupervised_datalist, unlabeled_from_images

from .dataset import IMAGE_PATTERNS, require_cases

__all__ = ["extra_unlabeled_images", "images_in_folders", "held_out_cases", "unlabeled_cases", "validation_cases"]

logger = logging.getLogger(__name__)


def unlabeled_cases(
    labeled: Sequence[dict],
    datalist: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    num_labeled: int | None = None,
    extra: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    exclude: Sequence[dict] | None = None,
    patterns: Sequence[str] = IMAGE_PATTERNS,
) -> list[dict]:
    """The unlabeled training cases ``[{"image": path}, ...]`` for the labeled cases the bundle was given.

    Args:
        labeled: the labeled training cases (``train#dataset#data``: from the datalist, or from MONAI Label).
        datalist: the bundle's datalist JSON; used when the file exists (its unlabeled cases).
        dataset_dir: folder that relative paths of the datalist start from.
        num_labeled: labeled cases kept by the datalist (the rest of its training cases are unlabeled).
        extra: more unlabeled images, see :func:`extra_unlabeled_images`.
        exclude: more cases whose images must not be unlabeled (the validation cases: MONAI Label takes them from
            its labeled pairs).
        patterns: file name patterns of images when folders are searched.

    Returns:
        Unlabeled cases with absolute image paths, in a stable order, without duplicates and without any image of
        ``labeled`` or ``exclude``.

    Raises:
        ValueError: when ``labeled`` is not a list of dicts with an ``"image"``.
        FileNotFoundError: when an ``extra`` entry does not exist.
    """
    labeled = list(labeled or [])
    for index, case in enumerate(labeled):
        if not isinstance(case, dict) or not isinstance(case.get("image"), (str, os.PathLike)):
            raise ValueError(f"labeled case {index} must be a dict with an 'image' path, got {case!r}")
    if datalist is not None and Path(datalist).expanduser().is_file():
        found = load_semisupervised_datalist(datalist, dataset_dir=dataset_dir, num_labeled=num_labeled).unlabeled
        source = f"the datalist {os.fspath(datalist)!r}"
    else:
        folders = sorted({os.path.dirname(os.path.abspath(os.fspath(case["image"]))) for case in labeled})
        found = [{"image": image} for image in images_in_folders(folders, patterns)]
        source = f"the images without a label beside the labeled ones ({', '.join(folders) or 'no folder'})"
    images = [case["image"] for case in found] + extra_unlabeled_images(extra, patterns)
    taken = labeled + [case for case in exclude or [] if isinstance(case, dict) and "image" in case]
    cases = unlabeled_from_images([os.path.abspath(os.fspath(image)) for image in images], taken)
    logger.info("unlabeled cases: %d from %s and the extra list; %d labeled cases", len(cases), source, len(labeled))
    if not cases:
        logger.warning(
            "no unlabeled case found (%s): training is supervised only; add unlabeled images to the datastore "
            "or list them in 'unlabeled_images'",
            source,
        )
    return cases


def images_in_folders(folders: Sequence[str | os.PathLike], patterns: Sequence[str] = IMAGE_PATTERNS) -> list[str]:
    """Image files directly in ``folders`` (not in their subfolders), sorted, as absolute paths."""
    files: set[str] = set()
    for folder in folders:
        for pattern in patterns:
            files.update(os.path.abspath(f) for f in glob.glob(os.path.join(os.fspath(folder), pattern)))
    return sorted(files)


def extra_unlabeled_images(
    extra: str | os.PathLike | Sequence[str | os.PathLike] | None, patterns: Sequence[str] = IMAGE_PATTERNS
) -> list[str]:
    """Image paths of the configured extra unlabeled list (``unlabeled_images`` in the bundle configs).

    Each entry is an image file, a folder (its images, not those of subfolders), or a JSON file holding either a list
    (of paths or of ``{"image": path}``) or an object with an ``"unlabeled"`` list; relative paths in a JSON file start
    from its folder.

    Raises:
        FileNotFoundError: when an entry does not exist.
        ValueError: when a JSON file has another layout.
    """
    if extra is None:
        return []
    entries = [extra] if isinstance(extra, (str, os.PathLike)) else list(extra)
    images: list[str] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            images += images_in_folders([path], patterns)
        elif path.is_file() and path.suffix == ".json":
            images += _images_of_json(path)
        elif path.is_file():
            images.append(os.path.abspath(path))
        else:
            raise FileNotFoundError(f"unlabeled_images: {os.fspath(entry)!r} does not exist (image, folder or JSON)")
    return images


def held_out_cases(
    labeled: Sequence[dict],
    datalist: str | os.PathLike | None,
    dataset_dir: str | os.PathLike | None = None,
    num_labeled: int | None = None,
) -> list[dict]:
    """The test cases: the datalist's test list, or none when the labeled cases came from a tool (MONAI Label).

    ``labeled`` is taken only so that the bundle resolves its labeled cases first: on the command line, without a
    datalist, that already stops with directions (:func:`semiseg.bundle.load_bundle_datalist`); so a missing datalist
    here means the labeled cases were handed in (MONAI Label has no test list, and evaluation after training is off).

    Raises:
        DatasetNotFoundError: when the datalist exists and lists no test case.
    """
    del labeled
    if datalist is None or not Path(datalist).expanduser().is_file():
        return []
    cases = load_semisupervised_datalist(datalist, dataset_dir=dataset_dir, num_labeled=num_labeled).test
    return require_cases(cases, "test", os.fspath(datalist))


def validation_cases(
    labeled: Sequence[dict],
    datalist: str | os.PathLike | None,
    dataset_dir: str | os.PathLike | None = None,
    num_labeled: int | None = None,
) -> list[dict]:
    """The validation cases: the datalist's validation list (its labeled cases when it has none), or none at all.

    On the command line the datalist exists: its ``validation`` list, or, when it lists none, the labeled training
    cases ``labeled`` (validation then only follows the fit). Without a datalist the labeled cases were handed in by a
    tool: MONAI Label sets ``validate#dataset#data`` itself from ``val_split`` (``[]`` for ``val_split`` 0), and with
    ``val_split`` -1 ("the bundle's own list") there is none, so training runs without validation (the bundle's
    ``ValidationHandler`` is disabled for an empty list) instead of stopping for the missing datalist.
    """
    if datalist is None or not Path(datalist).expanduser().is_file():
        logger.info("no datalist (%s): training runs without validation cases", datalist)
        return []
    validation = load_semisupervised_datalist(datalist, dataset_dir=dataset_dir, num_labeled=num_labeled).validation
    return validation or list(labeled)


def _images_of_json(path: Path) -> list[str]:
    try:
        content = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"unlabeled_images: {path} is not valid JSON: {error}") from error
    entries = content.get("unlabeled") if isinstance(content, dict) else content
    if not isinstance(entries, list):
        raise ValueError(f"unlabeled_images: {path} must hold a list of images or an object with an 'unlabeled' list")
    images = []
    for index, entry in enumerate(entries):
        image = entry.get("image") if isinstance(entry, dict) else entry
        if not isinstance(image, str):
            raise ValueError(f"unlabeled_images: {path} entry {index} is neither a path nor {{'image': path}}: {entry!r}")
        images.append(os.path.normpath(os.path.join(path.parent, image)))
    return images
