"""Tests of scripts/site_shift.py: a phantom set of two sites, the labeled cases from the dim-atrium one."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import quality
import site_shift
from collapse_cases import case_brightness

SMALL = {"num_labeled": 2, "num_unlabeled": 4, "num_validation": 4, "num_test": 4, "shape": (32, 32, 24)}


def test_split_quota_rounds_the_bright_share() -> None:
    assert site_shift.split_quota(38, 0.5) == {"dim": 19, "bright": 19}
    assert site_shift.split_quota(5, 0.5) == {"dim": 3, "bright": 2}  # round half to even
    assert site_shift.split_quota(4, 0.0) == {"dim": 4, "bright": 0}


def test_dataset_draws_each_list_by_site_with_the_labeled_cases_first(tmp_path: Path) -> None:
    path = site_shift.write_site_shift_dataset(tmp_path, **SMALL)
    datalist = json.loads(path.read_text())
    sites = datalist["sites"]
    training = datalist["training"]
    assert [sites[e["image"]]["site"] for e in training[:2]] == ["dim", "dim"]  # num_labeled takes these
    for key, count in (("training", 6), ("validation", 4), ("test", 4)):
        assert len(datalist[key]) == count and all(set(e) == {"image", "label"} for e in datalist[key])
    unlabeled = [sites[e["image"]]["site"] for e in training[2:]]
    assert sorted(unlabeled) == ["bright", "bright", "dim", "dim"]
    for key in ("validation", "test"):
        assert sorted(sites[e["image"]]["site"] for e in datalist[key]) == ["bright", "bright", "dim", "dim"]
    # the recorded site is the brightness of the written files
    for entry in training + datalist["validation"] + datalist["test"]:
        brightness = case_brightness(entry, tmp_path)
        assert brightness == pytest.approx(sites[entry["image"]]["brightness"], abs=1e-3)
        assert (brightness >= 0.9) == (sites[entry["image"]]["site"] == "bright")
    names = [Path(e["image"]).name for key in ("training", "validation", "test") for e in datalist[key]]
    assert len(set(names)) == len(names)  # per-case tables key on the file name
    seeds = [sites[e["image"]]["case_seed"] for e in training]
    assert len(set(seeds)) == len(seeds)
    assert datalist["site_shift"]["test_seed"] == 2 and datalist["numTraining"] == 6


def test_dataset_does_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    one = json.loads(site_shift.write_site_shift_dataset(tmp_path / "one", **SMALL).read_text())
    two = json.loads(site_shift.write_site_shift_dataset(tmp_path / "two", **SMALL, workers=2).read_text())
    assert one == two
    for entry in one["training"] + one["validation"] + one["test"]:
        arrays = [np.asarray(nib.load(tmp_path / run / entry["image"]).dataobj) for run in ("one", "two")]
        np.testing.assert_array_equal(*arrays)


def test_dataset_is_reused_when_written_and_rewritten_when_asked_otherwise(tmp_path: Path) -> None:
    path = site_shift.write_site_shift_dataset(tmp_path, **SMALL)
    image = tmp_path / json.loads(path.read_text())["training"][0]["image"]
    written = image.stat().st_mtime_ns
    site_shift.write_site_shift_dataset(tmp_path, **SMALL)
    assert image.stat().st_mtime_ns == written
    before = {p.relative_to(tmp_path) for p in tmp_path.rglob("*.nii.gz")}
    changed = json.loads(site_shift.write_site_shift_dataset(tmp_path, **SMALL, bright_fraction=0.25).read_text())
    assert changed["site_shift"]["bright_fraction"] == 0.25
    entries = [e for key in ("training", "validation", "test") for e in changed[key]]
    listed = {Path(e[k]) for e in entries for k in ("image", "label")}
    assert {p.relative_to(tmp_path) for p in tmp_path.rglob("*.nii.gz")} == listed and len(before) == len(listed)
    assert sorted(changed["sites"][e["image"]]["site"] for e in changed["test"]) == ["bright", "dim", "dim", "dim"]


def test_an_empty_quota_draws_nothing(tmp_path: Path) -> None:
    assert site_shift.draw_split(tmp_path, "validation", 0, {"dim": 0, "bright": 0}, 0.9, max_draws=1) == []
    assert not list(tmp_path.iterdir())


def test_bad_arguments_and_an_unfilled_quota_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bright_fraction"):
        site_shift.write_site_shift_dataset(tmp_path, **{**SMALL, "bright_fraction": 1.5})
    with pytest.raises(ValueError, match="num_labeled"):
        site_shift.write_site_shift_dataset(tmp_path, **{**SMALL, "num_labeled": 0})
    with pytest.raises(ValueError, match="threshold"):
        site_shift.write_site_shift_dataset(tmp_path, **{**SMALL, "threshold": 0})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "datalist.json").write_text('{"training": []}')
    with pytest.raises(ValueError, match="not written by write_site_shift_dataset"):
        site_shift.write_site_shift_dataset(tmp_path / "other", **SMALL)
    with pytest.raises(ValueError, match="2 draws left"):
        site_shift.draw_split(tmp_path, "test", 0, {"dim": 3, "bright": 3}, 0.9, shape=(32, 32, 24), max_draws=2)


def test_the_protocol_keeps_its_budgets_inside_the_labeled_site(tmp_path: Path) -> None:
    spec = quality.PROTOCOLS["site_shift"]
    assert spec["num_labeled"] == 2 and spec["rows"].split(",")[2] == "no_unlabeled_volumes"
    with pytest.raises(ValueError, match="at most the protocol's 2 labeled cases"):
        quality._write_protocol_dataset(spec, tmp_path, [4])
    with pytest.raises(ValueError, match="'phantoms' or 'site_shift', got 'sites'"):
        quality._write_protocol_dataset(dict(spec, dataset="sites"), tmp_path, [2])
