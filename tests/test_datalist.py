"""Tests of semiseg.data.datalist: the labeled / unlabeled split of an MSD-style datalist and its errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from semiseg.data.datalist import SemiSupervisedDatalist, load_semisupervised_datalist, unlabeled_from_images


def _write(folder: Path, content: object, name: str = "datalist.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(content))
    return path


def _pair(i: int) -> dict:
    return {"image": f"imagesTr/c{i}.nii.gz", "label": f"labelsTr/c{i}.nii.gz"}


@pytest.fixture
def datalist(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "data",
        {
            "name": "toy",
            "training": [_pair(0), _pair(1), {"image": "imagesTr/u0.nii.gz"}, _pair(2), _pair(3)],
            "unlabeled": [{"image": "extra/e0.nii.gz"}, "extra/e1.nii.gz"],
            "validation": [_pair(9)],
            "test": ["imagesTs/t0.nii.gz"],
        },
    )


def test_first_num_labeled_labeled_entries_keep_labels(datalist: Path) -> None:
    root = datalist.parent
    lists = load_semisupervised_datalist(datalist, num_labeled=2)
    assert isinstance(lists, SemiSupervisedDatalist)
    assert lists.labeled == [
        {"image": str(root / "imagesTr/c0.nii.gz"), "label": str(root / "labelsTr/c0.nii.gz")},
        {"image": str(root / "imagesTr/c1.nii.gz"), "label": str(root / "labelsTr/c1.nii.gz")},
    ]
    # the rest of "training" in file order, labels dropped, then the "unlabeled" list
    assert lists.unlabeled == [
        {"image": str(root / name)}
        for name in (
            "imagesTr/u0.nii.gz",
            "imagesTr/c2.nii.gz",
            "imagesTr/c3.nii.gz",
            "extra/e0.nii.gz",
            "extra/e1.nii.gz",
        )
    ]
    assert lists.validation == [{"image": str(root / "imagesTr/c9.nii.gz"), "label": str(root / "labelsTr/c9.nii.gz")}]
    assert lists.test == [{"image": str(root / "imagesTs/t0.nii.gz")}]
    assert lists.summary() == "2 labeled, 5 unlabeled, 1 validation, 1 test"


def test_default_keeps_every_label_and_skips_unlabeled_training_entries(datalist: Path) -> None:
    lists = load_semisupervised_datalist(datalist)
    assert [Path(e["image"]).name for e in lists.labeled] == ["c0.nii.gz", "c1.nii.gz", "c2.nii.gz", "c3.nii.gz"]
    assert [Path(e["image"]).name for e in lists.unlabeled] == ["u0.nii.gz", "e0.nii.gz", "e1.nii.gz"]
    assert all("label" not in e for e in lists.unlabeled)


def test_dataset_dir_and_absolute_paths(tmp_path: Path) -> None:
    absolute = str(tmp_path / "elsewhere" / "a.nii.gz")
    path = _write(tmp_path / "lists", {"training": [_pair(0), {"image": absolute, "label": absolute}]})
    lists = load_semisupervised_datalist(path, dataset_dir=tmp_path / "images", num_labeled=1)
    assert lists.labeled[0]["image"] == str(tmp_path / "images" / "imagesTr" / "c0.nii.gz")
    assert lists.unlabeled == [{"image": absolute}]
    assert lists.validation == [] and lists.test == []


def test_relative_datalist_path_gives_absolute_entries(tmp_path: Path, monkeypatch) -> None:
    _write(tmp_path / "d", {"training": [_pair(0)]})
    monkeypatch.chdir(tmp_path)
    lists = load_semisupervised_datalist(os.path.join("d", "datalist.json"))
    assert lists.labeled[0]["image"] == str(tmp_path / "d" / "imagesTr" / "c0.nii.gz")


def test_other_unlabeled_key(tmp_path: Path) -> None:
    path = _write(tmp_path, {"training": [_pair(0)], "extra": [{"image": "x.nii.gz"}]})
    lists = load_semisupervised_datalist(path, unlabeled_key="extra")
    assert lists.unlabeled == [{"image": str(tmp_path / "x.nii.gz")}]


def test_missing_datalist_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError) as error:
        load_semisupervised_datalist(missing)
    assert str(error.value) == f"datalist file not found: {missing}"


def test_no_training_key(tmp_path: Path) -> None:
    path = _write(tmp_path, {"test": [_pair(0)]})
    with pytest.raises(ValueError) as error:
        load_semisupervised_datalist(path)
    assert str(error.value) == f"datalist {path} has no 'training' list (keys: ['test'])"


def test_no_labeled_entry(tmp_path: Path) -> None:
    path = _write(tmp_path, {"training": [{"image": "a.nii.gz"}, {"image": "b.nii.gz"}]})
    with pytest.raises(ValueError) as error:
        load_semisupervised_datalist(path)
    assert str(error.value) == f"datalist {path}: none of the 2 'training' entries has a 'label'"


@pytest.mark.parametrize("num_labeled", [0, 5, -1])
def test_num_labeled_out_of_range(datalist: Path, num_labeled: int) -> None:
    with pytest.raises(ValueError) as error:
        load_semisupervised_datalist(datalist, num_labeled=num_labeled)
    assert str(error.value) == (
        f"num_labeled must be between 1 and 4 (the labeled 'training' entries of {datalist}), got {num_labeled}"
    )


def test_invalid_json_and_entry_without_image(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=f"datalist {broken} is not valid JSON"):
        load_semisupervised_datalist(broken)
    path = _write(tmp_path, {"training": [_pair(0), {"label": "l.nii.gz"}]})
    with pytest.raises(ValueError) as error:
        load_semisupervised_datalist(path)
    assert str(error.value) == f"datalist {path}: 'training' entry 1 has no 'image': {{'label': 'l.nii.gz'}}"


def test_unlabeled_from_images(tmp_path: Path) -> None:
    labeled = [{"image": str(tmp_path / "a.nii.gz"), "label": str(tmp_path / "la.nii.gz")}]
    images = [
        str(tmp_path / "c.nii.gz"),
        str(tmp_path / "sub" / ".." / "a.nii.gz"),  # the labeled image, spelled differently
        str(tmp_path / "b.nii.gz"),
        str(tmp_path / "c.nii.gz"),  # duplicate
    ]
    assert unlabeled_from_images(images, labeled) == [
        {"image": str(tmp_path / "c.nii.gz")},
        {"image": str(tmp_path / "b.nii.gz")},
    ]
    assert unlabeled_from_images([], labeled) == []
