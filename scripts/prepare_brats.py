"""Prepare the BraTS 2019 training release for the ``brats`` bundle (FLAIR, whole tumour).

The data set is the training part of the Multimodal Brain Tumor Segmentation Challenge 2019 (Menze et al., "The
Multimodal Brain Tumor Image Segmentation Benchmark (BRATS)", IEEE TMI 2015; Bakas et al., "Advancing The Cancer
Genome Atlas glioma MRI collections with expert segmentation labels and radiomic features", Scientific Data 2017).
The semi-supervised benchmark uses the FLAIR volume alone and the whole tumour (every labelled tumour sub-region),
with the 250 / 25 / 60 split of the SSL4MIS code base (X. Luo, "SSL4MIS", https://github.com/HiLab-git/SSL4MIS,
2020), listed in ``bundles/brats/splits/{train,val,test}.txt``.

Per case: FLAIR and segmentation are read with nibabel, cropped to the brain's bounding box (nonzero FLAIR),
FLAIR is z-scored over the brain voxels (background stays 0) and the label is ``seg > 0``. The NIfTI files keep the
release's geometry, with the affine's origin moved to the crop's first voxel. Output:
``<dst>/images{Tr,Ts}/<ID>.nii.gz``, ``<dst>/labels{Tr,Ts}/<ID>.nii.gz`` and ``<dst>/datalist.json``.

Usage (from the repository root)::

    python scripts/prepare_brats.py --src /data/MICCAI_BraTS_2019_Data_Training --dst /data/brats_prepared
"""

from __future__ import annotations

from pathlib import Path

import fire
import nibabel as nib
import numpy as np
from monai.transforms import NormalizeIntensity
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils import convert_to_numpy

from semiseg.data.release import (
    effective_split,
    find_missing_cases,
    find_release_folder,
    read_case_list,
    save_volume,
    write_datalist,
)

__all__ = [
    "GRADES",
    "DEFAULT_SPLIT_DIR",
    "RELEASE_FOLDERS",
    "find_case_folders",
    "case_files",
    "crop_to_brain",
    "prepare_case",
    "prepare_brats",
]

GRADES: tuple[str, ...] = ("HGG", "LGG")
"""Sub-folders of the release that hold the patient folders (high- and low-grade gliomas)."""

DEFAULT_SPLIT_DIR = Path(__file__).resolve().parents[1] / "bundles" / "brats" / "splits"
"""Where the SSL4MIS split lists live, relative to this script."""

RELEASE_FOLDERS: tuple[str, ...] = ("MICCAI_BraTS_2019_Data_Training",)
"""Usual name of the release folder, tried first inside ``--src`` when it holds no HGG/LGG case itself."""

_SPLITS: dict[str, str] = {"training": "train.txt", "validation": "val.txt", "test": "test.txt"}


def find_case_folders(src: str | Path) -> dict[str, Path]:
    """Find the patient folders ``<src>/HGG/<ID>`` and ``<src>/LGG/<ID>``.

    Returns:
        Mapping of case identifier to its folder.

    Raises:
        FileNotFoundError: when ``src`` has neither an HGG nor an LGG folder.
        ValueError: when a case is in both.
    """
    src = Path(src)
    grades = [src / grade for grade in GRADES if (src / grade).is_dir()]
    if not grades:
        raise FileNotFoundError(f"{src} holds neither an HGG/ nor an LGG/ folder (expected the BraTS 2019 layout)")
    found: dict[str, Path] = {}
    for grade in grades:
        for folder in sorted(p for p in grade.iterdir() if p.is_dir()):
            if folder.name in found:
                raise ValueError(f"case {folder.name} is in two places: {found[folder.name]} and {folder}")
            found[folder.name] = folder
    return found


def case_files(folder: str | Path, case: str) -> tuple[Path, Path]:
    """The FLAIR and segmentation files of a patient folder (``<ID>_flair.nii.gz``, ``<ID>_seg.nii.gz``).

    Uncompressed ``.nii`` files are accepted as well.

    Raises:
        FileNotFoundError: naming the case and the file when one of the two is missing.
    """
    folder = Path(folder)
    paths = []
    for suffix in ("flair", "seg"):
        candidates = [folder / f"{case}_{suffix}.nii.gz", folder / f"{case}_{suffix}.nii"]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            raise FileNotFoundError(f"case {case}: {suffix} file not found: {candidates[0]}")
        paths.append(existing[0])
    return paths[0], paths[1]


def crop_to_brain(
    flair: np.ndarray, seg: np.ndarray, affine: np.ndarray, case: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop FLAIR and segmentation to the bounding box of the nonzero FLAIR voxels.

    Args:
        flair: FLAIR volume (X, Y, Z), background 0.
        seg: segmentation of the same shape.
        affine: 4x4 voxel-to-world matrix; its origin moves to the box's first voxel.
        case: case name used in the error messages.

    Returns:
        The cropped FLAIR, segmentation and affine.

    Raises:
        ValueError: when the shapes differ or the FLAIR volume is all zero.
    """
    if flair.shape != seg.shape:
        raise ValueError(f"case {case}: segmentation shape {seg.shape} differs from the FLAIR shape {flair.shape}")
    if not np.any(flair != 0):
        raise ValueError(f"case {case}: the FLAIR volume is all zero, no brain to crop to")
    start, end = generate_spatial_bounding_box(flair[None], select_fn=lambda x: x != 0, allow_smaller=True)
    box = tuple(slice(int(s), int(e)) for s, e in zip(start, end))
    cropped_affine = np.array(affine, dtype=np.float64)
    cropped_affine[:3, 3] = (cropped_affine @ np.array([float(s) for s in start] + [1.0]))[:3]
    return flair[box].copy(), seg[box].copy(), cropped_affine


def prepare_case(folder: str | Path, case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read, crop and normalise one BraTS case.

    Args:
        folder: the patient folder (``HGG/<ID>`` or ``LGG/<ID>``).
        case: the case identifier (``BraTS19_...``).

    Returns:
        FLAIR (X, Y, Z) float32, z-scored over the brain with background 0; whole-tumour label (X, Y, Z) uint8
        in {0, 1}; and the 4x4 affine of both.
    """
    flair_file, seg_file = case_files(folder, case)
    flair_nifti, seg_nifti = nib.load(str(flair_file)), nib.load(str(seg_file))
    if len(flair_nifti.shape) != 3:
        raise ValueError(f"case {case}: {flair_file} is not a 3D volume (shape {flair_nifti.shape})")
    if seg_nifti.shape != flair_nifti.shape:
        raise ValueError(
            f"case {case}: segmentation shape {seg_nifti.shape} differs from the FLAIR shape {flair_nifti.shape}"
        )
    flair = flair_nifti.get_fdata(dtype=np.float32)
    seg = np.asanyarray(seg_nifti.dataobj)
    flair, seg, affine = crop_to_brain(flair, seg, flair_nifti.affine, case)
    brain = flair != 0
    if float(flair[brain].std()) == 0.0:
        raise ValueError(f"case {case}: the FLAIR brain voxels are all equal, cannot z-score them")
    image = convert_to_numpy(NormalizeIntensity(nonzero=True)(flair), dtype=np.float32)
    image[~brain] = 0.0
    label = (seg > 0).astype(np.uint8)
    return image, label, affine


def prepare_brats(src: str, dst: str, split_dir: str | None = None) -> Path:
    """Prepare BraTS 2019 (FLAIR, whole tumour) for the brats bundle: NIfTI volumes and <dst>/datalist.json.

    Args:
        src: the MICCAI_BraTS_2019_Data_Training folder (HGG/<ID>/ and LGG/<ID>/ with <ID>_flair.nii.gz and
            <ID>_seg.nii.gz; other modalities are ignored) or the folder holding it (the rule of
            :func:`semiseg.data.release.find_release_folder`).
        dst: output folder; gets imagesTr/, labelsTr/ (training and validation), imagesTs/, labelsTs/ and
            datalist.json.
        split_dir: folder with train.txt, val.txt and test.txt; default bundles/brats/splits beside this script
            (the SSL4MIS lists, 250 / 25 / 60 cases).

    Returns:
        Path of the datalist written.
    """
    splits = Path(str(split_dir)) if split_dir is not None else DEFAULT_SPLIT_DIR
    lists = {name: read_case_list(splits / file) for name, file in _SPLITS.items()}
    listed = [case for cases in lists.values() for case in cases]
    repeated = sorted({case for case in listed if listed.count(case) > 1})
    if repeated:
        raise ValueError(f"the split lists in {splits} name these cases more than once: {repeated}")
    output = Path(str(dst))

    def holds_cases(folder: Path) -> bool:
        has_grades = any((folder / grade).is_dir() for grade in GRADES)
        return has_grades and any(case in find_case_folders(folder) for case in listed)

    source = find_release_folder(
        src,
        holds_cases,
        f"none of the {len(listed)} listed cases has a patient folder under {src}/HGG|LGG",
        RELEASE_FOLDERS,
    )
    folders = find_case_folders(source)
    missing = find_missing_cases(lists, lambda case: case in folders, "not in this release")

    entries: dict[str, list[dict[str, str]]] = {name: [] for name in lists}
    present = len(listed) - sum(len(cases) for cases in missing.values())
    done = 0
    for name, cases in lists.items():
        image_dir, label_dir = ("imagesTs", "labelsTs") if name == "test" else ("imagesTr", "labelsTr")
        for case in cases:
            if case not in folders:
                continue
            done += 1
            image, label, affine = prepare_case(folders[case], case)
            image_rel, label_rel = f"{image_dir}/{case}.nii.gz", f"{label_dir}/{case}.nii.gz"
            save_volume(image, output / image_rel, affine=affine)
            save_volume(label, output / label_rel, affine=affine)
            entries[name].append({"image": image_rel, "label": label_rel})
            print(
                f"[{done}/{present}] {name} {case} ({folders[case].parent.name}): brain box "
                f"{'x'.join(map(str, image.shape))}, whole tumour {int(label.sum())} voxels -> {image_rel}"
            )

    effective = {name: len(entries[name]) for name in entries}
    datalist = write_datalist(
        output,
        training=entries["training"],
        validation=entries["validation"],
        test=entries["test"],
        name="BraTS 2019 (FLAIR, whole tumour)",
        description="Whole-tumour segmentation in FLAIR MRI; split of the SSL4MIS benchmark",
        labels={"0": "background", "1": "whole tumour"},
        modality={"0": "FLAIR"},
        preprocessing={"crop": "brain bounding box (nonzero FLAIR)", "intensity": "z-score over brain voxels"},
        split_lists={name: str(splits / file) for name, file in _SPLITS.items()},
        listed_split={name: len(cases) for name, cases in lists.items()},
        effective_split=effective,
        missing_cases=missing,
    )
    print(f"{effective_split(lists, entries)}; datalist: {datalist}")
    return datalist


if __name__ == "__main__":
    fire.Fire(prepare_brats)
