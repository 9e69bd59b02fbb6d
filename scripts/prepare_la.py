"""Prepare the Left Atrium (LA) release for the ``la`` bundle: NIfTI volumes and a datalist with the benchmark split.

The data set is the 2018 Atrial Segmentation Challenge's 100 training LGE-MRI scans with left atrium labels (Xiong et
al., "A global benchmark of algorithms for segmenting the left atrium from late gadolinium-enhanced cardiac magnetic
resonance imaging", Medical Image Analysis 2021). The split is the one that UA-MT fixed (Yu et al.,
"Uncertainty-aware self-ensembling model for semi-supervised 3D left atrium segmentation", MICCAI 2019) and the
semi-supervised literature reuses: 80 training and 20 test cases, listed in ``bundles/la/splits/{train,test}.txt``.

Two layouts are read, chosen per case with ``--layout auto``:

- ``h5``: the UA-MT release, ``<src>/<ID>/mri_norm2.h5`` with datasets ``image`` (normalised intensities) and
  ``label`` (0/1), arrays indexed (X, Y, Z), cropped around the atrium; voxels of 0.625 mm isotropic (the h5 files
  carry no geometry, the spacing is that of the challenge scans). The usual ``--src`` is the folder
  ``2018LA_Seg_Training Set``.
- ``nrrd``: the original challenge folders, ``<src>/<ID>/lgemri.nrrd`` and ``laendo.nrrd`` (label = laendo == 255);
  the nrrd's own spacing, direction and origin are kept (converted to RAS).

Output: ``<dst>/images/<ID>.nii.gz``, ``<dst>/labels/<ID>.nii.gz`` and ``<dst>/datalist.json`` with ``"training"``
(the train list, in list order: the first N are the labeled cases of the benchmark) and ``"test"``. Listed cases that
are not in ``--src`` are reported and skipped; the effective split is printed and stored in the datalist.

Usage (from the repository root)::

    python scripts/prepare_la.py --src "/data/2018LA_Seg_Training Set" --dst /data/la [--layout auto|h5|nrrd]
"""

from __future__ import annotations

from pathlib import Path

import fire
import h5py
import nrrd
import numpy as np

from semiseg.data.release import (
    effective_split,
    find_missing_cases,
    find_release_folder,
    read_case_list,
    save_volume,
    write_datalist,
)

__all__ = [
    "DEFAULT_SPLIT_DIR",
    "H5_SPACING_MM",
    "LAYOUTS",
    "find_case",
    "nrrd_affine",
    "prepare_la",
    "read_h5_case",
    "read_nrrd_case",
]

DEFAULT_SPLIT_DIR = Path(__file__).resolve().parent.parent / "bundles" / "la" / "splits"
"""Folder holding ``train.txt`` and ``test.txt`` (the UA-MT lists)."""

H5_SPACING_MM: tuple[float, float, float] = (0.625, 0.625, 0.625)
"""Voxel size of the UA-MT h5 volumes (mm), which store none."""

LAYOUTS: tuple[str, ...] = ("auto", "h5", "nrrd")
H5_FILE = "mri_norm2.h5"
NRRD_IMAGE = "lgemri.nrrd"
NRRD_LABEL = "laendo.nrrd"
RELEASE_FOLDERS = ("2018LA_Seg_Training Set", "Training Set")
"""Usual names of the release folder, tried first inside ``--src`` when it holds none of the listed cases itself."""

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_NRRD_SPACES = {
    "left-posterior-superior": _LPS_TO_RAS,
    "LPS": _LPS_TO_RAS,
    "right-anterior-superior": np.eye(4),
    "RAS": np.eye(4),
}


def find_case(src: Path, case: str, layout: str = "auto") -> str | None:
    """Layout in which ``case`` is present under ``src`` (``"h5"`` or ``"nrrd"``), or None when it is absent.

    With ``layout="auto"`` the h5 file wins when both are there. A case folder with only one of the two nrrd files
    counts as present (its conversion then fails with a message naming the missing file).
    """
    folder = src / case
    if layout in ("auto", "h5") and (folder / H5_FILE).is_file():
        return "h5"
    if layout in ("auto", "nrrd") and ((folder / NRRD_IMAGE).is_file() or (folder / NRRD_LABEL).is_file()):
        return "nrrd"
    return None


def read_h5_case(folder: Path, case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``<folder>/mri_norm2.h5`` of the UA-MT release.

    Returns:
        image (X, Y, Z) float32, label (X, Y, Z) uint8 in {0, 1}, and the 4x4 affine of 0.625 mm voxels.

    Raises:
        ValueError: naming the case when a dataset is missing, not 3D, the shapes differ or the label is not 0/1.
    """
    file = folder / H5_FILE
    try:
        with h5py.File(file, "r") as h5:
            missing = [key for key in ("image", "label") if key not in h5]
            if missing:
                raise ValueError(f"case {case}: {file} has no dataset {missing} (it holds {sorted(h5.keys())})")
            image = np.asarray(h5["image"][()], dtype=np.float32)
            label = np.asarray(h5["label"][()])
    except OSError as error:
        raise ValueError(f"case {case}: cannot read {file}: {error}") from error
    _check_pair(case, file, image, label)
    values = np.unique(label)
    if not np.all(np.isin(values, (0, 1))):
        raise ValueError(f"case {case}: label in {file} must hold 0 and 1 only, found values {values[:10].tolist()}")
    return image, label.astype(np.uint8), np.diag([*H5_SPACING_MM, 1.0])


def nrrd_affine(header: dict, file: Path, case: str) -> np.ndarray:
    """4x4 RAS voxel-to-world matrix of an nrrd volume from its ``space directions``/``space origin`` (or spacings).

    Raises:
        ValueError: when the header gives no voxel size, or a space that is neither LPS nor RAS.
    """
    directions = header.get("space directions")
    if directions is not None:
        matrix = np.asarray(
            [np.zeros(3) if d is None or np.any(np.isnan(np.asarray(d, float))) else d for d in directions], float
        )
        if matrix.shape != (3, 3) or not np.all(np.linalg.norm(matrix, axis=1) > 0):
            raise ValueError(f"case {case}: {file} has unusable 'space directions' {directions!r}")
        affine = np.eye(4)
        affine[:3, :3] = matrix.T  # nrrd lists one world vector per voxel axis
        origin = header.get("space origin")
        if origin is not None:
            affine[:3, 3] = np.asarray(origin, dtype=float)
        space = header.get("space", "left-posterior-superior")
        if space not in _NRRD_SPACES:
            raise ValueError(f"case {case}: {file} is in space {space!r}; expected LPS or RAS")
        return _NRRD_SPACES[space] @ affine
    spacings = header.get("spacings")
    if spacings is not None and len(spacings) == 3 and all(np.isfinite(spacings)) and min(spacings) > 0:
        return np.diag([*map(float, spacings), 1.0])
    raise ValueError(f"case {case}: {file} gives no voxel spacing ('space directions' or 'spacings')")


def read_nrrd_case(folder: Path, case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read ``lgemri.nrrd`` and ``laendo.nrrd`` of the challenge release.

    Returns:
        image (X, Y, Z) float32, label (X, Y, Z) uint8 (1 where laendo == 255), and the image's 4x4 RAS affine.

    Raises:
        FileNotFoundError: when one of the two files is missing.
        ValueError: naming the case when a file cannot be read, is not 3D, or the shapes differ.
    """
    arrays, headers = {}, {}
    for name in (NRRD_IMAGE, NRRD_LABEL):
        file = folder / name
        if not file.is_file():
            raise FileNotFoundError(f"case {case}: {file} not found")
        try:
            arrays[name], headers[name] = nrrd.read(str(file))
        except Exception as error:  # pynrrd raises several types for corrupt files
            raise ValueError(f"case {case}: cannot read {file}: {error}") from error
    image = np.asarray(arrays[NRRD_IMAGE], dtype=np.float32)
    label = np.asarray(arrays[NRRD_LABEL])
    _check_pair(case, folder / NRRD_LABEL, image, label)
    return image, (label == 255).astype(np.uint8), nrrd_affine(headers[NRRD_IMAGE], folder / NRRD_IMAGE, case)


def prepare_la(src: str, dst: str, layout: str = "auto", split_dir: str | None = None) -> Path:
    """Convert the LA release to NIfTI and write ``<dst>/datalist.json`` with the UA-MT split.

    Args:
        src: release folder holding one folder per case (usually ``2018LA_Seg_Training Set``) or the folder holding
            it (the rule of :func:`semiseg.data.release.find_release_folder`).
        dst: output folder; gets ``images/``, ``labels/`` and ``datalist.json``.
        layout: ``auto`` (per case: the h5 file if present, else the nrrd pair), ``h5`` or ``nrrd``.
        split_dir: folder with ``train.txt`` and ``test.txt``; default ``bundles/la/splits`` beside this script.

    Returns:
        Path of the datalist written.

    Raises:
        FileNotFoundError: when ``src`` does not exist or holds none of the listed (or none of the training) cases.
        ValueError: for an unknown layout, or a malformed case (the message names it).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"--layout must be one of {LAYOUTS}, got {layout!r}")
    splits = Path(str(split_dir)) if split_dir is not None else DEFAULT_SPLIT_DIR
    lists = {"training": read_case_list(splits / "train.txt"), "test": read_case_list(splits / "test.txt")}
    listed = [case for cases in lists.values() for case in cases]
    wanted = {"auto": f"{H5_FILE} or {NRRD_IMAGE}", "h5": H5_FILE, "nrrd": NRRD_IMAGE}[layout]
    source = find_release_folder(
        src,
        lambda folder: any(find_case(folder, case, layout) for case in listed),
        f"none of the {len(listed)} listed cases (e.g. {listed[0]}/{wanted}) is in {src}",
        RELEASE_FOLDERS,
    )

    found = {case: find_case(source, case, layout) for case in listed}
    missing = find_missing_cases(lists, lambda case: found[case] is not None, f"not found in {source}, skipped")
    if len(missing["training"]) == len(lists["training"]):
        raise FileNotFoundError(
            f"none of the {len(lists['training'])} training cases of {splits / 'train.txt'} is in {source} "
            f"(only test cases are): nothing to train on"
        )

    output = Path(str(dst))
    entries: dict[str, list[dict[str, str]]] = {"training": [], "test": []}
    layouts_used: dict[str, int] = {}
    present = sum(1 for case in listed if found[case] is not None)
    done = 0
    for name, cases in lists.items():
        for case in cases:
            case_layout = found[case]
            if case_layout is None:
                continue
            reader = read_h5_case if case_layout == "h5" else read_nrrd_case
            image, label, affine = reader(source / case, case)
            image_rel, label_rel = f"images/{case}.nii.gz", f"labels/{case}.nii.gz"
            save_volume(image, output / image_rel, affine=affine)
            save_volume(label, output / label_rel, affine=affine)
            entries[name].append({"image": image_rel, "label": label_rel})
            layouts_used[case_layout] = layouts_used.get(case_layout, 0) + 1
            done += 1
            spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
            print(
                f"[{done}/{present}] {name} {case} ({case_layout}): {'x'.join(map(str, image.shape))} voxels of "
                f"{'x'.join(f'{v:g}' for v in spacing)} mm, atrium {int(label.sum())} voxels -> {image_rel}",
                flush=True,
            )

    effective = {name: len(entries[name]) for name in entries}
    listed_counts = {name: len(cases) for name, cases in lists.items()}
    datalist = write_datalist(
        output,
        training=entries["training"],
        test=entries["test"],
        name="Left Atrium (2018 Atrial Segmentation Challenge)",
        description="Left atrium segmentation in LGE-MRI; split of the UA-MT benchmark (80 training, 20 test)",
        labels={"0": "background", "1": "left atrium"},
        modality={"0": "LGE-MRI"},
        source_layouts=layouts_used,
        split_lists={name: str(splits / f"{'train' if name == 'training' else 'test'}.txt") for name in lists},
        listed_split=listed_counts,
        effective_split=effective,
        missing_cases=missing,
    )
    print(f"{effective_split(lists, entries)}; datalist: {datalist}")
    return datalist


def _check_pair(case: str, file: Path, image: np.ndarray, label: np.ndarray) -> None:
    if image.ndim != 3:
        raise ValueError(f"case {case}: image must be 3D, got shape {image.shape} ({file})")
    if label.shape != image.shape:
        raise ValueError(f"case {case}: label shape {label.shape} differs from image shape {image.shape} ({file})")


if __name__ == "__main__":
    fire.Fire(prepare_la)
