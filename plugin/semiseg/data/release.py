"""Helpers shared by the dataset preparation scripts: split lists, NIfTI output and the datalist file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = [
    "effective_split",
    "find_missing_cases",
    "find_release_folder",
    "read_case_list",
    "save_volume",
    "write_datalist",
    "write_text_atomically",
]


def read_case_list(path: str | Path) -> list[str]:
    """Read a split list: one case identifier per line, blank lines and ``#`` comments ignored.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the list holds no case or a case twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    cases = [line.strip() for line in path.read_text().splitlines()]
    cases = [c for c in cases if c and not c.startswith("#")]
    if not cases:
        raise ValueError(f"split list {path} holds no case identifier")
    duplicates = sorted({c for c in cases if cases.count(c) > 1})
    if duplicates:
        raise ValueError(f"split list {path} names these cases more than once: {duplicates}")
    return cases


def find_release_folder(
    src: str | Path, holds_cases: Callable[[Path], bool], nothing_found: str, names: Sequence[str] = ()
) -> Path:
    """The ``--src`` rule of every preparation script: the release folder itself, or the folder it was unpacked into.

    ``src`` is used when it holds a listed case. Otherwise its subfolders are tried: those named in ``names`` first
    (in that order, the first that holds a case wins), then the others; one other subfolder holding cases is used,
    several are refused as ambiguous. The folder chosen is printed when it is not ``src``.

    Args:
        src: the folder the user gave as ``--src``.
        holds_cases: whether a folder is a release holding at least one listed case.
        nothing_found: start of the error message when neither ``src`` nor a subfolder holds a case, e.g.
            ``"none of the 100 listed cases is in /data/x"``.
        names: the release's usual folder names, such as ``("MICCAI_BraTS_2019_Data_Training",)``.

    Returns:
        The release folder.

    Raises:
        FileNotFoundError: when ``src`` does not exist, or neither it nor a subfolder holds a listed case.
        ValueError: when several subfolders that are not in ``names`` hold listed cases.
    """
    source = Path(str(src))
    if not source.is_dir():
        raise FileNotFoundError(f"--src folder not found: {source}")
    if holds_cases(source):
        return source
    for name in names:
        if (source / name).is_dir() and holds_cases(source / name):
            print(f"using the release folder {source / name}")
            return source / name
    others = [p for p in sorted(source.iterdir()) if p.is_dir() and p.name not in names and holds_cases(p)]
    if len(others) > 1:
        raise ValueError(
            f"several folders inside --src {source} hold listed cases: {[p.name for p in others]}; "
            f"give the one release folder as --src"
        )
    if others:
        print(f"using the release folder {others[0]}")
        return others[0]
    usual = f" such as '{names[0]}'" if names else ""
    raise FileNotFoundError(
        f"{nothing_found}; --src should be the release folder{usual} or the folder holding it, and neither "
        f"{source} nor a folder inside it holds a listed case"
    )


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffixes) that replaces ``path`` when the block completes.

    A reader never sees a part-written file, also while another process writes the same one (each rank under
    torchrun writes the demo's phantoms); a write that fails leaves the previous file as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{os.getpid()}.{path.name}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file that replaces it (see :func:`save_volume`)."""
    path = Path(path)
    with _replacing(path) as temporary:
        temporary.write_text(text)
    return path


def save_volume(
    array: np.ndarray, path: str | Path, spacing: Sequence[float] = (1.0, 1.0, 1.0), affine: np.ndarray | None = None
) -> Path:
    """Write a 3D array as NIfTI (``.nii.gz``) with the given voxel spacing (mm) or a full affine.

    Args:
        array: volume shaped (X, Y, Z); float arrays are stored as float32, integer ones as uint8.
        path: output file; parent folders are created.
        spacing: voxel size in mm along X, Y, Z, used when ``affine`` is None.
        affine: 4x4 voxel-to-world matrix (RAS, as nibabel uses it).

    The file appears whole or not at all: it is written beside ``path`` and then moved over it.
    """
    if array.ndim != 3:
        raise ValueError(f"expected a 3D volume for {path}, got shape {array.shape}")
    if affine is None:
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers, got {spacing} for {path}")
        affine = np.diag([float(s) for s in spacing] + [1.0])
    dtype = np.uint8 if np.issubdtype(array.dtype, np.integer) or array.dtype == bool else np.float32
    path = Path(path)
    image = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    with _replacing(path) as temporary:
        nib.save(image, str(temporary))
    return path


def write_datalist(
    dst: str | Path,
    training: Sequence[dict],
    test: Sequence[dict] = (),
    validation: Sequence[dict] = (),
    unlabeled: Sequence[dict] = (),
    **metadata: object,
) -> Path:
    """Write ``<dst>/datalist.json`` in the MSD style that the bundles read.

    Paths inside the entries should be relative to ``dst`` so that the folder can be moved; the bundles resolve
    them against ``dataset_dir``. Extra keyword arguments (name, description, effective split...) are stored as
    top-level fields.
    """
    if not training:
        raise ValueError(f"refusing to write a datalist with no training case into {dst}")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    content: dict[str, object] = dict(metadata)
    content["training"] = list(training)
    if validation:
        content["validation"] = list(validation)
    if unlabeled:
        content["unlabeled"] = list(unlabeled)
    if test:
        content["test"] = list(test)
    return write_text_atomically(dst / "datalist.json", json.dumps(content, indent=2) + "\n")


def find_missing_cases(
    lists: Mapping[str, Sequence[str]], is_present: Callable[[str], bool], note: str
) -> dict[str, list[str]]:
    """Per split, the listed cases that the release lacks; prints ``<split>: N listed case(s) <note>: [...]``.

    Args:
        lists: split name -> case identifiers, in list order.
        is_present: whether the release holds a case.
        note: what "missing" means for this release, e.g. ``"not in this release"``.
    """
    missing = {name: [case for case in cases if not is_present(case)] for name, cases in lists.items()}
    for name, cases in missing.items():
        if cases:
            print(f"{name}: {len(cases)} listed case(s) {note}: {cases}")
    return missing


def effective_split(lists: Mapping[str, Sequence[str]], written: Mapping[str, Sequence[object]]) -> str:
    """``"effective split: training 78 of 80, test 20 of 20 listed cases"``: what was written against the lists."""
    return "effective split: " + ", ".join(f"{name} {len(written[name])} of {len(lists[name])}" for name in lists) + (
        " listed cases"
    )
