"""Tests of the unlabeled, validation and test cases of semiseg.bundle.BundleData and of semiseg.bundle.unlabeled: what
the bundles do when MONAI Label (or any tool) hands them only labeled pairs (its request in epochs:
tests/test_run_length.py). These run without monailabel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semiseg.bundle import BundleData, DatasetNotFoundError, extra_unlabeled_images


def _touch(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return str(path)


def _datastore(root: Path) -> list[dict]:
    """A MONAI Label local datastore: images in one folder, final labels in labels/final/; returns the labeled pairs."""
    for name in ("a", "b", "c", "d"):
        _touch(root / f"{name}.nii.gz")
    _touch(root / "e.nrrd")
    _touch(root / "notes.txt")
    return [
        {"image": str(root / name), "label": _touch(root / "labels" / "final" / name)} for name in ("a.nii.gz", "c.nii.gz")
    ]


def test_datastore_images_without_a_label_are_the_unlabeled_cases(tmp_path) -> None:
    labeled = _datastore(tmp_path / "studies")
    cases = BundleData(str(tmp_path / "missing.json")).unlabeled(labeled)
    names = [Path(case["image"]).name for case in cases]
    assert names == ["b.nii.gz", "d.nii.gz", "e.nrrd"]  # no labeled image, no label file, no non-image
    assert all(set(case) == {"image"} and Path(case["image"]).is_absolute() for case in cases)
    # MONAI Label moves some labeled pairs to validation: their images are not unlabeled either
    validation, training = labeled[:1], labeled[1:]
    cases = BundleData(None).unlabeled(training, validation)
    assert [Path(case["image"]).name for case in cases] == ["b.nii.gz", "d.nii.gz", "e.nrrd"]
    assert BundleData(str(tmp_path / "missing.json")).test == []  # no test list in MONAI Label


def test_extra_unlabeled_list_adds_files_folders_and_json(tmp_path) -> None:
    labeled = _datastore(tmp_path / "studies")
    more = tmp_path / "more"
    _touch(more / "f.nii.gz")
    _touch(more / "sub" / "g.nii.gz")  # subfolders are not searched
    listing = tmp_path / "lists" / "unlabeled.json"
    _touch(tmp_path / "lists" / "h.nii.gz")
    listing.write_text(json.dumps({"unlabeled": [{"image": "h.nii.gz"}, str(tmp_path / "studies" / "b.nii.gz")]}))
    single = _touch(tmp_path / "i.nii.gz")
    extra = [str(more), str(listing), single, str(tmp_path / "studies" / "a.nii.gz")]
    cases = BundleData(None, unlabeled_images=extra).unlabeled(labeled)
    names = [Path(case["image"]).name for case in cases]
    # b comes once (datastore and JSON), a is labeled so never unlabeled
    assert names == ["b.nii.gz", "d.nii.gz", "e.nrrd", "f.nii.gz", "h.nii.gz", "i.nii.gz"]


def test_existing_datalist_gives_its_unlabeled_cases_and_not_the_folder(tmp_path) -> None:
    root = tmp_path / "data"
    for name in ("a", "b", "c"):
        _touch(root / "imagesTr" / f"{name}.nii.gz")
        _touch(root / "labelsTr" / f"{name}.nii.gz")
    _touch(root / "imagesTr" / "validation_case.nii.gz")  # beside the images, but not in the datalist's training list
    _touch(root / "imagesTs" / "t.nii.gz")
    datalist = root / "datalist.json"
    pair = lambda n: {"image": f"imagesTr/{n}.nii.gz", "label": f"labelsTr/{n}.nii.gz"}  # noqa: E731
    datalist.write_text(json.dumps({"training": [pair("a"), pair("b"), pair("c")], "test": [{"image": "imagesTs/t.nii.gz"}]}))
    labeled = [{"image": str(root / "imagesTr" / "a.nii.gz"), "label": str(root / "labelsTr" / "a.nii.gz")}]
    data = BundleData(str(datalist), str(root), num_labeled=1)
    assert data.labeled == labeled
    cases = data.unlabeled(labeled)
    assert [Path(case["image"]).name for case in cases] == ["b.nii.gz", "c.nii.gz"]
    assert [Path(case["image"]).name for case in data.test] == ["t.nii.gz"]
    datalist.write_text(json.dumps({"training": [pair("a"), pair("b")]}))
    with pytest.raises(DatasetNotFoundError, match="lists no test case"):
        BundleData(str(datalist), str(root), 1).test


def test_unlabeled_errors_name_the_entry(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        extra_unlabeled_images([str(tmp_path / "nothing_here")])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": []}))
    with pytest.raises(ValueError, match="bad.json"):
        extra_unlabeled_images(str(bad))
    with pytest.raises(ValueError, match="labeled case 0"):
        BundleData(None).unlabeled([{"label": "x"}])
    assert extra_unlabeled_images(None) == [] and extra_unlabeled_images([]) == []


def test_validation_cases_of_the_datalist_or_none_when_a_tool_hands_the_pairs(tmp_path) -> None:
    root = tmp_path / "data"
    pair = lambda n: {"image": f"imagesTr/{n}.nii.gz", "label": f"labelsTr/{n}.nii.gz"}  # noqa: E731
    for name in ("a", "b", "v"):
        _touch(root / "imagesTr" / f"{name}.nii.gz")
        _touch(root / "labelsTr" / f"{name}.nii.gz")
    datalist = root / "datalist.json"
    datalist.write_text(json.dumps({"training": [pair("a"), pair("b")], "validation": [pair("v")]}))
    labeled = [{"image": str(root / "imagesTr" / "a.nii.gz"), "label": str(root / "labelsTr" / "a.nii.gz")}]
    assert [Path(c["image"]).name for c in BundleData(str(datalist), str(root), 1).validation(labeled)] == ["v.nii.gz"]
    datalist.write_text(json.dumps({"training": [pair("a"), pair("b")]}))
    assert BundleData(str(datalist), str(root), 1).validation(labeled) == labeled  # no list: the labeled cases
    # MONAI Label with val_split -1 (no datalist file) or 0 (it sets []): no validation, not an error
    assert BundleData(str(tmp_path / "missing.json"), str(root), 1).validation(labeled) == []
    assert BundleData(None).validation(labeled) == []


@pytest.mark.parametrize("bundle", ["la", "pancreas", "brats"])
def test_bundle_trains_without_validation_when_the_validation_list_is_empty(tmp_path, bundle: str) -> None:
    """MONAI Label's val_split 0 sets ``validate#dataset#data`` to []: the ValidationHandler is left out."""
    from monai.bundle import ConfigParser

    configs = Path(__file__).resolve().parent.parent / "bundles" / bundle / "configs"
    disabled = {}
    for validation in ([], [{"image": "v.nii.gz", "label": "v_label.nii.gz"}]):
        parser = ConfigParser()
        parser.read_config(str(configs / "train.json"))
        parser["validate#dataset#data"] = validation
        targets = [h["_target_"] for h in parser["train#handlers"]]  # the raw list: nothing instantiated
        index = targets.index("ValidationHandler")
        disabled[len(validation)] = parser.get_parsed_content(f"train#handlers#{index}#_disabled_")
        assert "semiseg.handlers.TrainingStateHandler" in targets
    assert disabled == {0: True, 1: False}
