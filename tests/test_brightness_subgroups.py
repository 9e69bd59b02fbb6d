"""Tests of scripts/brightness_subgroups.py: two rows paired by seed on the bright-target cases and on the rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_collapse_cases import _write_case, _write_run

import brightness_subgroups as subgroups


def test_split_by_brightness_puts_the_threshold_in_the_bright_group() -> None:
    split = subgroups.split_by_brightness({"a": 0.3, "b": 0.9, "c": 1.2, "d": 0.89}, 0.9)
    assert split == {"bright": ["b", "c"], "rest": ["a", "d"]}


def test_paired_subgroup_pairs_seeds_and_skips_those_missing_a_case() -> None:
    row = [{"seed": 0, "k": {"a": 0.8, "b": 0.6}}, {"seed": 1, "k": {"a": 0.9, "b": 0.9}}, {"seed": 2, "k": {"a": 1.0}}]
    ref = [{"seed": 0, "k": {"a": 0.4, "b": 0.6}}, {"seed": 1, "k": {"a": 0.9, "b": 1.0}}, {"seed": 2, "k": {"a": 0.0}}]
    paired = subgroups.paired_subgroup(row, ref, ["a", "b"], "k")
    assert paired["seeds"] == [0, 1]  # seed 2 has no Dice of case b
    assert paired["row"] == pytest.approx([0.7, 0.9]) and paired["reference"] == pytest.approx([0.5, 0.95])
    assert paired["difference"] == pytest.approx([0.2, -0.05]) and paired["mean"] == pytest.approx(0.075)
    assert paired["se"] == pytest.approx(0.125) and paired["wins"] == 1  # std(ddof=1) 0.1768 / sqrt(2)
    with pytest.raises(ValueError, match="no case"):
        subgroups.paired_subgroup(row, ref, [], "k")
    with pytest.raises(ValueError, match="no seed"):
        subgroups.paired_subgroup(row, ref, ["c"], "k")


def _protocol_dir(root: Path) -> Path:
    """Two labeled cases, a dim and a bright validation case and the same two as test cases; the defaults and the
    control, 2 seeds: the control loses the bright case only."""
    phantoms = root / "phantoms"
    cases = {name: _write_case(phantoms, name, *values) for name, values in
             {"lab0": (2.0, 4.0), "lab1": (2.0, 4.0), "dim": (2.0, 4.0), "bright": (4.0, 2.0)}.items()}  # fmt: skip
    datalist = {"training": [cases["lab0"], cases["lab1"]], "validation": [cases["dim"], cases["bright"]],
                "test": [cases["dim"], cases["bright"]]}  # fmt: skip
    (phantoms / "datalist.json").write_text(json.dumps(datalist))
    dice = {("full", 0): (0.80, 0.70), ("full", 1): (0.82, 0.75),
            ("no_unlabeled_volumes", 0): (0.85, 0.20), ("no_unlabeled_volumes", 1): (0.84, 0.35)}  # fmt: skip
    for (row, seed), (dim, bright) in dice.items():
        _write_run(root, row, seed, {"dim": dim, "bright": bright}, {"iterations": 10})
        test = f"case,dice_target\ndim,{dim - 0.1}\nbright,{bright - 0.1}\n"  # the test list: 0.1 lower
        (root / f"{row}_l2_s{seed}" / "metrics.csv").write_text(test)
    return root


def test_subgroups_pair_the_rows_on_the_bright_cases_and_on_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = _protocol_dir(tmp_path)
    result = subgroups.run_brightness_subgroups(str(root))
    assert result["cases"] == {"bright": ["bright"], "rest": ["dim"]}
    assert list(result["labeled"]) == ["lab0", "lab1"]
    bright, rest = result["subgroups"]["bright"], result["subgroups"]["rest"]
    assert bright["difference"] == pytest.approx([0.5, 0.4]) and bright["wins"] == 2
    assert rest["difference"] == pytest.approx([-0.05, -0.02]) and rest["wins"] == 0
    assert "| bright | 1 | s0:0.700 s1:0.750 | s0:0.200 s1:0.350 | +0.450 +- 0.050 | 2/2 |" in capsys.readouterr().out
    assert (root / "subgroups_full_vs_no_unlabeled_volumes_validation.png").stat().st_size > 0
    test = subgroups.run_brightness_subgroups(str(root), split="test", plot="false")["subgroups"]
    assert test["bright"]["row"] == pytest.approx([0.6, 0.65])  # read from <run>/metrics.csv, not validation
    assert test["bright"]["mean"] == pytest.approx(0.45)
    assert not (root / "subgroups_full_vs_no_unlabeled_volumes_test.png").exists()  # plot="false" from the CLI


def test_subgroups_reject_bad_arguments(tmp_path: Path) -> None:
    root = _protocol_dir(tmp_path)
    with pytest.raises(ValueError, match="split must be one of"):
        subgroups.run_brightness_subgroups(str(root), split="train")
    with pytest.raises(ValueError, match="threshold must be a number > 0"):
        subgroups.run_brightness_subgroups(str(root), threshold=0)
    with pytest.raises(ValueError, match=r"no run of \['supervised'\]"):
        subgroups.run_brightness_subgroups(str(root), reference="supervised")
    with pytest.raises(ValueError, match="no case"):
        subgroups.run_brightness_subgroups(str(root), threshold=5.0)
    with pytest.raises(ValueError, match="plot"):
        subgroups.run_brightness_subgroups(str(root), plot="maybe")
    with pytest.raises(FileNotFoundError, match="datalist.json"):
        subgroups.run_brightness_subgroups(str(root), phantom_dir=str(tmp_path / "nowhere"))
