"""The Auto3DSeg template: derivations from data statistics (fast), and offline end-to-end runs of the CLI and of
MONAI's AutoRunner with its ensemble on a CT-like, anisotropic, 3-class phantom set (slow)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from monai.bundle import ConfigParser

from semiseg.auto3dseg import (
    ALGO_NAME,
    DOWNSAMPLING,
    TEMPLATE_PATH,
    algos,
    assign_folds,
    convert_datalist,
    derive_values,
    fold_datalist,
    write_bundle,
)
from semiseg.auto3dseg import derive
from semiseg.auto3dseg.memory import activation_bytes_per_voxel

REPO = Path(__file__).resolve().parent.parent
PLUGIN = str(REPO / "plugin")


def summary(spacing, spacing_min, spacing_max, sizemm, labels=(0, 1), channels=1, fg=(10.0, 300.0)) -> dict:
    """A ``datastats.yaml`` content with the keys the template reads."""
    return {"stats_summary": {
        "image_stats": {"channels": {"max": channels}, "spacing": {"median": list(spacing), "min": list(spacing_min),
                        "max": list(spacing_max)}, "sizemm": {"median": list(sizemm)}},
        "image_foreground_stats": {"intensity": {"percentile_00_5": fg[0], "percentile_99_5": fg[1]}},
        "label_stats": {"labels": list(labels)},
        "n_cases": 8,
    }}  # fmt: skip


LA_LIKE = summary([0.625] * 3, [0.625] * 3, [0.625] * 3, [121 * 0.625, 122 * 0.625, 88 * 0.625])


def test_la_like_statistics_give_the_benchmark_bundle() -> None:
    values, resample = derive_values(LA_LIKE, "mri", 8, 72, memory_gb=24)
    assert values["patch_size"].value == [112, 112, 80]
    assert values["spacing"].value == [0.625] * 3 and not resample
    assert values["intensity"].value == [{"_target_": "NormalizeIntensityd", "nonzero": True, "channel_wise": False}]
    assert values["num_classes"].value == 2 and values["in_channels"].value == 1
    run = {k: values[k].value for k in ("iterations", "rampup_iterations", "lr_step", "val_interval", "save_interval")}
    assert run == {"iterations": 6000, "rampup_iterations": 4000, "lr_step": 2500, "val_interval": 1000,
                   "save_interval": 500}  # fmt: skip
    assert (values["labeled_batch_size"].value, values["unlabeled_batch_size"].value) == (2, 2)
    assert values["norm"].value == "batch"
    assert values["largest_component_labels"].value == [] and values["largest_component_labels"].source == "default"
    given = derive_values(LA_LIKE, "mri", 8, 72, memory_gb=24, largest_component_labels=[1])[0]
    assert given["largest_component_labels"].value == [1] and given["largest_component_labels"].source == "given"
    assert "sizemm#median" in values["patch_size"].source and "spacing#median" in values["spacing"].source


def test_anisotropic_ct_keeps_its_coarse_axis_and_clips_to_foreground_percentiles() -> None:
    stats = summary([0.8, 0.8, 5.0], [0.7, 0.7, 2.5], [0.9, 0.9, 5.0], [400, 400, 200], labels=(0, 1, 2),
                    fg=(-40.0, 210.0))  # fmt: skip
    values, resample = derive_values(stats, "ct", 20, 10, memory_gb=80)
    assert values["spacing"].value == [0.8, 0.8, 5.0] and resample
    assert values["patch_size"].value == [496, 496, 32]  # 400 mm / 0.8 = 500; 200 mm / 5 mm = 40 (not resampled)
    (transform,) = values["intensity"].value
    assert transform["_target_"] == "ScaleIntensityRanged" and (transform["a_min"], transform["a_max"]) == (-40, 210)
    assert transform["clip"] and values["num_classes"].value == 3
    assert "anisotropic" in values["spacing"].rule


def test_patch_is_capped_by_the_memory_budget_along_its_longest_side() -> None:
    stats = summary([1.0] * 3, [1.0] * 3, [1.0] * 3, [300, 200, 100])
    assert derive.patch_size(stats, [1.0] * 3).value == [288, 192, 96]
    capped = derive.patch_size(stats, [1.0] * 3, max_voxels=96**3)
    assert np.prod(capped.value) <= 96**3 and all(p % DOWNSAMPLING == 0 for p in capped.value)
    assert capped.value == [96, 96, 96] and "memory budget" in capped.rule  # longest side first
    small = derive_values(LA_LIKE, "mri", 8, 72, memory_gb=0.5, n_filters=16)[0]
    assert np.prod(small["patch_size"].value) < 112 * 112 * 80
    assert (small["labeled_batch_size"].value, small["unlabeled_batch_size"].value) == (1, 1)


def test_downsampling_factor_is_the_networks() -> None:
    from semiseg.networks import ResVNet, VNet

    for net in (VNet(1, 2, n_filters=2, norm="instance"), ResVNet(1, 2, n_filters=2, norm="instance")):
        net.eval()
        assert net(torch.zeros(1, 1, 2 * DOWNSAMPLING, 2 * DOWNSAMPLING, 2 * DOWNSAMPLING)).shape[2:] == (32, 32, 32)
        with pytest.raises(ValueError, match="divisible"):
            net(torch.zeros(1, 1, 2 * DOWNSAMPLING, 2 * DOWNSAMPLING, DOWNSAMPLING + DOWNSAMPLING // 2))


def test_run_length_follows_case_counts_and_a_given_length_keeps_the_shares() -> None:
    assert derive.run_length(4, 0, 2, 2)["iterations"].value == 1000  # lower bound
    assert derive.run_length(25, 225, 2, 2)["iterations"].value == 18800
    given = derive.run_length(8, 72, 2, 2, given_iterations=600)
    assert [given[k].value for k in ("iterations", "rampup_iterations", "lr_step", "val_interval")] == [600, 400,
                                                                                                      250, 100]


def test_bad_statistics_and_modality_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="0 .. K-1"):
        derive.class_count(summary([1] * 3, [1] * 3, [1] * 3, [64] * 3, labels=(0, 2)))
    with pytest.raises(ValueError, match="modality"):
        derive.intensity_transforms(LA_LIKE, "pet", 1)
    with pytest.raises(KeyError, match="sizemm"):
        derive.patch_size({"stats_summary": {"image_stats": {}}}, [1.0] * 3)
    with pytest.raises(ValueError, match="num_labeled"):
        derive_values(LA_LIKE, "mri", 8, 72, num_labeled=9)


def test_measured_activation_memory_grows_with_width() -> None:
    narrow, wide = activation_bytes_per_voxel(1, 2, 2, 4, "batch"), activation_bytes_per_voxel(1, 2, 4, 4, "batch")
    assert 0 < narrow < wide


def test_folds_are_balanced_seeded_and_need_no_scikit_learn(tmp_path, monkeypatch) -> None:
    from types import SimpleNamespace

    from monai.apps.auto3dseg import AutoRunner

    folds = assign_folds(11, 5, seed=3)
    assert sorted(np.bincount(folds)) == [2, 2, 2, 2, 3] and folds == assign_folds(11, 5, seed=3)
    assert folds != assign_folds(11, 5, seed=4)
    with pytest.raises(ValueError, match="num_fold"):
        assign_folds(3, 4)
    monkeypatch.setitem(sys.modules, "sklearn", None)  # importing scikit-learn now fails
    plain = {"training": [{"image": f"{i}.nii.gz", "label": f"l{i}.nii.gz"} for i in range(6)]}
    (tmp_path / "plain.json").write_text(json.dumps(plain))
    runner = SimpleNamespace(data_src_cfg={"num_fold": 3})
    with pytest.raises(ImportError):
        AutoRunner.inspect_datalist_folds(runner, str(tmp_path / "plain.json"))
    convert_datalist(plain, tmp_path / "converted.json", num_fold=3)
    assert AutoRunner.inspect_datalist_folds(runner, str(tmp_path / "converted.json")) == 3


def test_project_datalists_are_converted_for_auto3dseg(tmp_path) -> None:
    source = {
        "training": [{"image": f"i{i}.nii.gz", "label": f"l{i}.nii.gz"} for i in range(4)] + [{"image": "u.nii.gz"}],
        "unlabeled": ["extra.nii.gz"],
        "test": [{"image": "t.nii.gz", "label": "tl.nii.gz"}],
    }
    out = convert_datalist(source, tmp_path / "dl.json", num_fold=2)
    assert [e["image"] for e in out["unlabeled"]] == ["extra.nii.gz", "u.nii.gz"]
    assert all("label" in e and e["fold"] in (0, 1) for e in out["training"]) and len(out["training"]) == 4
    assert out["testing"] == [{"image": "t.nii.gz"}]
    assert json.loads((tmp_path / "dl.json").read_text()) == out
    fold = fold_datalist(out, tmp_path, 0)
    assert len(fold["training"]) == len(fold["validation"]) == 2 and fold["test"][0]["label"].endswith("tl.nii.gz")
    assert all(os.path.isabs(e["image"]) for e in fold["unlabeled"])
    with_validation = convert_datalist({**source, "validation": [{"image": "v.nii.gz", "label": "vl.nii.gz"}]})
    assert {e["image"]: e["fold"] for e in with_validation["training"]}["v.nii.gz"] == 0
    assert {e["fold"] for e in with_validation["training"]} == {0, 1}
    with pytest.raises(ValueError, match="label"):
        convert_datalist({"training": [{"image": "u.nii.gz"}]})


def test_algos_is_the_offline_dict_form_of_an_installed_template() -> None:
    form = algos()
    assert list(form) == [ALGO_NAME] and "_" not in ALGO_NAME and importlib.util.find_spec(ALGO_NAME) is None
    assert form[ALGO_NAME]["_target_"] == "semiseg.auto3dseg.DualnetAlgo"
    template = Path(form[ALGO_NAME]["template_path"]) / ALGO_NAME
    for rel in ("configs/hyper_parameters.yaml", "configs/train.json", "configs/inference.json", "scripts/algo.py",
                "scripts/train.py", "scripts/infer.py"):  # fmt: skip
        assert (template / rel).is_file(), rel
    assert "ckpt_path" in yaml.safe_load((template / "configs" / "hyper_parameters.yaml").read_text())
    assert algos(iterations=10)[ALGO_NAME]["iterations"] == 10


def test_generated_configs_carry_the_derived_values(tmp_path) -> None:
    stats = summary([1.0, 1.0, 4.0], [0.9, 0.9, 4.0], [1.1, 1.1, 4.0], [48, 48, 48], labels=(0, 1, 2), fg=(20, 180))
    values, resample = derive_values(stats, "ct", 3, 4, memory_gb=8, n_filters=4, learning_rate=0.05)
    algo_path = tmp_path / "dualnet_0"
    shutil.copytree(Path(TEMPLATE_PATH) / ALGO_NAME, algo_path)
    cases = {"training": [{"image": "/d/a.nii.gz", "label": "/d/la.nii.gz"}], "validation": [], "unlabeled": [],
             "test": []}  # fmt: skip
    write_bundle(algo_path, values, resample, cases, tmp_path, "ct", 0, "dualnet_0")
    for file in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(str(algo_path / "configs" / file))
        text = (algo_path / "configs" / file).read_text()
        assert "NormalizeIntensityd" not in text and text.count("ScaleIntensityRanged") >= 1
        assert parser["spacing"] == [1.0, 1.0, 4.0] and parser["patch_size"] == [48, 48, 16]
        assert parser["num_classes"] == 3 and parser["n_filters"] == 4
        assert parser["largest_component_labels"] == []  # a new dataset's predictions are kept whole unless given
        assert parser["network_def"]["branch_a"]["in_channels"] == 1
        spacing = [t for t in parser.get_parsed_content("eval_transforms" if file == "train.json" else
                   "preprocessing#transforms") if type(t).__name__ == "Spacingd"]  # fmt: skip
        assert len(spacing) == 1 and tuple(spacing[0].spacing_transform.pixdim) == (1.0, 1.0, 4.0)
    train = json.loads((algo_path / "configs" / "train.json").read_text())
    assert train["learning_rate"] == 0.05 and train["datalist"] == "$@bundle_root + '/datalist.json'"
    readme = (algo_path / "docs" / "README.md").read_text()
    for key in ("patch_size", "spacing", "num_classes", "iterations", "labeled_batch_size", "learning_rate"):
        assert f"| `{key}` |" in readme
    assert "percentile_00_5 = 20" in readme
    assert not (algo_path / "configs" / "demo.json").exists()  # the template's phantom demo has no kind here
    metadata = json.loads((algo_path / "configs" / "metadata.json").read_text())
    assert metadata["network_data_format"]["outputs"]["pred"]["num_channels"] == 3
    with pytest.raises(ValueError, match="unknown template arguments"):
        write_bundle(algo_path, {**values, "no_such_key": derive.Derived(1, "given", "")}, resample, cases, tmp_path,
                     "ct", 0, "dualnet_0")  # fmt: skip


def write_ct_phantoms(root: Path, n_labeled: int = 6, n_unlabeled: int = 4, n_test: int = 2) -> Path:
    """CT-like volumes of 48 x 48 x 12 voxels, in-plane spacing 0.9 / 1.0 / 1.1 mm and 4 mm slices, an organ
    (label 1, 60 HU) with a lesion (label 2, 160 HU) in soft tissue (-80 HU) beside air (-1000 HU); the unlabeled
    cases are training entries without a label, as in this project's datalists."""
    rng = np.random.default_rng(0)
    shape = (48, 48, 12)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    training, test = [], []
    for i in range(n_labeled + n_unlabeled + n_test):
        spacing = ([1.0, 0.9, 1.1][i % 3],) * 2 + (4.0,)
        grid = np.stack(np.meshgrid(*[np.arange(s) * d for s, d in zip(shape, spacing)], indexing="ij"), -1)
        centre = np.array([s * d / 2 for s, d in zip(shape, spacing)]) + rng.uniform(-4, 4, 3)
        distance = np.linalg.norm((grid - centre) / np.array([14.0, 12.0, 14.0]), axis=-1)
        label = np.zeros(shape, np.uint8)
        label[distance < 1] = 1
        label[distance < 0.45] = 2
        image = np.choose(label, [-80.0, 60.0, 160.0]) + rng.normal(0, 15, shape)
        image[grid[..., 0] < 4] = -1000.0
        affine = np.diag([*spacing, 1.0])
        name = f"case_{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "images" / name)
        entry = {"image": f"images/{name}"}
        if i < n_labeled or i >= n_labeled + n_unlabeled:
            nib.save(nib.Nifti1Image(label, affine), root / "labels" / name)
            entry["label"] = f"labels/{name}"
        (test if i >= n_labeled + n_unlabeled else training).append(entry)
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": training, "test": test}, indent=2))
    return path


def test_cli_with_a_validation_list_writes_one_fold_and_passes_template_values(tmp_path) -> None:
    from semiseg.auto3dseg.__main__ import main

    datalist = write_ct_phantoms(tmp_path / "data", n_labeled=5, n_unlabeled=2, n_test=1)
    content = json.loads(datalist.read_text())
    content["validation"] = [content["training"].pop(0)]
    datalist.write_text(json.dumps(content))
    main(str(datalist), modality="ct", work_dir=str(tmp_path / "work"), train="false", num_labeled=2,
         learning_rate=0.02, memory_gb=4)  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "work").glob("dualnet_*")) == ["dualnet_0"]
    train = json.loads((tmp_path / "work" / "dualnet_0" / "configs" / "train.json").read_text())
    assert (train["num_labeled"], train["learning_rate"], train["num_classes"]) == (2, 0.02, 3)
    cases = json.loads((tmp_path / "work" / "dualnet_0" / "datalist.json").read_text())
    assert [len(cases[k]) for k in ("training", "validation", "unlabeled", "test")] == [4, 1, 2, 1]
    assert not (tmp_path / "work" / "dualnet_0" / "models").exists()


TINY = {"n_filters": 4, "feature_dim": 8, "iterations": 2, "val_interval": 2, "num_workers": 0}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": PLUGIN + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _check_derived_against_statistics(work: Path, algo_path: Path) -> None:
    stats = yaml.safe_load((work / "datastats.yaml").read_text())["stats_summary"]
    train = json.loads((algo_path / "configs" / "train.json").read_text())
    assert train["spacing"] == [1.0, 1.0, 4.0] == [round(s, 4) for s in stats["image_stats"]["spacing"]["median"]]
    assert train["patch_size"] == [48, 48, 16]  # 48 mm / 1 mm = 48; 48 mm / 4 mm = 12 -> one multiple of 16
    assert train["num_classes"] == 3 == len(stats["label_stats"]["labels"])
    scale = [t for t in train["eval_transforms"] if t["_target_"] == "ScaleIntensityRanged"]
    fg = stats["image_foreground_stats"]["intensity"]
    assert len(scale) == 1 and scale[0]["a_min"] == pytest.approx(fg["percentile_00_5"], abs=1e-3)
    assert scale[0]["a_max"] == pytest.approx(fg["percentile_99_5"], abs=1e-3)
    assert any(t["_target_"] == "Spacingd" for t in train["eval_transforms"])  # in-plane spacing differs per case


@pytest.mark.slow
def test_cli_generates_trains_and_the_bundle_runs_like_bundles_la(tmp_path) -> None:
    datalist = write_ct_phantoms(tmp_path / "data")
    work = tmp_path / "work"
    args = [f"--{k}={v}" for k, v in TINY.items()]
    result = subprocess.run(
        [sys.executable, "-m", "semiseg.auto3dseg", "--datalist", str(datalist), "--modality", "ct", "--work_dir",
         str(work), "--num_fold", "2", "--folds", "0", *args],
        env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "final validation Dice" in result.stdout and "dualnet_0: spacing [1.0, 1.0, 4.0]" in result.stdout
    bundle = work / "dualnet_0"
    for rel in ("configs/train.json", "configs/evaluate.json", "configs/inference.json", "configs/metadata.json",
                "configs/multi_gpu_train.json", "docs/README.md", "models/model.pt", "algo_object.json"):  # fmt: skip
        assert (bundle / rel).is_file(), rel
    assert (work / "dualnet_1" / "configs" / "train.json").is_file() and not (work / "dualnet_1" / "models").exists()
    progress = yaml.safe_load((bundle / "models" / "progress.yaml").read_text())
    assert progress[-1]["iteration"] == 2 and 0.0 <= progress[-1]["best_avg_dice_score"] <= 1.0
    saved = json.loads((bundle / "algo_object.json").read_text())
    assert saved["best_metric"] == progress[-1]["best_avg_dice_score"]  # the key Auto3DSeg's ensemble reads
    _check_derived_against_statistics(work, bundle)
    datalist_0 = json.loads((bundle / "datalist.json").read_text())
    assert len(datalist_0["unlabeled"]) == 4 and len(datalist_0["training"]) == len(datalist_0["validation"]) == 3
    inference = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", "dualnet_0/configs/inference.json",
         "--input_dir", str(tmp_path / "data" / "images"), "--num_workers", "0"],
        cwd=work, env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert inference.returncode == 0, inference.stderr[-3000:]
    prediction = nib.load(bundle / "eval" / "predictions" / "case_10_seg.nii.gz")
    assert prediction.shape == (48, 48, 12) and set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1, 2}


@pytest.mark.slow
def test_autorunner_runs_the_template_through_its_ensemble_offline(tmp_path) -> None:
    datalist = write_ct_phantoms(tmp_path / "data")
    convert_datalist(datalist, tmp_path / "auto3dseg.json", num_fold=2)
    script = f"""
import semiseg.auto3dseg
from monai.apps.auto3dseg import AutoRunner
runner = AutoRunner(work_dir={str(tmp_path / 'work')!r}, algos=semiseg.auto3dseg.algos(**{TINY!r}),
                    input={{"modality": "ct", "datalist": {str(tmp_path / 'auto3dseg.json')!r},
                            "dataroot": {str(tmp_path / 'data')!r}, "num_fold": 1}})
runner.set_analyze_params({{"device": "cpu", "worker": 0}})
runner.run()
"""
    result = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    work = tmp_path / "work"
    _check_derived_against_statistics(work, work / "dualnet_0")
    assert (work / "datastats_unlabeled.yaml").is_file()
    saved = json.loads((work / "dualnet_0" / "algo_object.json").read_text())
    assert saved["_target_"] == "semiseg.auto3dseg.algo.DualnetAlgo" and 0.0 <= saved["best_metric"] <= 1.0
    outputs = sorted((work / "ensemble_output").rglob("*.nii.gz"))
    assert [p.name for p in outputs] == ["case_10_ensemble.nii.gz", "case_11_ensemble.nii.gz"]
    prediction = np.asarray(nib.load(outputs[0]).dataobj)
    assert prediction.shape[:3] == (48, 48, 12) and set(np.unique(prediction)) <= {0, 1, 2}
