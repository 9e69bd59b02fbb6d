from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("quality", Path(__file__).resolve().parent.parent / "scripts" / "quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)


def test_every_row_has_an_overlay_in_every_bundle() -> None:
    for bundle in ("la", "pancreas", "brats"):
        for row in quality.ROWS:
            assert (quality.REPO / "bundles" / bundle / "configs" / "ablation" / f"{row}.json").is_file()


def test_table_gives_mean_and_std_over_seeds() -> None:
    results = {
        "supervised": {4: [{"seed": 0, "dice": 0.6, "hd95": 10.0}, {"seed": 1, "dice": 0.8, "hd95": 20.0}]},
        "fully_supervised": {None: [{"seed": 0, "dice": 0.9, "hd95": 5.0}]},
    }
    table = quality._table(results, [4])
    assert "| supervised only (both branches, unlabeled terms off) | 0.700 +- 0.100 | 15.0 +- 5.0 |" in table
    assert "| fully supervised bound (all training cases labeled) | 0.900 +- 0.000 | 5.0 +- 0.0 |" in table


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown: \\['nope'\\]"):
        quality.run_quality(rows="nope")
    with pytest.raises(ValueError, match="parallel"):
        quality.run_quality(rows="full", parallel=0)
