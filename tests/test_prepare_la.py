"""Tests of scripts/prepare_la.py on tiny synthetic releases in both layouts (UA-MT h5 and challenge nrrd)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import h5py
import nibabel as nib
import nrrd
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (10, 9, 6)


def _load_script():
    spec = importlib.util.spec_from_file_location("prepare_la_script", ROOT / "scripts" / "prepare_la.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare = _load_script()
TRAIN = (ROOT / "bundles/la/splits/train.txt").read_text().split()
TEST = (ROOT / "bundles/la/splits/test.txt").read_text().split()
NRRD_HEADER = {
    "space": "left-posterior-superior",
    "space directions": np.diag([0.7, 0.8, 1.5]),
    "space origin": np.array([10.0, 20.0, -5.0]),
}


def _volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.random(SHAPE).astype(np.float32)
    label = (rng.random(SHAPE) > 0.7).astype(np.uint8)
    return image, label


def _write_h5(src: Path, case: str, seed: int, keys=("image", "label")) -> tuple[np.ndarray, np.ndarray]:
    image, label = _volume(seed)
    (src / case).mkdir(parents=True)
    with h5py.File(src / case / "mri_norm2.h5", "w") as h5:
        for key, array in (("image", image), ("label", label)):
            if key in keys:
                h5.create_dataset(key, data=array, compression="gzip")
    return image, label


def _write_nrrd(src: Path, case: str, seed: int, label_shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    image, label = _volume(seed)
    image = (image * 255).astype(np.uint8)
    endo = np.zeros(label_shape, np.uint8)
    endo[: SHAPE[0], : SHAPE[1], : min(SHAPE[2], label_shape[2])][label[:, :, : label_shape[2]] > 0] = 255
    endo[0, 0, 0] = 128  # anything but 255 is background
    (src / case).mkdir(parents=True)
    nrrd.write(str(src / case / "lgemri.nrrd"), image, NRRD_HEADER)
    nrrd.write(str(src / case / "laendo.nrrd"), endo, NRRD_HEADER)
    expected = (endo == 255).astype(np.uint8)
    return image.astype(np.float32), expected


def test_bundle_splits_are_the_ua_mt_lists() -> None:
    assert len(TRAIN) == len(set(TRAIN)) == 80
    assert len(TEST) == len(set(TEST)) == 20
    assert not set(TRAIN) & set(TEST)
    assert TRAIN[:2] == ["06SR5RBREL16DQ6M8LWS", "0RZDK210BSMWAA6467LU"]


def test_both_layouts_content_spacing_and_datalist(tmp_path: Path, capsys) -> None:
    src, dst = tmp_path / "2018LA_Seg_Training Set", tmp_path / "out"
    expected = {
        TRAIN[0]: _write_h5(src, TRAIN[0], 0),
        TRAIN[5]: _write_nrrd(src, TRAIN[5], 1),
        TRAIN[2]: _write_h5(src, TRAIN[2], 2),
        TEST[3]: _write_nrrd(src, TEST[3], 3),
    }
    datalist = prepare.prepare_la(str(src), str(dst))
    assert datalist == dst / "datalist.json"

    content = json.loads(datalist.read_text())
    # training in list order (TRAIN[2] before TRAIN[5]), test separately, paths relative to dst
    assert content["training"] == [
        {"image": f"images/{c}.nii.gz", "label": f"labels/{c}.nii.gz"} for c in (TRAIN[0], TRAIN[2], TRAIN[5])
    ]
    assert content["test"] == [{"image": f"images/{TEST[3]}.nii.gz", "label": f"labels/{TEST[3]}.nii.gz"}]
    assert content["effective_split"] == {"training": 3, "test": 1}
    assert content["listed_split"] == {"training": 80, "test": 20}
    assert content["missing_cases"]["training"] == [c for c in TRAIN if c not in expected]
    assert content["missing_cases"]["test"] == [c for c in TEST if c != TEST[3]]
    assert content["source_layouts"] == {"h5": 2, "nrrd": 2}

    for case, (image, label) in expected.items():
        image_file = nib.load(str(dst / "images" / f"{case}.nii.gz"))
        label_file = nib.load(str(dst / "labels" / f"{case}.nii.gz"))
        np.testing.assert_array_equal(np.asarray(image_file.dataobj), image)
        np.testing.assert_array_equal(np.asarray(label_file.dataobj), label)
        assert image_file.get_data_dtype() == np.float32 and label_file.get_data_dtype() == np.uint8
        np.testing.assert_allclose(label_file.affine, image_file.affine)
    h5_affine = nib.load(str(dst / "images" / f"{TRAIN[0]}.nii.gz")).affine
    np.testing.assert_allclose(h5_affine, np.diag([0.625, 0.625, 0.625, 1.0]))
    nrrd_affine = nib.load(str(dst / "images" / f"{TRAIN[5]}.nii.gz")).affine
    # LPS directions and origin of the nrrd, in RAS
    np.testing.assert_allclose(
        nrrd_affine, [[-0.7, 0, 0, -10.0], [0, -0.8, 0, -20.0], [0, 0, 1.5, -5.0], [0, 0, 0, 1]], atol=1e-6
    )

    out = capsys.readouterr().out
    assert f"training: 77 listed case(s) not found in {src}, skipped:" in out
    assert f"[1/4] training {TRAIN[0]} (h5): 10x9x6 voxels of 0.625x0.625x0.625 mm" in out
    assert f"[3/4] training {TRAIN[5]} (nrrd): 10x9x6 voxels of 0.7x0.8x1.5 mm" in out
    assert "effective split: training 3 of 80, test 1 of 20 listed cases" in out


def test_forced_layout_and_release_subfolder(tmp_path: Path) -> None:
    release = tmp_path / "download" / "2018LA_Seg_Training Set"
    _write_h5(release, TRAIN[0], 0)
    _write_nrrd(release, TRAIN[1], 1)
    datalist = prepare.prepare_la(str(tmp_path / "download"), str(tmp_path / "out"), layout="nrrd")
    content = json.loads(datalist.read_text())
    assert [e["image"] for e in content["training"]] == [f"images/{TRAIN[1]}.nii.gz"]
    assert content["source_layouts"] == {"nrrd": 1}
    assert "test" not in content and content["effective_split"] == {"training": 1, "test": 0}


def test_no_listed_case_found(tmp_path: Path) -> None:
    (tmp_path / "src" / "SOMETHING_ELSE").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        prepare.prepare_la(str(tmp_path / "src"), str(tmp_path / "out"))
    assert str(error.value).startswith(f"none of the 100 listed cases (e.g. {TRAIN[0]}/mri_norm2.h5 or lgemri.nrrd)")
    with pytest.raises(FileNotFoundError, match="--src folder not found"):
        prepare.prepare_la(str(tmp_path / "absent"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"--layout must be one of \('auto', 'h5', 'nrrd'\), got 'dicom'"):
        prepare.prepare_la(str(tmp_path / "src"), str(tmp_path / "out"), layout="dicom")


def test_h5_without_label_names_the_case(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_h5(src, TRAIN[0], 0)
    _write_h5(src, TRAIN[1], 1, keys=("image",))
    with pytest.raises(ValueError) as error:
        prepare.prepare_la(str(src), str(tmp_path / "out"))
    assert str(error.value) == (
        f"case {TRAIN[1]}: {src / TRAIN[1] / 'mri_norm2.h5'} has no dataset ['label'] (it holds ['image'])"
    )


def test_nrrd_label_of_another_shape_names_the_case(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_nrrd(src, TRAIN[3], 0, label_shape=(10, 9, 5))
    with pytest.raises(ValueError) as error:
        prepare.prepare_la(str(src), str(tmp_path / "out"))
    label_file = src / TRAIN[3] / "laendo.nrrd"
    assert str(error.value) == (
        f"case {TRAIN[3]}: label shape (10, 9, 5) differs from image shape (10, 9, 6) ({label_file})"
    )


def test_nrrd_case_missing_its_label_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_nrrd(src, TRAIN[0], 0)
    (src / TRAIN[0] / "laendo.nrrd").unlink()
    with pytest.raises(FileNotFoundError, match=f"case {TRAIN[0]}: .*laendo.nrrd not found"):
        prepare.prepare_la(str(src), str(tmp_path / "out"))


def test_only_test_cases_found(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_h5(src, TEST[0], 0)
    with pytest.raises(FileNotFoundError) as error:
        prepare.prepare_la(str(src), str(tmp_path / "out"))
    assert str(error.value) == (
        f"none of the 80 training cases of {prepare.DEFAULT_SPLIT_DIR / 'train.txt'} is in {src} "
        "(only test cases are): nothing to train on"
    )
    assert not (tmp_path / "out").exists()


def test_command_line(tmp_path: Path) -> None:
    src = tmp_path / "src"
    image, label = _write_h5(src, TRAIN[7], 4)
    run = subprocess.run(
        [sys.executable, "scripts/prepare_la.py", "--src", str(src), "--dst", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "effective split: training 1 of 80, test 0 of 20 listed cases" in run.stdout
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(tmp_path / "out/labels" / f"{TRAIN[7]}.nii.gz")).dataobj), label
    )
