"""Tests of scripts/collapse_cases.py: per-case Dice of collapsed and held runs against the target's brightness."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import collapse_cases
from quality import config_digest


def _volume(target_value: float, pool_value: float) -> tuple[np.ndarray, np.ndarray]:
    """10x10x10: 100 target voxels, 100 look-alike voxels, 800 at 0."""
    image, label = np.zeros((10, 10, 10), np.float32), np.zeros((10, 10, 10), np.uint8)
    image[0], label[0] = target_value, 1
    image[1] = pool_value
    return image, label


def test_target_brightness_is_the_median_target_z_over_the_bright_end_of_the_rest() -> None:
    image, label = _volume(2.0, 4.0)
    # mean 0.6; the rest's 99.5th percentile is the pool (its top 100 of 900 voxels): (2 - 0.6) / (4 - 0.6)
    assert collapse_cases.target_brightness(image, label) == pytest.approx(1.4 / 3.4)
    assert collapse_cases.target_brightness(3.0 * image - 7.0, label) == pytest.approx(1.4 / 3.4)  # scale, shift
    assert collapse_cases.target_brightness(*_volume(4.0, 2.0)) > 1 > collapse_cases.target_brightness(image, label)


def test_target_brightness_rejects_bad_input() -> None:
    image, label = _volume(2.0, 4.0)
    with pytest.raises(ValueError, match="shape"):
        collapse_cases.target_brightness(image, label[:5])
    with pytest.raises(ValueError, match="some voxels"):
        collapse_cases.target_brightness(image, np.zeros_like(label))
    with pytest.raises(ValueError, match="constant"):
        collapse_cases.target_brightness(np.ones_like(image), label)


def _write_case(root: Path, name: str, target: float, pool: float) -> dict:
    image, label = _volume(target, pool)
    for folder, array in (("images", image), ("labels", label)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.eye(4)), root / folder / f"{name}.nii.gz")
    return {"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz"}


def _write_run(root: Path, row: str, seed: int, cases: dict[str, float], overrides: dict) -> None:
    run = root / f"{row}_l2_s{seed}"
    (run / "validation").mkdir(parents=True)
    settings = {"row": row, "budget": 2, "seed": seed, "overrides": overrides, "config": config_digest(row, overrides)}
    (run / "run.json").write_text(json.dumps(settings))
    metrics = {"dice_target": {"mean": 0.5}, "hd95_monai_mm_target": {"mean": 1.0}}
    (run / "summary.json").write_text(json.dumps({"metrics": metrics}))
    val = {"dice_target": {"mean": float(np.mean(list(cases.values())))}, "hd95_monai_mm_target": {"mean": 1.0}}
    (run / "validation" / "summary.json").write_text(json.dumps({"metrics": val}))
    lines = ["case,dice_target"] + [f"{case},{dice}" for case, dice in cases.items()]
    (run / "validation" / "metrics.csv").write_text("\n".join(lines) + "\n")


def _protocol_dir(tmp_path: Path) -> Path:
    phantoms = tmp_path / "phantoms"
    datalist = {
        "training": [_write_case(phantoms, "lab0", 2.0, 4.0), _write_case(phantoms, "lab1", 2.0, 4.0),
                     _write_case(phantoms, "unlab", 2.0, 4.0)],
        "validation": [_write_case(phantoms, "dim", 2.0, 4.0), _write_case(phantoms, "bright", 4.0, 2.0)],
    }  # fmt: skip
    (phantoms / "datalist.json").write_text(json.dumps(datalist))
    overrides = {"iterations": 10}
    _write_run(tmp_path, "full", 0, {"dim": 0.8, "bright": 0.7}, overrides)
    _write_run(tmp_path, "full", 1, {"dim": 0.8, "bright": 0.1}, overrides)
    _write_run(tmp_path, "with_cross_reliable", 0, {"dim": 0.6, "bright": 0.0}, overrides)
    _write_run(tmp_path, "supervised", 0, {"dim": 0.5, "bright": 0.3}, overrides)  # the reference: in no group
    return tmp_path


def test_cases_of_collapsed_and_held_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    result = collapse_cases.run_collapse_cases(str(_protocol_dir(tmp_path)), collapse_below=0.6)

    assert result["held"] == ["full s0"] and sorted(result["collapsed"]) == ["full s1", "with_cross_reliable s0"]
    bright, dim = result["cases"]  # brightest target first
    assert bright["case"] == "bright" and bright["brightness"] > 1 > dim["brightness"]
    assert bright["held"] == pytest.approx(0.7) and bright["collapsed"] == pytest.approx(0.05)
    assert dim["difference"] == pytest.approx(0.8 - 0.7)
    assert result["reference_runs"] == ["supervised s0"] and bright["reference"] == pytest.approx(0.3)
    assert list(result["labeled"]) == ["lab0", "lab1"]  # the first budget training cases
    assert result["spearman"] == pytest.approx(1.0)
    assert "| bright | 2.43 | 0.700 | 0.050 | +0.650 | 0.300 |" in capsys.readouterr().out
    assert "reference" not in collapse_cases.run_collapse_cases(str(tmp_path), reference="none")["cases"][0]


def test_collapse_needs_both_groups_and_the_dataset(tmp_path: Path) -> None:
    root = _protocol_dir(tmp_path)
    with pytest.raises(ValueError, match="0 collapsed and 3 held"):
        collapse_cases.run_collapse_cases(str(root), collapse_below=0.1)
    with pytest.raises(ValueError, match="collapse_below"):
        collapse_cases.run_collapse_cases(str(root), collapse_below=1.5)
    with pytest.raises(FileNotFoundError, match="datalist.json"):
        collapse_cases.run_collapse_cases(str(root), phantom_dir=str(tmp_path / "nowhere"))
    _write_run(root, "cps", 0, {"dim": 0.8, "bright": 0.1}, {"iterations": 20})  # another protocol's run
    with pytest.raises(ValueError, match="one set of overrides and test split; 2 found"):
        collapse_cases.run_collapse_cases(str(root))
    (root / "cps_l2_s0" / "run.json").unlink()
    (root / "phantoms" / "images" / "bright.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="bright.nii.gz"):
        collapse_cases.run_collapse_cases(str(root))
