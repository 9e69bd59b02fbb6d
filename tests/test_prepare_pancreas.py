from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_pancreas.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_pancreas", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["prepare_pancreas"] = module
    spec.loader.exec_module(module)
    return module


pp = _load_script()

SIZE = (16, 12, 6)  # X, Y, Z voxels
SPACING = (0.7, 0.8, 2.0)  # mm
ORIGIN_LPS = (-10.0, -20.0, 100.0)
PANCREAS = (slice(4, 11), slice(3, 9), slice(1, 5))  # X, Y, Z voxels; centres at 2.8-7.0, 2.4-6.4, 2-8 mm
# the RAS affine NIfTI stores for that DICOM geometry (identity direction in LPS)
AFFINE_RAS = np.array(
    [[-0.7, 0.0, 0.0, 10.0], [0.0, -0.8, 0.0, 20.0], [0.0, 0.0, 2.0, 100.0], [0.0, 0.0, 0.0, 1.0]]
)


def _phantom_hu() -> np.ndarray:
    """(X, Y, Z) int16 CT numbers: air, a 40 HU body, a 100 HU pancreas and a 700 HU bone column."""
    hu = np.full(SIZE, -1000, dtype=np.int16)
    hu[2:14, 1:11, :] = 40
    hu[PANCREAS] = 100
    hu[13:15, 1:3, :] = 700
    return hu


def _write_series(
    folder: Path, hu: np.ndarray, number: str, skip: tuple[int, ...] = (), instances: list[int] | None = None
) -> None:
    """Write (X, Y, Z) CT numbers as one DICOM file per axial slice, as the TCIA download has them."""
    folder.mkdir(parents=True, exist_ok=True)
    instances = instances or list(range(1, hu.shape[2] + 1))
    for k in range(hu.shape[2]):
        if k in skip:
            continue
        z = ORIGIN_LPS[2] + k * SPACING[2]
        piece = itk.image_from_array(np.ascontiguousarray(hu[:, :, k : k + 1].transpose(2, 1, 0)))
        piece.SetSpacing(SPACING)
        piece.SetOrigin((ORIGIN_LPS[0], ORIGIN_LPS[1], z))
        tags = piece.GetMetaDataDictionary()
        for tag, value in {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0060": "CT",
            "0010|0020": f"PANCREAS_{number}",
            "0020|000d": f"1.2.826.0.1.3680043.2.1125.{int(number)}.1",
            "0020|000e": f"1.2.826.0.1.3680043.2.1125.{int(number)}.2",
            "0020|0013": str(instances[k]),
            "0020|0032": f"{ORIGIN_LPS[0]}\\{ORIGIN_LPS[1]}\\{z}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{SPACING[1]}\\{SPACING[0]}",
            "0018|0050": str(SPACING[2]),
        }.items():
            tags[tag] = value
        io = itk.GDCMImageIO.New()
        io.KeepOriginalUIDOn()
        writer = itk.ImageFileWriter[type(piece)].New(Input=piece, FileName=str(folder / f"1-{k + 1:03d}.dcm"))
        writer.SetImageIO(io)
        writer.Update()


def _write_label(path: Path, mask: np.ndarray, affine: np.ndarray = AFFINE_RAS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(path))


def _pancreas_mask() -> np.ndarray:
    mask = np.zeros(SIZE, dtype=np.uint8)
    mask[PANCREAS] = 1
    return mask


def _release(root: Path, numbers=("0001", "0002", "0003"), labels: bool = True) -> Path:
    """TCIA layout: Pancreas-CT/PANCREAS_NNNN/<study>/<series>/*.dcm plus the NIH label folder."""
    src = root / "src"
    for number in numbers:
        series = src / "Pancreas-CT" / f"PANCREAS_{number}" / "11-24-2015-Pancreas" / "Pancreas-99667"
        _write_series(series, _phantom_hu(), number)
        if labels:
            _write_label(src / "TCIA_pancreas_labels-02-05-2017" / f"label{number}.nii.gz", _pancreas_mask())
    return src


def _splits(root: Path, train: list[str], test: list[str]) -> Path:
    folder = root / "splits"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("\n".join(train) + "\n")
    (folder / "test.txt").write_text("\n".join(test) + "\n")
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return _release(tmp_path_factory.mktemp("pancreas"))


def test_case_number():
    assert pp.case_number("image0002") == "0002"
    assert pp.case_number("PANCREAS_0070") == "0070"
    assert pp.case_number("label0025") == "0025"
    assert pp.case_number("7") == "0007"
    with pytest.raises(ValueError, match="cannot read a Pancreas-CT case number from 'case_two'"):
        pp.case_number("case_two")


def test_check_slice_positions():
    assert pp.check_slice_positions([104.0, 100.0, 102.0, 106.0], "image0001") == pytest.approx(2.0)
    with pytest.raises(ValueError, match=r"case image0001: .*missing slice.*102.000 mm and 106.000 mm are 4.000 mm"):
        pp.check_slice_positions([100.0, 102.0, 106.0, 108.0, 110.0], "image0001")
    with pytest.raises(ValueError, match="case image0001: two DICOM slices lie at the same position"):
        pp.check_slice_positions([100.0, 102.0, 102.0, 104.0], "image0001")
    with pytest.raises(ValueError, match="case image0001: the DICOM series has 1 slice"):
        pp.check_slice_positions([100.0], "image0001")


def test_read_dicom_series_geometry_and_hu(release):
    image, instances = pp.read_dicom_series(release / "Pancreas-CT" / "PANCREAS_0001", "image0001")
    assert instances == [1, 2, 3, 4, 5, 6]
    assert tuple(image.GetSpacing()) == pytest.approx(SPACING)
    assert tuple(image.GetOrigin()) == pytest.approx(ORIGIN_LPS)
    array, affine = pp.itk_to_ras_array(image)
    np.testing.assert_array_equal(array, _phantom_hu())
    np.testing.assert_allclose(affine, AFFINE_RAS, atol=1e-6)


def test_resample_label_keeps_one_voxel_thick_structures():
    spacing = (0.7, 0.7, 2.5)
    plane = np.zeros((20, 20, 6), dtype=np.uint8)
    plane[5] = 1  # x = 3.5 mm: plain nearest neighbour on a 1 mm grid samples x = 2.8 and 4.2 mm only
    out = pp.resample_label(plane, spacing)
    assert out.shape == (14, 14, 13)  # floor((n - 1) * old / new) + 1
    nearest_x = np.floor(np.arange(14) / 0.7 + 0.5).astype(int)
    assert 5 not in nearest_x  # nearest neighbour alone would lose the plane
    np.testing.assert_array_equal(np.flatnonzero(out.any(axis=(1, 2))), [4])
    assert out[4].all()  # still a whole, unbroken plane

    line = np.zeros((20, 20, 6), dtype=np.uint8)
    line[5, 2, :] = 1
    out = pp.resample_label(line, spacing)
    assert out.sum() == 13 and out[4, 1, :].all()

    thin_slice = np.zeros((4, 4, 6), dtype=np.uint8)
    thin_slice[:, :, 2] = 1  # one 2.5 mm slice centred at z = 5 mm covers z = 4, 5, 6 mm on the 1 mm grid
    out = pp.resample_label(thin_slice, (1.0, 1.0, 2.5))
    np.testing.assert_array_equal(np.flatnonzero(out.any(axis=(0, 1))), [4, 5, 6])


def test_resample_label_rejects_bad_spacing():
    with pytest.raises(ValueError, match=r"new_spacing must be three positive numbers in mm, got \(1.0, 0.0, 1.0\)"):
        pp.resample_label(np.zeros((4, 4, 4)), (1.0, 1.0, 1.0), (1.0, 0.0, 1.0))


def test_window_ct_by_hand():
    values = pp.window_ct(np.array([-1000.0, -125.0, 0.0, 100.0, 275.0, 700.0]))
    np.testing.assert_allclose(values, [0.0, 0.0, 0.3125, 0.5625, 1.0, 1.0], atol=1e-6)
    assert values.dtype == np.float32


def test_align_label_orders_slices_by_instance_number():
    label = np.zeros((2, 2, 3), dtype=np.uint8)
    label[0, 1, 0] = 1  # stored slice 0 = instance 1
    label[1, 0, 2] = 7  # stored slice 2 = instance 3
    aligned = pp.align_label_to_image(label, (2, 2, 3), [3, 1, 2], "image0001")  # ITK slice 0 is instance 3
    expected = np.zeros((2, 2, 3), dtype=np.uint8)
    expected[1, 0, 0] = 1
    expected[0, 1, 1] = 1
    np.testing.assert_array_equal(aligned, expected)
    with pytest.raises(ValueError, match="case image0001: 2 distinct instance numbers needed for 3 slices"):
        pp.align_label_to_image(label, (2, 2, 3), [1, 2], "image0001")


def test_label_of_a_series_with_descending_instance_numbers(tmp_path):
    """TCIA series often count instances from the head down; the NIH label follows the instance order."""
    src = tmp_path / "src"
    mask = _pancreas_mask()
    mask[5:7, 4:6, 0] = 1  # makes the mask asymmetric in Z
    _write_series(src / "PANCREAS_0006" / "s" / "s", _phantom_hu(), "0006")
    _write_label(src / "label0006.nii.gz", mask)
    _write_series(src / "PANCREAS_0007" / "s" / "s", _phantom_hu(), "0007", instances=[6, 5, 4, 3, 2, 1])
    _write_label(src / "label0007.nii.gz", mask[:, :, ::-1], affine=np.eye(4))  # the header is not used
    ascending = pp.prepare_case(src / "PANCREAS_0006", src / "label0006.nii.gz", "image0006")
    descending = pp.prepare_case(src / "PANCREAS_0007", src / "label0007.nii.gz", "image0007")
    assert ascending[1][:, :, 0].any() and not ascending[1][:, :, -1].any()
    for got, want in zip(descending, ascending):
        np.testing.assert_array_equal(got, want)


def test_prepare_case_outputs(release):
    folder = release / "Pancreas-CT" / "PANCREAS_0001"
    label_file = release / "TCIA_pancreas_labels-02-05-2017" / "label0001.nii.gz"
    image, label, affine = pp.prepare_case(folder, label_file, "image0001")
    assert image.shape == label.shape == (11, 9, 11)  # 15 * 0.7, 11 * 0.8, 5 * 2 mm of extent, 1 mm voxels
    np.testing.assert_allclose(np.abs(np.diag(affine)[:3]), 1.0)
    np.testing.assert_allclose(affine[:3, 3], [10.0, 20.0, 100.0], atol=1e-6)  # origin kept (RAS)
    assert image.dtype == np.float32 and image.min() == 0.0 and image.max() == pytest.approx(1.0)
    assert set(np.unique(label)) == {0, 1}
    # the label still sits on the 100 HU pancreas: (100 + 125) / 400
    assert float(np.median(image[label > 0])) == pytest.approx(0.5625, abs=1e-6)
    # 1 mm voxels that contain a pancreas voxel centre (x 2.8-7.0, y 2.4-6.4, z 2-8 mm) or whose nearest voxel is one
    xs, ys, zs = (np.flatnonzero(label.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    assert (xs.min(), xs.max(), ys.min(), ys.max(), zs.min(), zs.max()) == (3, 7, 2, 6, 1, 8)
    assert label.sum() == 5 * 5 * 8


def test_crop_margin_is_the_label_box_plus_margin_in_xy(release):
    folder = release / "Pancreas-CT" / "PANCREAS_0001"
    label_file = release / "TCIA_pancreas_labels-02-05-2017" / "label0001.nii.gz"
    full_image, full_label, full_affine = pp.prepare_case(folder, label_file, "image0001")
    image, label, affine = pp.prepare_case(folder, label_file, "image0001", crop_margin=1)
    # label box x 3..7, y 2..6 widened by 1 mm, all z
    np.testing.assert_array_equal(image, full_image[2:9, 1:8, :])
    np.testing.assert_array_equal(label, full_label[2:9, 1:8, :])
    np.testing.assert_allclose(affine[:3, 3], (full_affine @ [2, 1, 0, 1])[:3])
    np.testing.assert_allclose(affine[:3, :3], full_affine[:3, :3])
    assert label.sum() == full_label.sum()
    image, _, _ = pp.prepare_case(folder, label_file, "image0001", crop_margin=50)  # clipped at the border
    assert image.shape == full_image.shape


def test_prepare_pancreas_datalist_and_missing_cases(release, tmp_path, capsys):
    splits = _splits(tmp_path, ["image0002", "image0025", "image0001"], ["image0003"])
    dst = tmp_path / "out"
    datalist = pp.prepare_pancreas(str(release), str(dst), split_dir=str(splits))
    out = capsys.readouterr().out
    assert "training: 1 listed case(s) not in this release (no PANCREAS_NNNN folder): ['image0025']" in out
    assert "effective split: training 2 of 3, test 1 of 1 listed cases" in out
    assert "[1/3] training image0002 (PANCREAS_0002)" in out
    content = json.loads(datalist.read_text())
    assert content["training"] == [
        {"image": "imagesTr/pancreas_0002.nii.gz", "label": "labelsTr/pancreas_0002.nii.gz"},
        {"image": "imagesTr/pancreas_0001.nii.gz", "label": "labelsTr/pancreas_0001.nii.gz"},
    ]
    assert content["test"] == [{"image": "imagesTs/pancreas_0003.nii.gz", "label": "labelsTs/pancreas_0003.nii.gz"}]
    assert "validation" not in content
    assert content["effective_split"] == {"training": 2, "test": 1}
    assert content["listed_split"] == {"training": 3, "test": 1}
    assert content["missing_cases"] == {"training": ["image0025"], "test": []}
    assert content["preprocessing"]["crop_margin_mm"] is None
    written = nib.load(str(dst / "imagesTr" / "pancreas_0002.nii.gz"))
    np.testing.assert_allclose(written.header.get_zooms(), (1.0, 1.0, 1.0))
    np.testing.assert_allclose(written.affine[:3, 3], [10.0, 20.0, 100.0], atol=1e-5)
    label = nib.load(str(dst / "labelsTs" / "pancreas_0003.nii.gz"))
    assert label.get_data_dtype() == np.uint8 and label.shape == written.shape


def test_cli_runs_from_the_repository_root(release, tmp_path):
    splits = _splits(tmp_path, ["image0001"], ["image0003"])
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--src", str(release), "--dst", str(tmp_path / "out"), "--split_dir", str(splits),
         "--crop_margin", "2"],
        cwd=SCRIPT.parents[1], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    content = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert content["preprocessing"]["crop_margin_mm"] == 2
    assert nib.load(str(tmp_path / "out" / "imagesTr" / "pancreas_0001.nii.gz")).shape == (9, 9, 11)


def test_default_split_lists_are_the_benchmark_ones():
    train = pp.read_case_list(pp.DEFAULT_SPLIT_DIR / "train.txt")
    test = pp.read_case_list(pp.DEFAULT_SPLIT_DIR / "test.txt")
    assert len(train) == 62 and len(test) == 20 and not set(train) & set(test)
    assert "image0025" in test and "image0070" in train


def test_missing_slice_names_the_case(tmp_path):
    src = tmp_path / "src"
    _write_series(src / "PANCREAS_0004" / "study" / "series", _phantom_hu(), "0004", skip=(3,))
    _write_label(src / "label0004.nii.gz", _pancreas_mask())
    splits = str(_splits(tmp_path, ["image0004"], ["image0009"]))
    with pytest.raises(ValueError, match="case image0004: the DICOM series has a missing slice or inconsistent"):
        pp.prepare_pancreas(str(src), str(tmp_path / "out"), split_dir=splits)


def test_label_size_mismatch_names_the_case(tmp_path):
    src = tmp_path / "src"
    _write_series(src / "PANCREAS_0005" / "study" / "series", _phantom_hu(), "0005")
    _write_label(src / "labels" / "label0005.nii.gz", np.zeros((16, 12, 5), dtype=np.uint8))
    splits = str(_splits(tmp_path, ["image0005"], ["image0006"]))
    message = r"case image0005: label size \(16, 12, 5\) does not match the CT image size \(16, 12, 6\)"
    with pytest.raises(ValueError, match=message):
        pp.prepare_pancreas(str(src), str(tmp_path / "out"), split_dir=splits)


def test_missing_label_file_names_the_case(tmp_path):
    src = _release(tmp_path, numbers=("0001",), labels=False)
    with pytest.raises(FileNotFoundError, match="case image0001: no label file label0001.nii.gz under"):
        pp.prepare_pancreas(str(src), str(tmp_path / "o"), split_dir=str(_splits(tmp_path, ["image0001"], ["image2"])))


def test_labels_option_and_argument_checks(release, tmp_path):
    splits = str(_splits(tmp_path, ["image0001"], ["image0002"]))
    with pytest.raises(FileNotFoundError, match="--src folder not found: .*nowhere"):
        pp.prepare_pancreas(str(tmp_path / "nowhere"), str(tmp_path / "out"), split_dir=splits)
    with pytest.raises(FileNotFoundError, match="--labels folder not found"):
        pp.prepare_pancreas(str(release), str(tmp_path / "o"), labels=str(tmp_path / "nolabels"), split_dir=splits)
    (tmp_path / "empty_labels").mkdir()
    with pytest.raises(FileNotFoundError, match="case image0001: no label file label0001.nii.gz under .*empty_labels"):
        pp.prepare_pancreas(str(release), str(tmp_path / "o"), labels=str(tmp_path / "empty_labels"), split_dir=splits)
    with pytest.raises(ValueError, match=r"the split lists in .* name these cases more than once: \['0001'\]"):
        pp.prepare_pancreas(str(release), str(tmp_path), split_dir=str(_splits(tmp_path / "d", ["image0001"], ["1"])))
    with pytest.raises(ValueError, match="--crop_margin must be >= 0 mm, got -3"):
        pp.prepare_pancreas(str(release), str(tmp_path / "out"), crop_margin=-3, split_dir=splits)
    with pytest.raises(FileNotFoundError, match="none of the 2 listed cases has a PANCREAS_NNNN folder"):
        other = str(_splits(tmp_path / "s", ["image0009"], ["image0010"]))
        pp.prepare_pancreas(str(release), str(tmp_path / "out"), split_dir=other)


def test_src_may_be_the_release_folder_or_a_folder_above_it(release, tmp_path):
    splits = str(_splits(tmp_path, ["image0001"], ["image0003"]))
    above = pp.prepare_pancreas(str(release.parent), str(tmp_path / "above"), split_dir=splits)
    labels = str(release / "TCIA_pancreas_labels-02-05-2017")
    inside = pp.prepare_pancreas(str(release / "Pancreas-CT"), str(tmp_path / "in"), labels=labels, split_dir=splits)
    for datalist in (above, inside):
        assert json.loads(datalist.read_text())["effective_split"] == {"training": 1, "test": 1}
    with pytest.raises(FileNotFoundError, match="--src should be the release folder or the folder holding it"):
        pp.prepare_pancreas(str(tmp_path / "splits"), str(tmp_path / "o"), labels=labels, split_dir=splits)
