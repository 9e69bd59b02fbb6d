"""The bundles as users run them: config checks (fast) and the demo end to end at tiny sizes (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import torch
import numpy as np
import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "bundles" / "la" / "configs"
TRAIN, DEMO = str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")
TINY = {
    "phantom_train_cases": 6,
    "phantom_test_cases": 2,
    "num_labeled": 2,
    "iterations": 4,
    "val_interval": 2,
    "save_interval": 2,
    "patch_size": [32, 32, 32],
    "sw_stride": [16, 16, 16],
    "n_filters": 2,
    "feature_dim": 4,
    "labeled_batch_size": 1,
    "unlabeled_batch_size": 1,
}


def bundle_run(*configs: str, timeout: int = 900, **overrides) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(list(configs))]
    for key, value in overrides.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, (list, dict)) else str(value)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def test_train_and_inference_workflows_have_the_model_zoo_properties(tmp_path) -> None:
    overrides = {"output_dir": str(tmp_path), **TINY, "phantom_train_cases": 3, "phantom_test_cases": 1}
    meta = str(CONFIGS / "metadata.json")
    train = ConfigWorkflow(config_file=[TRAIN, DEMO], meta_file=meta, workflow_type="train", **overrides)
    train.initialize()
    assert train.check_properties() == []
    keys = ("output_dir", "phantom_train_cases", "phantom_test_cases", "n_filters", "feature_dim")
    infer_overrides = {k: overrides[k] for k in keys}
    infer = ConfigWorkflow(
        config_file=[str(CONFIGS / "inference.json"), DEMO], meta_file=meta, workflow_type="infer", **infer_overrides
    )
    infer.initialize()
    assert infer.check_properties() == []


def test_inference_network_is_the_training_network() -> None:
    train, infer = ConfigParser.load_config_file(TRAIN), ConfigParser.load_config_file(str(CONFIGS / "inference.json"))
    for key in ("network_def", "inferer", "num_classes", "patch_size", "sw_stride", "n_filters", "norm", "feature_dim"):
        assert infer[key] == train[key], key


def test_overlays_only_touch_top_level_keys_of_train_json() -> None:
    train = ConfigParser.load_config_file(TRAIN)
    for overlay in [CONFIGS / "demo.json", *sorted((CONFIGS / "ablation").glob("*.json"))]:
        for key in ConfigParser.load_config_file(str(overlay)):
            root = key.split("#")[0]
            assert root in train or key in ("phantom_dir", "input_dir") or key.startswith("phantom_"), (overlay, key)


def test_missing_dataset_stops_at_once_with_directions(tmp_path) -> None:
    result = bundle_run(TRAIN, dataset_dir=str(tmp_path), timeout=300)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "scripts/prepare_la.py" in text and "demo.json" in text
    assert "Epoch[" not in text  # nothing trained


@pytest.mark.slow
@pytest.mark.parametrize("bundle", ["la", "pancreas", "brats"])
def test_demo_trains_evaluates_and_infers_end_to_end(tmp_path, bundle: str) -> None:
    configs = REPO / "bundles" / bundle / "configs"
    TRAIN, DEMO = str(configs / "train.json"), str(configs / "demo.json")  # noqa: N806
    out = tmp_path / "demo"
    common = {"output_dir": str(out), **TINY}
    result = bundle_run(TRAIN, DEMO, **common)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "models" / "model.pt").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 2
    assert any(k.startswith("hd95_monai_mm_") for k in summary["metrics"])
    assert any(k.startswith("hd95_medpy_mm_") for k in summary["metrics"])
    assert (out / "metrics.csv").read_text().count("\n") == 3 and (out / "slices.png").stat().st_size > 1000

    # evaluate.json: the final checkpoint, loaded from disk
    (out / "summary.json").unlink()
    result = bundle_run(TRAIN, str(configs / "evaluate.json"), DEMO, **common)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["cases"] == 2

    # inference.json: NIfTI predictions with the input's geometry, no label needed
    preds = tmp_path / "preds"
    keys = ("output_dir", "phantom_train_cases", "phantom_test_cases", "patch_size", "sw_stride", "n_filters", "feature_dim")
    infer_args = {k: common[k] for k in keys} | {"ckpt_dir": str(out / "models")}
    result = bundle_run(str(configs / "inference.json"), DEMO, **infer_args, prediction_dir=str(preds))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    inputs = sorted((out / "phantoms" / "imagesTs").glob("*.nii.gz"))
    written = sorted(preds.glob("*_seg.nii.gz"))
    assert len(written) == len(inputs) == 2
    for image_file, pred_file in zip(inputs, written):
        image, pred = nib.load(image_file), nib.load(pred_file)
        assert pred.shape == image.shape
        assert np.allclose(pred.affine, image.affine, atol=1e-4)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path) -> None:
    out = tmp_path / "run"
    args = {**TINY, "iterations": 40, "save_interval": 4, "val_interval": 1000, "output_dir": str(out)}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str([TRAIN, DEMO])]
    for key, value in args.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    state_dir = out / "models" / "state"
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not list(state_dir.glob("state_checkpoint_8.pt")):
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = sorted(int(p.stem.rsplit("_", 1)[1]) for p in state_dir.glob("state_checkpoint_*.pt"))
    assert saved and saved[-1] >= 8 and not (out / "models" / "model.pt").exists()

    result = subprocess.run(cmd + ["--resume", "true"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    resumed_at = int(text.split("at iteration ")[1].split(".")[0])
    assert resumed_at == saved[-1]  # at most save_interval iterations lost
    assert "Epoch[" in text and (out / "models" / "model.pt").is_file()
    assert max(int(p.stem.rsplit("_", 1)[1]) for p in state_dir.glob("state_checkpoint_*.pt")) == 40


@pytest.mark.slow
@pytest.mark.parametrize("overlay", [None, "supervised", "weaker_teacher"])
def test_multi_gpu_config_trains_with_two_processes_on_cpu(tmp_path, overlay: str | None) -> None:
    """The full method and the ablation rows that leave parameters without a gradient (a projection head) under DDP."""
    out = tmp_path / "ddp"
    extra = [] if overlay is None else [str(CONFIGS / "ablation" / f"{overlay}.json")]
    configs = str([TRAIN, str(CONFIGS / "multi_gpu_train.json"), DEMO, *extra])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "monai.bundle", "run", "--config_file", configs, "--output_dir", str(out)]  # fmt: skip
    for key, value in {**TINY, "val_interval": 1000, "evaluate_after_training": False}.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # the plain network_def, loadable without DDP


def test_bad_dataset_stops_before_training_and_keeps_earlier_outputs(tmp_path) -> None:
    from semiseg.data import write_phantom_dataset

    data = tmp_path / "data"
    datalist = write_phantom_dataset(data, num_train=3, num_test=1, kind="la", seed=0)
    (data / "labelsTr" / "la_phantom_001.nii.gz").write_bytes(b"not a volume")  # corrupt one label
    label0 = nib.load(data / "labelsTr" / "la_phantom_000.nii.gz")
    bad = np.asarray(label0.dataobj).copy()
    bad[0, 0, 0] = 7  # a class the bundle does not have
    nib.save(nib.Nifti1Image(bad, label0.affine), data / "labelsTr" / "la_phantom_000.nii.gz")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.pt").write_bytes(b"earlier weights")
    result = bundle_run(TRAIN, dataset_dir=str(data), datalist=str(datalist), num_labeled=2, ckpt_dir=str(ckpt),
                        output_dir=str(tmp_path / "out"), timeout=300)  # fmt: skip
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "la_phantom_001.nii.gz" in text and "cannot read" in text  # both problems, in one run
    assert "la_phantom_000.nii.gz" in text and "7" in text
    assert "Epoch[" not in text
    assert (ckpt / "model.pt").read_bytes() == b"earlier weights" and sorted(p.name for p in ckpt.iterdir()) == ["model.pt"]
    assert not (tmp_path / "out").exists()
