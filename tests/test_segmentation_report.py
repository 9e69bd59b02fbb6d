from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

from semiseg.handlers import DISTANCE_METRICS, SegmentationReportHandler, segmentation_metrics

medpy_binary = pytest.importorskip("medpy.metric.binary")


def _pair() -> tuple[np.ndarray, np.ndarray]:
    """A reference cube and a prediction that finds it plus a far-away false positive blob.

    The blob makes the two conventions differ: it dominates the directed prediction -> reference distances (MONAI's
    HD95 takes the larger directed percentile) but is a small share of the pooled distances (medpy's HD95), and it
    enters medpy's one-direction ASD fully while MONAI's symmetric ASD halves it with the reference's surface.
    """
    ref = np.zeros((40, 36, 28), dtype=bool)
    ref[4:24, 4:24, 4:18] = True
    pred = ref.copy()
    pred[4:24, 4:24, 17] = False  # one slice short
    pred[31:37, 28:34, 20:26] = True  # the false positive: ~8 % of the prediction's surface, ~4 % of both
    return pred, ref


def _one_hot(mask: np.ndarray) -> torch.Tensor:
    m = torch.as_tensor(mask)
    return torch.stack([~m, m]).float()


@pytest.mark.parametrize("spacing", [None, (1.25, 1.25, 2.5)])
def test_both_conventions_match_their_references_and_differ(spacing) -> None:
    pred, ref = _pair()
    values = segmentation_metrics(_one_hot(pred), _one_hot(ref), spacing)
    medpy = {
        "hd95_medpy": medpy_binary.hd95(pred, ref, voxelspacing=spacing),
        "asd_medpy": medpy_binary.asd(pred, ref, voxelspacing=spacing),
    }
    y_pred, y = _one_hot(pred)[None], _one_hot(ref)[None]
    sp = None if spacing is None else list(spacing)
    monai = {
        "hd95_monai": float(compute_hausdorff_distance(y_pred, y, percentile=95, spacing=sp)),
        "asd_monai": float(compute_average_surface_distance(y_pred, y, symmetric=True, spacing=sp)),
    }
    for name, expected in {**medpy, **monai}.items():
        assert values[name] == [pytest.approx(expected, rel=1e-5)], name
    # the conventions really differ on this pair (else the test could not tell them apart)
    assert values["hd95_monai"][0] > 5 * values["hd95_medpy"][0]
    assert values["asd_medpy"][0] > 1.5 * values["asd_monai"][0]
    assert values["dice"][0] == pytest.approx(medpy_binary.dc(pred, ref), rel=1e-5)


def test_empty_prediction_gives_nan_distances() -> None:
    _, ref = _pair()
    values = segmentation_metrics(_one_hot(np.zeros_like(ref)), _one_hot(ref), None)
    assert all(math.isnan(values[name][0]) for name in DISTANCE_METRICS)
    assert values["dice"] == [0.0]


def test_handler_writes_both_conventions_with_units(tmp_path) -> None:
    pred, ref = _pair()
    label = MetaTensor(_one_hot(ref), affine=torch.diag(torch.tensor([1.25, 1.25, 2.5, 1.0])))
    image = MetaTensor(torch.rand(1, *ref.shape), meta={"filename_or_obj": "/x/case_007.nii.gz"})
    handler = SegmentationReportHandler(str(tmp_path), class_names=("la",), plot_cases=1)

    class _State:
        output = [{"pred": _one_hot(pred), "label": label, "image": image}]

    class _Engine:
        state = _State()

    handler._reset(_Engine())
    handler._collect(_Engine())
    handler._write(_Engine())
    summary = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    assert set(summary) == {
        "dice_la", "jaccard_la", "hd95_monai_mm_la", "asd_monai_mm_la", "hd95_medpy_mm_la", "asd_medpy_mm_la"
    }  # fmt: skip
    expected = medpy_binary.hd95(pred, ref, voxelspacing=(1.25, 1.25, 2.5))
    assert summary["hd95_medpy_mm_la"]["mean"] == pytest.approx(expected, rel=1e-5)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("case,dice_la,jaccard_la,hd95_monai_mm_la")


def _report(tmp_path, dices: list[float], plot_cases: int = 3) -> SegmentationReportHandler:
    """A handler fed cases whose prediction covers a fraction of a reference slab, for the given Dice values."""
    handler = SegmentationReportHandler(str(tmp_path), class_names=("la",), plot_cases=plot_cases)

    class _Engine:
        class state:  # noqa: N801
            output: list = []

    handler._reset(_Engine())
    for i, dice in enumerate(dices):
        ref = np.zeros((16, 16, 8), dtype=bool)
        ref[:, :8] = True  # 1024 voxels
        pred = np.zeros_like(ref)
        pred[:, : int(round(8 * dice / (2 - dice)))] = True  # a sub-slab: Dice = 2k / (k + 8) for k columns
        image = MetaTensor(torch.rand(1, *ref.shape), meta={"filename_or_obj": f"/x/case_{i}.nii.gz"})
        _Engine.state.output = [{"pred": _one_hot(pred), "label": _one_hot(ref), "image": image}]
        handler._collect(_Engine())
    return handler


def test_png_shows_worst_median_and_best_case_with_their_dice(tmp_path) -> None:
    handler = _report(tmp_path, [0.8, 0.2, 1.0, 0.6, 0.4])
    picked = handler.plotted_cases()
    assert [(handler.rows[i]["case"], role) for i, role in picked] == [
        ("case_1", "worst"), ("case_3", "median"), ("case_2", "best")
    ]  # fmt: skip
    titles = [title for title, _ in handler._plot_rows()]
    assert titles[0].startswith("worst: case_1 Dice 0.") and titles[2] == "best: case_2 Dice 1.000"
    handler._write(type("E", (), {"state": None})())
    assert (tmp_path / "slices.png").stat().st_size > 1000


def test_plot_cases_zero_keeps_no_slices_and_writes_no_png(tmp_path) -> None:
    handler = _report(tmp_path, [0.5, 0.9], plot_cases=0)
    assert handler.plotted_cases() == [] and handler._slices == []
    handler._write(type("E", (), {"state": None})())
    assert (tmp_path / "metrics.csv").is_file() and not (tmp_path / "slices.png").exists()
