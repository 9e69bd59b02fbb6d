"""The extra unlabeled images of a bundle (``unlabeled_images``) and the images in folders.

:class:`semiseg.bundle.BundleData` uses them for its unlabeled cases: the datalist's, or, when MONAI Label hands the
bundle only its labeled pairs, the image files beside the labeled images; in both cases followed by the configured
extra list ``unlabeled_images`` (image files, folders of images, or JSON lists).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .dataset import IMAGE_PATTERNS

__all__ = ["extra_unlabeled_images", "images_in_folders"]


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
