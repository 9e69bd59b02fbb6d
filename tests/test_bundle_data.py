"""Tests of semiseg.bundle.BundleData: the datalist read once, the lists of a run, the MONAI Label branch, the checks.

The unlabeled / validation / test branches in detail: tests/test_bundle_unlabeled.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser
from monai.data import load_decathlon_datalist

import semiseg.bundle.data as bundle_data
from semiseg.bundle import BundleData, DatasetNotFoundError
from semiseg.data import DatasetError, load_semisupervised_datalist, write_phantom_dataset

CONFIGS = Path(__file__).resolve().parent.parent / "bundles" / "la" / "configs"


def _volume(path: Path, values: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values, np.eye(4)), path)
    return str(path)


@pytest.fixture
def phantoms(tmp_path: Path) -> Path:
    """A small phantom dataset (6 training cases, 2 test cases) and its datalist."""
    datalist = write_phantom_dataset(tmp_path / "data", num_train=6, num_test=2, kind="la", seed=0, shape=(24, 24, 16))
    return Path(datalist)


def test_the_datalist_file_is_read_once_and_gives_the_split_of_the_reader(phantoms: Path, monkeypatch) -> None:
    reads = []
    real = bundle_data.read_json_file
    monkeypatch.setattr(bundle_data, "read_json_file", lambda path: reads.append(path) or real(path))
    data = BundleData(str(phantoms), str(phantoms.parent), num_labeled=2)
    lists = [data.labeled, data.unlabeled(data.labeled), data.validation(data.labeled), data.test, data.labeled]
    assert len(reads) == 1
    expected = load_semisupervised_datalist(phantoms, dataset_dir=phantoms.parent, num_labeled=2)
    assert data.split == expected
    assert lists[0] == expected.labeled and len(lists[0]) == 2
    assert lists[1] == [{"image": case["image"]} for case in expected.unlabeled] and len(lists[1]) == 4
    assert lists[2] == expected.labeled  # no validation list: validation follows the labeled cases
    assert lists[3] == expected.test and len(lists[3]) == 2


def test_paths_are_joined_as_monais_datalist_reader_joins_them(tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "m.nii.gz").write_bytes(b"")
    entry = {"image": "a.nii.gz", "label": "la/../b.nii.gz", "mask": "masks/m.nii.gz", "name": "case a", "id": 3}
    channels = {"image": ["t1.nii.gz", "t2.nii.gz"], "label": "c.nii.gz"}
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [entry, channels], "validation": [entry]}))
    lists = BundleData(str(path), str(tmp_path)).split
    assert lists.labeled == load_decathlon_datalist(path, data_list_key="training", base_dir=tmp_path)
    assert lists.validation == load_decathlon_datalist(path, data_list_key="validation", base_dir=tmp_path)
    assert lists.labeled[0]["mask"] == str(tmp_path / "masks" / "m.nii.gz") and lists.labeled[0]["name"] == "case a"


def test_bad_datalists_give_the_readers_errors(tmp_path: Path) -> None:
    path = tmp_path / "datalist.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        BundleData(str(path), str(tmp_path))
    path.write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "a_l.nii.gz"}]}))
    with pytest.raises(ValueError, match="num_labeled must be between 1 and 1"):
        BundleData(str(path), str(tmp_path), num_labeled=2)
    with pytest.raises(ValueError, match="boolean flag"):
        BundleData(str(path), str(tmp_path), check="maybe")


def test_without_a_datalist_only_the_labeled_cases_stop_with_directions(tmp_path: Path) -> None:
    data = BundleData(str(tmp_path / "missing.json"), str(tmp_path), 4, bundle_name="brats")
    assert data.split is None and data.test == [] and data.validation([{"image": "a"}]) == []
    with pytest.raises(DatasetNotFoundError, match="prepare_brats.py") as error:
        data.labeled
    assert "bundles/brats/configs/demo.json" in str(error.value)
    # evaluation without a datalist (and without a test list handed in) stops with the same directions
    with pytest.raises(DatasetNotFoundError, match="prepare_brats.py"):
        data.check_test([])


def test_check_finds_problems_in_every_list_and_check_test_only_in_the_test_cases(tmp_path: Path) -> None:
    image = np.zeros((8, 8, 8), dtype=np.float32)
    label = np.zeros((8, 8, 8), dtype=np.uint8)
    good = {"image": _volume(tmp_path / "a.nii.gz", image), "label": _volume(tmp_path / "a_l.nii.gz", label)}
    out_of_range = {"image": good["image"], "label": _volume(tmp_path / "b_l.nii.gz", label + 3)}
    wrong_shape = {"image": good["image"], "label": _volume(tmp_path / "c_l.nii.gz", label[:4])}
    data = BundleData(None, num_classes=2)
    data.check([good], [{"image": good["image"]}], [good], [good])
    with pytest.raises(DatasetError) as error:
        data.check([good, out_of_range], [{"image": str(tmp_path / "gone.nii.gz")}], [wrong_shape], [good])
    text = str(error.value)
    assert "3 problem(s)" in text and "b_l.nii.gz" in text and "gone.nii.gz" in text and "c_l.nii.gz" in text
    with pytest.raises(DatasetError, match="label values must lie in"):
        data.check_test([out_of_range])
    data.check_test([good])
    with pytest.raises(DatasetError, match="the labeled list is empty"):
        data.check([], [], [], [])
    # check_data false (text from the command line): no file is read
    BundleData(None, check="false").check([out_of_range], [], [wrong_shape], [])
    BundleData(None, check="false").check_test([out_of_range])


def test_the_config_reads_its_lists_from_one_data_object(phantoms: Path) -> None:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"dataset_dir": str(phantoms.parent), "datalist": str(phantoms), "num_labeled": 2})
    expected = load_semisupervised_datalist(phantoms, dataset_dir=phantoms.parent, num_labeled=2)
    assert parser.get_parsed_content("train#dataset#data") == expected.labeled
    unlabeled = [{"image": case["image"]} for case in expected.unlabeled]
    assert parser.get_parsed_content("train#unlabeled_dataset#data") == unlabeled
    assert parser.get_parsed_content("validate#dataset#data") == expected.labeled
    assert parser.get_parsed_content("test#dataset#data") == expected.test
    # MONAI Label: its labeled pairs and validation cases replace the datalist's, the unlabeled cases follow them
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    pairs = [{"image": c["image"], "label": c["label"]} for c in load_semisupervised_datalist(phantoms).labeled]
    parser.update({"datalist": str(phantoms.parent / "none.json"), "train#dataset#data": pairs[1:3]})
    parser.update({"validate#dataset#data": pairs[:1]})
    unlabeled = parser.get_parsed_content("train#unlabeled_dataset#data")
    images = {Path(c["image"]).name for c in unlabeled}
    assert {Path(c["image"]).name for c in pairs[:3]}.isdisjoint(images) and len(images) == 3
    assert parser.get_parsed_content("test#dataset#data") == []


@pytest.mark.parametrize("check_data", [True, "false"])
def test_evaluation_without_a_datalist_stops_with_directions(tmp_path: Path, check_data: bool | str) -> None:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    parser.update({"dataset_dir": str(tmp_path), "check_data": check_data})
    with pytest.raises(Exception) as error:
        parser.get_parsed_content("initialize")
    cause = error.value
    while cause is not None and not isinstance(cause, DatasetNotFoundError):
        cause = cause.__cause__
    assert cause is not None and "scripts/prepare_la.py" in str(cause) and "demo.json" in str(cause)


def test_a_config_needs_only_import_semiseg_for_its_expressions() -> None:
    import semiseg

    assert semiseg.bundle.BundleData is BundleData and semiseg.data.load_semisupervised_datalist is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        semiseg.nothing  # noqa: B018
