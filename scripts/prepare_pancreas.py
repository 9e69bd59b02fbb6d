"""Prepare the NIH Pancreas-CT release for the ``pancreas`` bundle.

The data set is the NIH Clinical Center's 82 contrast-enhanced abdominal CT scans, distributed by TCIA as DICOM
series with manual pancreas labels as NIfTI files (Roth et al., "DeepOrgan: Multi-level Deep Convolutional Networks
for Automated Pancreas Segmentation", MICCAI 2015; data: Roth et al., "Data From Pancreas-CT", The Cancer Imaging
Archive, 2016). The split is the one of the semi-supervised benchmark that MC-Net+ fixed (Wu et al., "Mutual
consistency learning for semi-supervised medical image segmentation", Medical Image Analysis 2022): 62 training and
20 test cases, listed in ``bundles/pancreas/splits/{train,test}.txt``.

Per case: the DICOM series is read with ITK, the label is put on the image grid (same size required; the NIH
label files hold the mask in DICOM pixel order, slices by Instance Number), both are resampled to 1 mm isotropic
voxels (image linear, label nearest neighbour with a guarantee that thin structures survive), CT numbers are
clipped to [-125, 275] HU and rescaled to [0, 1], and optionally the volume is cropped around the pancreas as the
benchmark protocol does. Output: ``<dst>/images{Tr,Ts}/pancreas_NNNN.nii.gz``,
``<dst>/labels{Tr,Ts}/pancreas_NNNN.nii.gz`` and ``<dst>/datalist.json``.

Usage (from the repository root)::

    python scripts/prepare_pancreas.py --src /data/Pancreas-CT --dst /data/pancreas_prepared \
        [--labels /data/TCIA_pancreas_labels-02-05-2017] [--crop_margin 25]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import fire
import itk
import nibabel as nib
import numpy as np
from monai.transforms import ScaleIntensityRange
from monai.transforms.utils import generate_spatial_bounding_box
from monai.utils import convert_to_numpy

from semiseg.arguments import is_number
from semiseg.data.release import (
    effective_split,
    find_missing_cases,
    find_release_folder,
    read_case_list,
    save_volume,
    write_datalist,
)

__all__ = [
    "HU_WINDOW",
    "OUTPUT_SPACING_MM",
    "DEFAULT_SPLIT_DIR",
    "case_number",
    "find_patient_folders",
    "find_label_files",
    "check_slice_positions",
    "read_dicom_series",
    "align_label_to_image",
    "resample_image",
    "resample_label",
    "itk_to_ras_array",
    "window_ct",
    "crop_around_label",
    "prepare_case",
    "prepare_pancreas",
]

HU_WINDOW: tuple[float, float] = (-125.0, 275.0)
"""Soft-tissue window of the benchmark, in Hounsfield units; mapped to [0, 1]."""

OUTPUT_SPACING_MM: tuple[float, float, float] = (1.0, 1.0, 1.0)
"""Voxel size of the prepared volumes along X, Y, Z (mm)."""

DEFAULT_SPLIT_DIR = Path(__file__).resolve().parents[1] / "bundles" / "pancreas" / "splits"
"""Where the MC-Net+ split lists live, relative to this script."""

_PATIENT_FOLDER = re.compile(r"^PANCREAS_(\d{4})$")
_LABEL_FILE = re.compile(r"^label(\d{4})\.nii(\.gz)?$")
_CASE_ID = re.compile(r"^(?:image|label|pancreas_|PANCREAS_)?(\d{1,4})$")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_REQUIRED_TAGS = {"0020|0032": "Image Position", "0020|0037": "Image Orientation", "0020|0013": "Instance Number"}


def case_number(case: str) -> str:
    """Four-digit NIH case number of a split-list identifier.

    Args:
        case: identifier as the split lists write it (``image0002``), or ``PANCREAS_0002``, ``label0002``,
            ``0002``, ``2``.

    Returns:
        The zero-padded number, e.g. ``"0002"``.

    Raises:
        ValueError: when ``case`` does not end in a case number of at most four digits.
    """
    match = _CASE_ID.match(case.strip())
    if match is None:
        raise ValueError(f"cannot read a Pancreas-CT case number from {case!r} (expected e.g. 'image0002')")
    return f"{int(match.group(1)):04d}"


def _index_unique(paths: Sequence[Path], pattern: re.Pattern, what: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(paths):
        match = pattern.match(path.name)
        if match is None:
            continue
        number = match.group(1)
        if number in found:
            raise ValueError(f"case {number}: two {what} found, {found[number]} and {path}; keep only one")
        found[number] = path
    return found


def find_patient_folders(src: str | Path) -> dict[str, Path]:
    """Find the TCIA patient folders ``PANCREAS_NNNN`` anywhere under ``src``.

    Returns:
        Mapping of the four-digit case number to its folder.

    Raises:
        ValueError: when a patient folder occurs twice.
    """
    folders = [p for p in Path(src).rglob("PANCREAS_*") if p.is_dir()]
    return _index_unique(folders, _PATIENT_FOLDER, "patient folders")


def find_label_files(root: str | Path) -> dict[str, Path]:
    """Find the NIH label files ``labelNNNN.nii.gz`` anywhere under ``root``.

    Returns:
        Mapping of the four-digit case number to its label file.

    Raises:
        ValueError: when a case has two label files.
    """
    files = [p for p in Path(root).rglob("label*.nii*") if p.is_file()]
    return _index_unique(files, _LABEL_FILE, "label files")


def check_slice_positions(positions: Sequence[float], case: str, tolerance: float = 0.1) -> float:
    """Check that the slices of a series are evenly spaced and return the spacing.

    Args:
        positions: position of each slice along the slice normal (mm), in any order.
        case: case name used in the error messages.
        tolerance: largest allowed deviation of a gap from the median gap, as a fraction of the median gap.

    Returns:
        The median distance between neighbouring slices (mm).

    Raises:
        ValueError: when the series has fewer than two slices, two slices at the same position, or a gap that
            differs from the others (a missing slice or inconsistent spacing).
    """
    if len(positions) < 2:
        raise ValueError(f"case {case}: the DICOM series has {len(positions)} slice(s), need at least 2")
    ordered = np.sort(np.asarray(positions, dtype=np.float64))
    gaps = np.diff(ordered)
    step = float(np.median(gaps))
    if gaps.min() <= 1e-3 * max(step, 1e-6):
        position = float(ordered[1:][gaps.argmin()])
        raise ValueError(f"case {case}: two DICOM slices lie at the same position ({position:.3f} mm)")
    bad = np.flatnonzero(np.abs(gaps - step) > tolerance * step)
    if bad.size:
        first = int(bad[0])
        raise ValueError(
            f"case {case}: the DICOM series has a missing slice or inconsistent spacing: slices at "
            f"{ordered[first]:.3f} mm and {ordered[first + 1]:.3f} mm are {gaps[first]:.3f} mm apart, the others "
            f"{step:.3f} mm ({bad.size} uneven gap(s) in {len(ordered)} slices)"
        )
    return step


def _parse_numbers(value: str, count: int, tag: str, case: str, path: str) -> np.ndarray:
    try:
        numbers = np.array([float(v) for v in value.strip().strip("\x00").split("\\")], dtype=np.float64)
    except ValueError:
        numbers = np.zeros(0)
    if numbers.size != count:
        raise ValueError(f"case {case}: DICOM tag {tag} of {path} is {value!r}, expected {count} numbers")
    return numbers


def read_dicom_series(folder: str | Path, case: str) -> tuple[itk.Image, list[int]]:
    """Read the CT series of a patient folder with ITK, as Hounsfield units.

    The series is found with ``GDCMSeriesFileNames`` (searching the folder recursively); when the folder holds
    several series, the one with the most slices is used. ITK orders the slices by position; the slice positions
    are checked for gaps.

    Args:
        folder: the patient folder (``PANCREAS_NNNN``) or any folder that holds the series.
        case: case name used in messages.

    Returns:
        A 3D ``itk.Image[itk.F, 3]`` with the DICOM geometry (LPS), and the Instance Number (0020,0013) of each of
        its slices, in ITK's slice order.

    Raises:
        FileNotFoundError: when the folder holds no DICOM series.
        ValueError: when the slices are unevenly spaced or lack the position or instance number tags.
    """
    folder = Path(folder)
    names = itk.GDCMSeriesFileNames.New()
    names.SetUseSeriesDetails(True)
    names.SetRecursive(True)
    names.SetDirectory(str(folder))
    series = {uid: list(names.GetFileNames(uid)) for uid in names.GetSeriesUIDs()}
    if not series:
        raise FileNotFoundError(f"case {case}: no DICOM series found under {folder}")
    uid = max(series, key=lambda u: len(series[u]))
    if len(series) > 1:
        print(f"  case {case}: {len(series)} DICOM series found, using {uid} ({len(series[uid])} slices)")
    image_type = itk.Image[itk.F, 3]
    reader = itk.ImageSeriesReader[image_type].New()
    reader.SetImageIO(itk.GDCMImageIO.New())
    reader.SetFileNames(series[uid])
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.Update()
    positions, instances = [], []
    for path, dictionary in zip(series[uid], reader.GetMetaDataDictionaryArray()):
        for tag, name in _REQUIRED_TAGS.items():
            if not dictionary.HasKey(tag):
                raise ValueError(f"case {case}: {path} lacks the {name} tag ({tag})")
        origin = _parse_numbers(dictionary["0020|0032"], 3, "ImagePositionPatient", case, path)
        cosines = _parse_numbers(dictionary["0020|0037"], 6, "ImageOrientationPatient", case, path)
        positions.append(float(origin @ np.cross(cosines[:3], cosines[3:])))
        instances.append(int(_parse_numbers(dictionary["0020|0013"], 1, "InstanceNumber", case, path)[0]))
    check_slice_positions(positions, case)
    if len(set(instances)) != len(instances):
        raise ValueError(f"case {case}: the DICOM series repeats Instance Numbers, cannot order the label's slices")
    return reader.GetOutput(), instances


def _direction(image: itk.Image) -> np.ndarray:
    return np.asarray(itk.array_from_matrix(image.GetDirection()), dtype=np.float64)


def _size(image: itk.Image) -> tuple[int, int, int]:
    return tuple(int(s) for s in image.GetLargestPossibleRegion().GetSize())


def _array_xyz(image: itk.Image) -> np.ndarray:
    """Voxel array of an ITK image indexed (X, Y, Z), a copy."""
    return np.ascontiguousarray(itk.array_from_image(image).transpose(2, 1, 0))


def align_label_to_image(
    label: np.ndarray, image_size: Sequence[int], instances: Sequence[int], case: str
) -> np.ndarray:
    """Put the voxels of an NIH label file onto the voxel grid of its CT series.

    The NIH label files store the mask in the DICOM pixel order: voxel (i, j, k) is column i, row j of the
    (k + 1)-th image of the series by Instance Number (0020,0013), which is how the benchmark's reference
    preprocessing pairs them. Their NIfTI header geometry is not used. ITK orders the slices by position
    instead, so the label's slices are reordered by the instance numbers of ITK's slices.

    Args:
        label: the label file's voxel array (X, Y, Z) as stored (e.g. ``nibabel``'s ``dataobj``).
        image_size: size (X, Y, Z) of the CT volume as ITK reads it.
        instances: Instance Number of each CT slice in ITK's order (from :func:`read_dicom_series`).
        case: case name used in the error messages.

    Returns:
        Binary mask (label > 0) as uint8, indexed like the CT volume (X, Y, Z).

    Raises:
        ValueError: when the label and image sizes disagree, or the instance numbers do not fit the slices.
    """
    image_size = tuple(int(n) for n in image_size)
    if label.shape != image_size:
        raise ValueError(
            f"case {case}: label size {tuple(label.shape)} does not match the CT image size {image_size} (X, Y, Z)"
        )
    if len(instances) != image_size[2] or len(set(instances)) != len(instances):
        raise ValueError(
            f"case {case}: {len(instances)} distinct instance numbers needed for {image_size[2]} slices"
        )
    order = np.argsort(np.argsort(np.asarray(instances)))  # rank of each ITK slice in instance order
    return np.ascontiguousarray(np.asarray(label)[:, :, order] > 0, dtype=np.uint8)


def _grid_size(size: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[int, int, int]:
    """Size of the grid with ``new_spacing`` that starts at the same origin and stays within the old extent."""
    extent = (np.asarray(size, dtype=np.float64) - 1) * np.asarray(spacing, dtype=np.float64)
    return tuple(int(n) for n in np.floor(extent / np.asarray(new_spacing, dtype=np.float64) + 1e-6) + 1)


def _check_spacing(spacing: Sequence[float], name: str) -> None:
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"{name} must be three positive numbers in mm, got {tuple(spacing)}")


def resample_image(image: itk.Image, spacing: Sequence[float] = OUTPUT_SPACING_MM) -> itk.Image:
    """Resample a CT volume to ``spacing`` (mm) with ITK's linear interpolation.

    The new grid keeps the origin and direction; its size is the largest that stays inside the original extent
    (``floor((n - 1) * old / new) + 1`` voxels per axis), so nothing is extrapolated.
    """
    _check_spacing(spacing, "spacing")
    return itk.resample_image_filter(
        image,
        interpolator=itk.LinearInterpolateImageFunction.New(image),
        size=[int(n) for n in _grid_size(_size(image), image.GetSpacing(), spacing)],
        output_spacing=[float(s) for s in spacing],
        output_origin=image.GetOrigin(),
        output_direction=image.GetDirection(),
        default_pixel_value=-1024.0,
    )


def _axis_sources(size: int, new_size: int, ratio: float) -> np.ndarray:
    """Input indices that feed each output index along one axis, shaped (K, new_size), repeated to fill K."""
    sources: list[set[int]] = [set() for _ in range(new_size)]
    nearest = np.minimum(np.floor(np.arange(new_size) / ratio + 0.5), size - 1).astype(int)  # ITK rounds half up
    for out_index, in_index in enumerate(nearest):
        sources[out_index].add(int(in_index))
    containing = np.minimum(np.floor(np.arange(size) * ratio + 0.5), new_size - 1).astype(int)
    for in_index, out_index in enumerate(containing):
        sources[int(out_index)].add(in_index)
    ordered = [sorted(s) for s in sources]
    depth = max(len(s) for s in ordered)
    return np.array([[s[min(k, len(s) - 1)] for s in ordered] for k in range(depth)], dtype=np.int64)


def resample_label(
    mask: np.ndarray, spacing: Sequence[float], new_spacing: Sequence[float] = OUTPUT_SPACING_MM
) -> np.ndarray:
    """Resample a binary mask to ``new_spacing`` (mm) by nearest neighbour, keeping thin structures.

    Nearest neighbour alone skips structures one voxel thick wherever the new voxels are larger than the old ones
    (CT in-plane spacing is often 0.6-0.9 mm). So along each axis an output voxel is foreground when its nearest
    input voxel is, or when any input voxel whose centre falls inside it is: no labelled voxel disappears, a thin
    structure stays connected, and where the axis was not made coarser the result is plain nearest neighbour.

    Args:
        mask: binary mask (X, Y, Z).
        spacing: its voxel size (mm).
        new_spacing: the new voxel size (mm).

    Returns:
        uint8 mask on the grid that :func:`resample_image` produces for an image of this size and spacing (same
        origin and direction, ``floor((n - 1) * old / new) + 1`` voxels per axis).
    """
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3D array (X, Y, Z), got shape {mask.shape}")
    _check_spacing(spacing, "spacing")
    _check_spacing(new_spacing, "new_spacing")
    new_size = _grid_size(mask.shape, spacing, new_spacing)
    out = np.asarray(mask) > 0
    for axis in range(3):
        ratio = float(spacing[axis]) / float(new_spacing[axis])
        sources = _axis_sources(out.shape[axis], new_size[axis], ratio)
        out = np.logical_or.reduce([np.take(out, indices, axis=axis) for indices in sources])
    return out.astype(np.uint8)


def itk_to_ras_array(image: itk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Voxel array (X, Y, Z) and the 4x4 RAS voxel-to-world affine (as NIfTI stores it) of an ITK image."""
    direction = _direction(image)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=np.float64)
    return _array_xyz(image), affine


def window_ct(array: np.ndarray, window: Sequence[float] = HU_WINDOW) -> np.ndarray:
    """Clip CT numbers to ``window`` (HU) and rescale them linearly to [0, 1] (float32)."""
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ValueError(f"the HU window must be (low, high) with high > low, got {tuple(window)}")
    scale = ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True)
    return convert_to_numpy(scale(np.asarray(array, dtype=np.float32)), dtype=np.float32)


def crop_around_label(
    image: np.ndarray, mask: np.ndarray, affine: np.ndarray, margin_mm: float, case: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MC-Net+ benchmark crop: the label's bounding box widened by ``margin_mm`` in X and Y, all of Z.

    Args:
        image: volume (X, Y, Z).
        mask: binary label of the same shape.
        affine: 4x4 voxel-to-world matrix of both; the crop moves its origin.
        margin_mm: margin added on each side in X and Y (mm), clipped at the volume's border.
        case: case name used in the error messages.

    Returns:
        The cropped image, mask and affine.
    """
    if image.shape != mask.shape:
        raise ValueError(f"case {case}: image shape {image.shape} and label shape {mask.shape} differ")
    if margin_mm < 0:
        raise ValueError(f"crop_margin must be >= 0 mm, got {margin_mm}")
    if not mask.any():
        raise ValueError(f"case {case}: the label is empty, cannot crop around the pancreas")
    voxel_mm = np.linalg.norm(affine[:3, :3], axis=0)
    margin = [int(np.ceil(margin_mm / voxel_mm[0] - 1e-6)), int(np.ceil(margin_mm / voxel_mm[1] - 1e-6)), 0]
    start, end = generate_spatial_bounding_box(mask[None], select_fn=lambda x: x > 0, margin=margin, allow_smaller=True)
    start[2], end[2] = 0, mask.shape[2]
    box = tuple(slice(int(s), int(e)) for s, e in zip(start, end))
    cropped_affine = affine.copy()
    cropped_affine[:3, 3] = (affine @ np.array([float(start[0]), float(start[1]), 0.0, 1.0]))[:3]
    return image[box].copy(), mask[box].copy(), cropped_affine


def prepare_case(
    folder: str | Path, label_file: str | Path, case: str, crop_margin: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read, align, resample, window and optionally crop one case.

    Args:
        folder: the patient's DICOM folder.
        label_file: the NIH label file of the case.
        case: case name used in messages.
        crop_margin: X/Y margin (mm) of the MC-Net+ crop around the label; None keeps the whole volume.

    Returns:
        image (X, Y, Z) float32 in [0, 1], label (X, Y, Z) uint8 in {0, 1}, and their 4x4 RAS affine (1 mm voxels).
    """
    label_file = Path(label_file)
    if not label_file.is_file():
        raise FileNotFoundError(f"case {case}: label file not found: {label_file}")
    ct, instances = read_dicom_series(folder, case)
    label_nifti = nib.load(str(label_file))
    if len(label_nifti.shape) != 3:
        raise ValueError(f"case {case}: {label_file} is not a 3D volume (shape {label_nifti.shape})")
    mask = align_label_to_image(np.asanyarray(label_nifti.dataobj), _size(ct), instances, case)
    zooms, ct_spacing = np.asarray(label_nifti.header.get_zooms()[:3]), np.asarray(ct.GetSpacing())
    if not np.allclose(zooms, ct_spacing, rtol=0.02):
        print(f"  case {case}: note: label voxel size {zooms.round(3)} mm differs from the CT's {ct_spacing.round(3)}")
    resampled = resample_image(ct, OUTPUT_SPACING_MM)
    hu, affine = itk_to_ras_array(resampled)
    label = resample_label(mask, ct.GetSpacing(), OUTPUT_SPACING_MM)
    if label.shape != hu.shape:
        raise RuntimeError(f"case {case}: resampled label {label.shape} and image {hu.shape} grids differ")
    image = window_ct(hu)
    if crop_margin is not None:
        image, label, affine = crop_around_label(image, label, affine, crop_margin, case)
    return image, label, affine


def prepare_pancreas(
    src: str,
    dst: str,
    labels: str | None = None,
    crop_margin: float | None = None,
    split_dir: str | None = None,
) -> Path:
    """Prepare NIH Pancreas-CT for the pancreas bundle: 1 mm NIfTI volumes and <dst>/datalist.json.

    Args:
        src: folder holding the TCIA DICOM trees (one PANCREAS_NNNN folder per patient, at any depth, so the release
            folder or any folder above it: the rule of :func:`semiseg.data.release.find_release_folder`) and, unless
            --labels is given, the NIH label files labelNNNN.nii.gz (at any depth).
        dst: output folder; gets imagesTr/, labelsTr/, imagesTs/, labelsTs/ and datalist.json.
        labels: folder holding the NIH label files, when they are not under --src.
        crop_margin: margin (mm) of the MC-Net+ benchmark protocol's crop, which keeps the pancreas label's
            bounding box widened by this margin in X and Y, with all of Z. Default None (no crop). The crop needs
            the label, so it only serves to reproduce the benchmark; inference on new CT needs no label.
        split_dir: folder with train.txt and test.txt; default bundles/pancreas/splits beside this script
            (the MC-Net+ lists, 62 / 20 cases).

    Returns:
        Path of the datalist written.
    """
    if not Path(str(src)).is_dir():
        raise FileNotFoundError(f"--src folder not found: {src}")
    label_root = Path(str(labels)) if labels is not None else Path(str(src))
    if not label_root.is_dir():
        raise FileNotFoundError(f"--labels folder not found: {label_root}")
    if crop_margin is not None and not is_number(crop_margin):
        raise ValueError(f"--crop_margin must be a number of mm, got {crop_margin!r}")
    if crop_margin is not None and crop_margin < 0:
        raise ValueError(f"--crop_margin must be >= 0 mm, got {crop_margin}")
    splits = Path(str(split_dir)) if split_dir is not None else DEFAULT_SPLIT_DIR
    lists = {"training": read_case_list(splits / "train.txt"), "test": read_case_list(splits / "test.txt")}
    numbers = [case_number(case) for cases in lists.values() for case in cases]
    repeated = sorted({n for n in numbers if numbers.count(n) > 1})
    if repeated:
        raise ValueError(f"the split lists in {splits} name these cases more than once: {repeated}")
    output = Path(str(dst))
    listed = [case for cases in lists.values() for case in cases]

    def holds_cases(folder: Path) -> bool:  # patient folders are found at any depth: a parent folder holds them too
        found = find_patient_folders(folder)
        return any(case_number(case) in found for case in listed)

    source = find_release_folder(
        src, holds_cases, f"none of the {len(listed)} listed cases has a PANCREAS_NNNN folder under {src}"
    )
    patients = find_patient_folders(source)
    label_files = find_label_files(label_root)

    missing = find_missing_cases(
        lists, lambda case: case_number(case) in patients, "not in this release (no PANCREAS_NNNN folder)"
    )
    for name, cases in lists.items():
        for case in cases:
            number = case_number(case)
            if number in patients and number not in label_files:
                raise FileNotFoundError(
                    f"case {case}: no label file label{number}.nii.gz under {label_root} "
                    f"(the DICOM folder {patients[number]} exists)"
                )

    entries: dict[str, list[dict[str, str]]] = {"training": [], "test": []}
    folders = {"training": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}
    present = sum(len(cases) - len(missing[name]) for name, cases in lists.items())
    done = 0
    for name, cases in lists.items():
        image_dir, label_dir = folders[name]
        for case in cases:
            number = case_number(case)
            if number not in patients:
                continue
            done += 1
            image, label, affine = prepare_case(patients[number], label_files[number], case, crop_margin)
            image_rel = f"{image_dir}/pancreas_{number}.nii.gz"
            label_rel = f"{label_dir}/pancreas_{number}.nii.gz"
            save_volume(image, output / image_rel, affine=affine)
            save_volume(label, output / label_rel, affine=affine)
            entries[name].append({"image": image_rel, "label": label_rel})
            print(
                f"[{done}/{present}] {name} {case} (PANCREAS_{number}): {'x'.join(map(str, image.shape))} voxels "
                f"of 1 mm, pancreas {int(label.sum())} voxels -> {image_rel}"
            )

    effective = {name: len(entries[name]) for name in entries}
    datalist = write_datalist(
        output,
        training=entries["training"],
        test=entries["test"],
        name="NIH Pancreas-CT",
        description="Pancreas segmentation in contrast-enhanced abdominal CT; split of the MC-Net+ benchmark",
        labels={"0": "background", "1": "pancreas"},
        modality={"0": "CT"},
        preprocessing={
            "spacing_mm": list(OUTPUT_SPACING_MM),
            "hu_window": list(HU_WINDOW),
            "intensity_range": [0.0, 1.0],
            "crop_margin_mm": crop_margin,
        },
        split_lists={name: str(splits / f"{'train' if name == 'training' else 'test'}.txt") for name in lists},
        listed_split={name: len(cases) for name, cases in lists.items()},
        effective_split=effective,
        missing_cases=missing,
    )
    print(f"{effective_split(lists, entries)}; datalist: {datalist}")
    return datalist


if __name__ == "__main__":
    fire.Fire(prepare_pancreas)
