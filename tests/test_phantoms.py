"""Tests of semiseg.data.phantoms: determinism, geometry, look-alikes, and the idempotent dataset writer."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from semiseg.data import phantoms
from semiseg.data.phantoms import (
    PHANTOM_KINDS,
    default_phantom_geometry,
    make_phantom,
    phantom_case_seed,
    write_phantom_dataset,
)

SMALL = (32, 32, 24)


def _best_threshold_dice(image: np.ndarray, label: np.ndarray) -> float:
    """Dice of the best global threshold, found by scanning 80 quantiles of the image."""
    target = label.astype(bool)
    best = 0.0
    for threshold in np.quantile(image, np.linspace(0.5, 0.999, 80)):
        mask = image > threshold
        best = max(best, 2.0 * (mask & target).sum() / (mask.sum() + target.sum()))
    return best


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_shapes_dtypes_and_label_values(kind: str) -> None:
    image, label, affine = make_phantom(kind, seed=1)
    shape, spacing = default_phantom_geometry(kind)
    assert image.shape == label.shape == shape
    assert image.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label).tolist()) == {0, 1}
    assert np.all(np.isfinite(image))
    assert 0.003 < label.mean() < 0.15  # a structure, neither a speck nor the whole volume
    if kind == "la_varied":  # spacing drawn per case around the default
        assert 1.0 <= affine[0, 0] == affine[1, 1] <= 1.5 and 1.8 <= affine[2, 2] <= 3.2
    else:
        np.testing.assert_allclose(np.diag(affine)[:3], spacing)
    # the volume is centred on the world origin
    centre = affine @ np.array([(n - 1) / 2 for n in shape] + [1.0])
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)


def test_la_default_spacing_is_anisotropic_and_structure_spans_about_half_the_field() -> None:
    image, label, affine = make_phantom("la", seed=0)
    assert tuple(np.diag(affine)[:3]) == (1.25, 1.25, 2.5)
    extent_mm = (np.ptp(np.argwhere(label), axis=0) + 1) * np.diag(affine)[:3]
    field_mm = np.array(image.shape) * np.diag(affine)[:3]
    assert 0.3 < extent_mm[0] / field_mm[0] < 0.9


def test_same_seed_same_volume_other_seed_other_volume() -> None:
    first = make_phantom("la", seed=7, shape=SMALL)
    again = make_phantom("la", seed=7, shape=SMALL)
    other = make_phantom("la", seed=8, shape=SMALL)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])


def test_shape_and_spacing_arguments() -> None:
    image, label, affine = make_phantom("pancreas", seed=2, shape=(40, 36, 24), spacing=(1.5, 1.5, 2.0))
    assert image.shape == label.shape == (40, 36, 24)
    np.testing.assert_allclose(np.diag(affine)[:3], (1.5, 1.5, 2.0))
    assert label.sum() > 0


@pytest.mark.parametrize("kind", PHANTOM_KINDS)
def test_unlabeled_lookalikes_are_as_bright_as_the_target(kind: str) -> None:
    for seed in range(3):
        image, label, _ = make_phantom(kind, seed=seed)
        inside = image[label > 0]
        # bright voxels outside the label: at least a third as many as label voxels above the label's median
        bright_outside = np.count_nonzero(image[label == 0] > np.median(inside))
        assert bright_outside > 0.3 * inside.size, (kind, seed, bright_outside, inside.size)
        # so no global threshold segments the target
        assert _best_threshold_dice(image, label) < 0.75, (kind, seed)


def test_brats_is_zero_outside_the_brain_and_z_scored_inside() -> None:
    image, _, _ = make_phantom("brats", seed=0)
    brain = image != 0
    assert 0.3 < brain.mean() < 0.95
    assert abs(float(image[brain].mean())) < 1e-3
    assert abs(float(image[brain].std()) - 1.0) < 1e-3


def test_pancreas_is_in_the_unit_window() -> None:
    image, _, _ = make_phantom("pancreas", seed=0)
    assert image.min() >= 0.0 and image.max() <= 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "heart"}, "kind must be one of ('la', 'pancreas', 'brats', 'la_varied'), got 'heart'"),
        ({"shape": (32, 32)}, "shape must be three integers >= 16 (X, Y, Z voxels), got (32, 32)"),
        ({"shape": (32, 8, 32)}, "shape must be three integers >= 16 (X, Y, Z voxels), got (32, 8, 32)"),
        ({"spacing": (1.0, 0.0, 1.0)}, "spacing must be three positive numbers (X, Y, Z mm), got (1.0, 0.0, 1.0)"),
        ({"seed": -1}, "seed must be a non-negative integer, got -1."),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        make_phantom(**kwargs)
    assert str(error.value) == message


def test_write_dataset_layout_content_and_idempotence(tmp_path, monkeypatch, caplog) -> None:
    out = tmp_path / "phantoms"
    with caplog.at_level(logging.DEBUG, logger="semiseg.data.phantoms"):
        datalist = write_phantom_dataset(out, num_train=3, num_test=1, kind="la", seed=5, shape=SMALL)
    assert datalist == out / "datalist.json"
    assert "phantom 4/4" in caplog.text

    content = json.loads(datalist.read_text())
    assert content["training"] == [
        {"image": f"imagesTr/la_phantom_00{i}.nii.gz", "label": f"labelsTr/la_phantom_00{i}.nii.gz"} for i in range(3)
    ]
    assert content["test"] == [{"image": "imagesTs/la_phantom_003.nii.gz", "label": "labelsTs/la_phantom_003.nii.gz"}]

    # case files hold exactly what make_phantom gives for the case seed, with its affine
    expected_image, expected_label, expected_affine = make_phantom("la", phantom_case_seed(5, "train", 1), SMALL)
    image_file = nib.load(str(out / "imagesTr/la_phantom_001.nii.gz"))
    np.testing.assert_array_equal(np.asarray(image_file.dataobj), expected_image)
    np.testing.assert_array_equal(
        np.asarray(nib.load(str(out / "labelsTr/la_phantom_001.nii.gz")).dataobj), expected_label
    )
    np.testing.assert_allclose(image_file.affine, expected_affine)
    _, test_label, _ = make_phantom("la", phantom_case_seed(5, "test", 0), SMALL)
    np.testing.assert_array_equal(np.asarray(nib.load(str(out / "labelsTs/la_phantom_003.nii.gz")).dataobj), test_label)

    # same arguments: nothing is generated again
    def fail(*args, **kwargs):
        raise AssertionError("make_phantom called although the dataset is up to date")

    monkeypatch.setattr(phantoms, "make_phantom", fail)
    assert write_phantom_dataset(out, num_train=3, num_test=1, kind="la", seed=5, shape=SMALL) == datalist
    monkeypatch.undo()

    # other arguments: regenerated, files of the old dataset removed
    write_phantom_dataset(out, num_train=2, num_test=0, kind="la", seed=5, shape=SMALL)
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["la_phantom_000.nii.gz", "la_phantom_001.nii.gz"]
    assert not (out / "imagesTs" / "la_phantom_003.nii.gz").exists()
    assert "test" not in json.loads(datalist.read_text())


def test_write_dataset_regenerates_a_missing_file(tmp_path) -> None:
    out = tmp_path / "phantoms"
    write_phantom_dataset(out, num_train=2, num_test=0, kind="brats", seed=0, shape=SMALL)
    (out / "labelsTr" / "brats_phantom_001.nii.gz").unlink()
    write_phantom_dataset(out, num_train=2, num_test=0, kind="brats", seed=0, shape=SMALL)
    assert (out / "labelsTr" / "brats_phantom_001.nii.gz").is_file()


def test_case_seeds_separate_train_and_test_streams() -> None:
    assert phantom_case_seed(0, "train", 0) == phantom_case_seed(0, "train", 0)
    seeds = {phantom_case_seed(0, split, i) for split in ("train", "test", "validation") for i in range(20)}
    assert len(seeds) == 60
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'validation'\), got 'val'"):
        phantom_case_seed(0, "val", 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"num_train": 0}, "num_train must be a positive integer"), ({"num_test": -1}, "num_test must be a non-negative")],
)
def test_write_dataset_bad_counts(tmp_path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_phantom_dataset(tmp_path, **kwargs)


def test_write_dataset_refuses_a_folder_with_a_foreign_datalist(tmp_path) -> None:
    (tmp_path / "datalist.json").write_text("{}")
    with pytest.raises(ValueError) as error:
        write_phantom_dataset(tmp_path, num_train=1, num_test=0, shape=SMALL)
    assert str(error.value) == (
        f"{tmp_path} already holds a datalist.json that write_phantom_dataset did not write (no phantoms.json); "
        "choose an empty or phantom-only folder for out_dir"
    )
    assert (tmp_path / "datalist.json").read_text() == "{}"


def test_make_phantoms_script_writes_dataset_and_preview(tmp_path) -> None:
    path = Path(__file__).resolve().parents[1] / "scripts" / "make_phantoms.py"
    spec = importlib.util.spec_from_file_location("make_phantoms_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    png = tmp_path / "preview.png"
    datalist = script.make_phantoms(
        str(tmp_path / "out"), kind="la", num_train=2, num_test=0, shape=SMALL, preview=str(png)
    )
    assert datalist == str(tmp_path / "out" / "datalist.json")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_la_is_unchanged_by_the_varied_kind_and_la_varied_varies_more() -> None:
    """``"la"`` volumes are what they were before ``"la_varied"`` existed (digest of seed 0), and the varied kind
    spreads contrast, spacing and chamber size wider than ``"la"`` over the same seeds."""
    import hashlib

    image, label, affine = make_phantom("la", seed=0)
    digest = hashlib.md5(image.tobytes() + label.tobytes() + affine.tobytes()).hexdigest()
    assert digest == "640c58d8e456c4e1465f24165752e405"

    def spread(kind: str) -> tuple[float, float, float]:
        contrast, volume, spacings = [], [], set()
        for seed in range(8):
            image, label, affine = make_phantom(kind, seed=seed, shape=(48, 48, 32))
            inside, outside = image[label > 0], image[label == 0]
            contrast.append(float(np.median(inside) / np.percentile(outside, 90)))
            volume.append(float(label.sum() * np.prod(np.diag(affine)[:3])))
            spacings.add(tuple(np.diag(affine)[:3]))
        return float(np.std(contrast)), float(np.std(volume) / np.mean(volume)), float(len(spacings))

    la, varied = spread("la"), spread("la_varied")
    assert varied[0] > la[0] and varied[1] > la[1]
    assert la[2] == 1 and varied[2] == 8


def test_write_dataset_with_validation_cases(tmp_path) -> None:
    datalist = write_phantom_dataset(tmp_path, num_train=2, num_test=1, num_validation=2, kind="la_varied", shape=SMALL)
    content = json.loads(datalist.read_text())
    assert [len(content[k]) for k in ("training", "validation", "test")] == [2, 2, 1]
    names = [Path(e["image"]).name for k in ("training", "test", "validation") for e in content[k]]
    assert len(set(names)) == 5 and names[-1] == "la_varied_phantom_004.nii.gz"
    assert content["phantom_arguments"]["spacing"] == "per case"
    validation = make_phantom("la_varied", phantom_case_seed(0, "validation", 1), SMALL)
    written = nib.load(str(tmp_path / content["validation"][1]["image"]))
    np.testing.assert_allclose(written.get_fdata(dtype=np.float32), validation[0], rtol=1e-6)
    # the training cases do not depend on how many validation cases there are
    other = write_phantom_dataset(tmp_path / "b", num_train=2, num_test=1, kind="la_varied", shape=SMALL)
    first = json.loads(other.read_text())["training"][0]["image"]
    a = nib.load(str(tmp_path / "b" / first)).get_fdata()
    np.testing.assert_array_equal(a, nib.load(str(tmp_path / content["training"][0]["image"])).get_fdata())


def test_test_seed_gives_fresh_test_cases_only(tmp_path) -> None:
    kwargs = dict(num_train=2, num_test=2, num_validation=1, kind="la_varied", shape=SMALL)
    same = json.loads(write_phantom_dataset(tmp_path / "a", **kwargs).read_text())
    fresh = json.loads(write_phantom_dataset(tmp_path / "b", test_seed=1, **kwargs).read_text())
    assert fresh["phantom_arguments"]["test_seed"] == 1 and "test_seed" not in same["phantom_arguments"]

    def volume(root: str, entry: dict) -> np.ndarray:
        return nib.load(str(tmp_path / root / entry["image"])).get_fdata(dtype=np.float32)

    for split in ("training", "validation"):  # unchanged by the test seed
        for a, b in zip(same[split], fresh[split]):
            np.testing.assert_array_equal(volume("a", a), volume("b", b))
    # each test case is case i of seed 1's test stream, and none equals the seed-0 test case
    for index, (a, b) in enumerate(zip(same["test"], fresh["test"])):
        expected = make_phantom("la_varied", phantom_case_seed(1, "test", index), SMALL)[0]
        np.testing.assert_allclose(volume("b", b), expected, rtol=1e-6)
        assert not np.array_equal(volume("a", a), volume("b", b))
    with pytest.raises(ValueError, match="test_seed"):
        write_phantom_dataset(tmp_path / "c", test_seed=-1, **kwargs)
