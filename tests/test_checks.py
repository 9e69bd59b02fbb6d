"""Tests of semiseg.data.checks and scripts/check_dataset.py: one test per kind of problem, and all at once."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest

from semiseg.data.checks import DatasetError, DatasetProblem, assert_valid_dataset, check_cases
from semiseg.data.datalist import SemiSupervisedDatalist

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (8, 7, 6)


def _nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.0), affine: np.ndarray | None = None) -> str:
    affine = np.diag([*spacing, 1.0]) if affine is None else affine
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return str(path)


def _case(folder: Path, name: str, image: np.ndarray | None = None, label: np.ndarray | None = None, **kw) -> dict:
    image = np.random.default_rng(0).random(SHAPE).astype(np.float32) if image is None else image
    label = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 2).astype(np.uint8) if label is None else label
    return {
        "image": _nifti(folder / f"{name}_img.nii.gz", image, **kw.get("image_kw", {})),
        "label": _nifti(folder / f"{name}_seg.nii.gz", label, **kw.get("label_kw", {})),
    }


def _only(problems: list[DatasetProblem]) -> DatasetProblem:
    assert len(problems) == 1, problems
    return problems[0]


def test_valid_cases_have_no_problem(tmp_path: Path) -> None:
    cases = [_case(tmp_path, "a"), _case(tmp_path, "b")]
    assert check_cases(cases, num_classes=2) == []
    assert check_cases([{"image": cases[0]["image"]}], num_classes=2, keys=("image",)) == []


def test_missing_file(tmp_path: Path) -> None:
    case = _case(tmp_path, "a")
    case["label"] = str(tmp_path / "gone.nii.gz")
    problem = _only(check_cases([case], 2))
    assert problem == DatasetProblem("case a_img", str(tmp_path / "gone.nii.gz"), "file not found")
    assert str(problem) == f"case a_img: {tmp_path / 'gone.nii.gz'}: file not found"


def test_truncated_nifti(tmp_path: Path) -> None:
    case = _case(
        tmp_path,
        "a",
        image=np.random.default_rng(1).random((30, 30, 30)).astype(np.float32),
        label=np.zeros((30, 30, 30), np.uint8),
    )
    data = Path(case["image"]).read_bytes()
    Path(case["image"]).write_bytes(data[: len(data) // 2])
    problem = _only(check_cases([case], 2))
    assert problem.file == case["image"]
    assert problem.message.startswith(f"cannot read {case['image']}: ")
    assert str(problem).startswith(f"case a_img: cannot read {case['image']}: ")


def test_text_file_named_nifti(tmp_path: Path) -> None:
    case = _case(tmp_path, "a")
    Path(case["label"]).write_text("this is not an image\n")
    problem = _only(check_cases([case], 2))
    assert problem.file == case["label"]
    assert problem.message.startswith(f"cannot read {case['label']}: ")


def test_shape_mismatch(tmp_path: Path) -> None:
    case = _case(tmp_path, "a", label=np.zeros((8, 7, 5), np.uint8))
    problem = _only(check_cases([case], 2))
    assert problem.message == f"label shape (8, 7, 5) differs from image shape (8, 7, 6) ({case['image']})"


def test_spacing_mismatch_beyond_tolerance_only(tmp_path: Path) -> None:
    within = _case(tmp_path, "a", label_kw={"spacing": (1.0005, 1.0, 2.0)})
    assert check_cases([within], 2) == []
    beyond = _case(tmp_path, "b", label_kw={"spacing": (1.0, 1.0, 2.5)})
    problem = _only(check_cases([beyond], 2))
    assert problem.message == f"label spacing 1x1x2.5 mm differs from image spacing 1x1x2 mm ({beyond['image']})"


def test_orientation_mismatch(tmp_path: Path) -> None:
    case = _case(tmp_path, "a", label_kw={"affine": np.diag([-1.0, 1.0, 2.0, 1.0])})
    problem = _only(check_cases([case], 2))
    assert problem.message == f"label orientation LAS differs from image orientation RAS ({case['image']})"


def test_label_values_out_of_range(tmp_path: Path) -> None:
    label = np.zeros(SHAPE, np.uint8)
    label[0, 0, :3] = (1, 2, 3)
    case = _case(tmp_path, "a", label=label)
    assert _only(check_cases([case], 2)).message == "label values must lie in [0, 2) for num_classes=2, found [2, 3]"
    assert check_cases([case], 4) == []


def test_label_values_not_integers(tmp_path: Path) -> None:
    label = np.zeros(SHAPE, np.float32)
    label[1, 1, 1] = 0.5
    case = _case(tmp_path, "a", label=label)
    assert _only(check_cases([case], 2)).message == "label values must be integers, found [0.5]"


def test_image_with_nan_and_inf(tmp_path: Path) -> None:
    image = np.ones(SHAPE, np.float32)
    image[0, 0, 0], image[1, 1, 1] = np.nan, np.inf
    case = _case(tmp_path, "a", image=image)
    assert _only(check_cases([case], 2)).message == "image has 2 NaN or infinite voxel(s)"


def test_missing_key(tmp_path: Path) -> None:
    case = _case(tmp_path, "a")
    del case["label"]
    assert _only(check_cases([case], 2)) == DatasetProblem("case a_img", "", "no 'label' in the entry")


def test_header_only_mode_skips_values(tmp_path: Path) -> None:
    label = np.full(SHAPE, 5, np.uint8)
    case = _case(tmp_path, "a", label=label)
    assert check_cases([case], 2, check_values=False) == []
    assert len(check_cases([case], 2, check_values=True)) == 1


def test_non_nifti_files_are_read_with_monai(tmp_path: Path) -> None:
    header = {
        "space": "left-posterior-superior",
        "space directions": np.diag([0.5, 0.5, 1.0]),
        "space origin": [0, 0, 0],
    }
    image, label = str(tmp_path / "a.nrrd"), str(tmp_path / "a_seg.nrrd")
    nrrd.write(image, np.ones(SHAPE, np.float32), header)
    nrrd.write(label, np.zeros(SHAPE, np.uint8), header)
    assert check_cases([{"image": image, "label": label}], 2) == []
    nrrd.write(label, np.zeros((8, 7, 4), np.uint8), header)
    assert (
        "label shape (8, 7, 4) differs from image shape (8, 7, 6)"
        in _only(check_cases([{"image": image, "label": label}], 2)).message
    )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 2 \(background included\), got 1"):
        check_cases([], 1)
    with pytest.raises(ValueError, match=r"keys must include 'image', got \('label',\)"):
        check_cases([], 2, keys=("label",))


def test_assert_valid_dataset_reports_every_problem_at_once(tmp_path: Path) -> None:
    good = _case(tmp_path, "good")
    wrong_shape = _case(tmp_path, "shape", label=np.zeros((8, 7, 5), np.uint8))
    bad_values = _case(tmp_path, "values", label=np.full(SHAPE, 7, np.uint8))
    unreadable = {"image": str(tmp_path / "text_img.nii.gz")}
    Path(unreadable["image"]).write_text("not an image")
    missing_test = {"image": str(tmp_path / "absent_img.nii.gz")}
    lists = SemiSupervisedDatalist(
        labeled=[good, wrong_shape, bad_values], unlabeled=[unreadable], validation=[good], test=[missing_test]
    )
    with pytest.raises(DatasetError) as error:
        assert_valid_dataset(lists, num_classes=2)
    problems = error.value.problems
    assert [p.case for p in problems] == [
        "labeled shape_img",
        "labeled values_img",
        "unlabeled text_img",
        "test absent_img",
    ]
    message = str(error.value)
    assert message.startswith("4 problem(s) in the dataset:\n")
    for problem in problems:
        assert f"  - {problem}" in message
    assert isinstance(error.value, ValueError)
    # with check_test=False the missing test image is not looked at
    with pytest.raises(DatasetError) as error:
        assert_valid_dataset(lists, num_classes=2, check_test=False)
    assert len(error.value.problems) == 3


def test_empty_labeled_list_and_empty_unlabeled_warning(tmp_path: Path, caplog) -> None:
    with pytest.raises(DatasetError) as error:
        assert_valid_dataset(SemiSupervisedDatalist(labeled=[], unlabeled=[]), num_classes=2)
    assert error.value.problems == [
        DatasetProblem("labeled", "", "the labeled list is empty: at least one labeled case is needed")
    ]
    with caplog.at_level(logging.WARNING, logger="semiseg.data.checks"):
        assert_valid_dataset(SemiSupervisedDatalist(labeled=[_case(tmp_path, "a")]), num_classes=2)
    assert "the unlabeled list is empty: training falls back to supervised learning" in caplog.text


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_dataset_script(tmp_path: Path, capsys) -> None:
    script = _load_script("check_dataset")
    folder = tmp_path / "data"
    folder.mkdir()
    cases = [_case(folder, f"c{i}") for i in range(3)]
    entries = [{k: Path(v).name for k, v in case.items()} for case in cases]
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"training": entries}))

    assert script.check_dataset(str(datalist), num_labeled=1) == 0
    output = capsys.readouterr().out
    assert "1 labeled, 2 unlabeled, 0 validation, 0 test" in output and "no problem found" in output

    Path(cases[2]["image"]).unlink()
    assert script.check_dataset(str(datalist), num_labeled=2) == 1
    assert f"unlabeled c2_img: {cases[2]['image']}: file not found" in capsys.readouterr().out
    assert script.check_dataset(str(datalist), num_labeled=9) == 1
    assert "num_labeled must be between 1 and 3" in capsys.readouterr().out

    run = subprocess.run(
        [sys.executable, "scripts/check_dataset.py", "--datalist", str(datalist), "--num_labeled", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert "1 problem(s) in the dataset" in run.stdout
