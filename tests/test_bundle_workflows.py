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
from monai.transforms import Compose

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "bundles" / "la" / "configs"
TRAIN, DEMO = str(CONFIGS / "train.json"), str(CONFIGS / "demo.json")
TINY = {
    "phantom_validation_cases": 1,
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
        text = overlay.read_text()
        for key in ConfigParser.load_config_file(str(overlay)):
            root = key.split("#")[0]
            defined_here = f"@{root}" in text  # a new id that the overlay itself uses is no silent typo
            assert root in train or defined_here or key in ("phantom_dir", "input_dir") or key.startswith("phantom_"), (
                overlay, key)  # fmt: skip


#: the terms train.json switches off: KL since bundle 0.4.5, the entropy filter since LA 0.4.6 (pancreas, BraTS 0.4.5),
#: prototype contrast since LA 0.4.7 (pancreas, BraTS 0.4.6), prediction consistency since LA 0.4.8 (the others 0.4.7),
#: cross pseudo supervision since LA 0.4.9 (the others 0.4.8), cross-reliable supervision since LA 0.4.11 (the others
#: 0.4.10)
CONTRAST = {"contrastive_a", "contrastive_b"}
DEFAULT_OFF = {"cross_pseudo", "entropy_filter", "kl_uncertainty", "consistency", "cross_reliable"} | CONTRAST


@pytest.mark.parametrize(
    "overlay, off",
    [
        ("full", DEFAULT_OFF),
        ("with_kl", DEFAULT_OFF - {"kl_uncertainty"}),
        ("with_entropy_filter", DEFAULT_OFF - {"entropy_filter"}),
        ("with_contrastive", DEFAULT_OFF - CONTRAST),
        ("with_consistency", DEFAULT_OFF - {"consistency"}),
        ("with_cross_pseudo", DEFAULT_OFF - {"cross_pseudo"}),
        ("with_cross_reliable", DEFAULT_OFF - {"cross_reliable"}),
        ("no_unlabeled_volumes", DEFAULT_OFF),  # the defaults' terms; only where the unlabeled crops come from changes
        # the overlays about prototype contrast or the reliability masks it reads switch it on: without a term that
        # reads the masks they would change nothing
        ("strong_contrastive", DEFAULT_OFF - CONTRAST),
        ("global_percentile", DEFAULT_OFF - CONTRAST),
        ("agreement_reliability", DEFAULT_OFF - CONTRAST),
        ("filtered_terms_only", {"cross_pseudo", "kl_uncertainty", "consistency"}),  # the filter on: what it keeps
        ("cps_entropy", {"kl_uncertainty", "consistency", "contrastive_a", "contrastive_b", "cross_reliable"}),
        ("cps_entropy_kl", {"consistency", "contrastive_a", "contrastive_b", "cross_reliable"}),
        ("previous_defaults", set()),
    ],
)
def test_ablation_overlays_switch_off_only_their_terms(overlay: str, off: set[str]) -> None:
    parser = ConfigParser()
    parser.read_config([TRAIN, str(CONFIGS / "ablation" / f"{overlay}.json")])
    objective = parser.get_parsed_content("loss")
    terms = ("cross_pseudo", "entropy_filter", "kl_uncertainty", "consistency", "contrastive_a", "contrastive_b",
             "cross_reliable")  # fmt: skip
    assert {term for term in terms if getattr(objective, term) is None} == off
    assert objective.uses_unlabeled


def test_perturbed_student_overlay_trains_on_a_perturbed_copy_of_each_unlabeled_crop(tmp_path) -> None:
    from semiseg.engines import STUDENT_VIEW_KEY

    overlay = str(CONFIGS / "ablation" / "perturbed_student.json")
    train = ConfigWorkflow(config_file=[TRAIN, DEMO, overlay], workflow_type="train", output_dir=str(tmp_path), **TINY)
    train.initialize()
    item = train.parser.get_parsed_content("train#unlabeled_dataset")[0]
    student, image = item[STUDENT_VIEW_KEY], item["image"]
    assert student.shape == image.shape and not torch.allclose(student, image)
    assert STUDENT_VIEW_KEY not in train.parser.get_parsed_content("train#dataset")[0]  # labeled crops: one view
    train.run()
    assert train.parser.get_parsed_content("train#trainer").state.iteration == TINY["iterations"]


def test_no_unlabeled_volumes_overlay_cuts_the_unlabeled_crops_from_the_labeled_images_only(tmp_path) -> None:
    # the control of the label-limited protocol: every term of the defaults runs, but no volume beyond the labeled
    # cases is read, so a gain it keeps is the terms' own (mixing, regularising), not the unlabeled volumes'
    overlay = str(CONFIGS / "ablation" / "no_unlabeled_volumes.json")
    train = ConfigWorkflow(config_file=[TRAIN, DEMO, overlay], workflow_type="train", output_dir=str(tmp_path), **TINY)
    train.initialize()
    labeled = train.parser.get_parsed_content("train#dataset#data")
    unlabeled = train.parser.get_parsed_content("train#unlabeled_dataset#data")
    assert len(labeled) == TINY["num_labeled"]
    assert unlabeled == [{"image": case["image"]} for case in labeled]
    with_volumes = ConfigWorkflow(config_file=[TRAIN, DEMO], workflow_type="train", output_dir=str(tmp_path), **TINY)
    with_volumes.initialize()
    others = {case["image"] for case in with_volumes.parser.get_parsed_content("train#unlabeled_dataset#data")}
    assert others and not others & {case["image"] for case in labeled}  # the defaults read other volumes
    train.run()
    assert train.parser.get_parsed_content("train#trainer").state.iteration == TINY["iterations"]


@pytest.mark.parametrize(
    "overlay, copy_paste, pseudo_label_pass, augmentations, unlabeled",
    [
        ("full", True, "no_dropout", 4, True),
        ("no_intensity_augmentation", True, "no_dropout", 0, True),
        # copy-paste is the defaults' one unlabeled term since CPS went off (LA 0.4.9), and their one term since
        # cross-reliable supervision went off (LA 0.4.11): without it the run is supervised training
        ("no_copy_paste", False, "no_dropout", 4, False),
        ("previous_defaults", False, "train", 0, True),
    ],
)
def test_defaults_and_their_leave_outs_train(
    tmp_path, overlay: str, copy_paste: bool, pseudo_label_pass: str, augmentations: int, unlabeled: bool
) -> None:
    # with intensity augmentation (the default) the crops' MetaTensors carry per-item transform histories: the
    # copy-paste mixes must not carry them into the batch the trainer slices
    extra = str(CONFIGS / "ablation" / f"{overlay}.json")
    train = ConfigWorkflow(config_file=[TRAIN, DEMO, extra], workflow_type="train", output_dir=str(tmp_path), **TINY)
    train.initialize()
    trainer = train.parser.get_parsed_content("train#trainer")
    assert (trainer.objective.copy_paste is not None) == copy_paste and trainer.objective.uses_unlabeled == unlabeled
    assert trainer.objective.pseudo_label_pass == pseudo_label_pass
    assert len(train.parser.get_parsed_content("intensity_augmentation")) == augmentations
    train.run()
    assert trainer.state.iteration == TINY["iterations"]
    if copy_paste:
        assert trainer.state.output["copy_paste"] > 0 and trainer.state.output["weight_copy_paste"] >= 0
    else:
        assert "copy_paste" not in trainer.state.output


def test_mean_teacher_overlay_teaches_from_an_averaged_copy_of_the_network(tmp_path) -> None:
    overlay = str(CONFIGS / "ablation" / "mean_teacher.json")
    train = ConfigWorkflow(config_file=[TRAIN, DEMO, overlay], workflow_type="train", output_dir=str(tmp_path), **TINY)
    train.initialize()
    parse = train.parser.get_parsed_content
    trainer, ema = parse("train#trainer"), parse("mean_teacher")
    assert trainer.teacher_network is ema.ema_model and trainer.objective.pseudo_label_pass == "mean_teacher"
    state = next(h for h in parse("train#handlers") if type(h).__name__ == "TrainingStateHandler")
    assert state.objects["teacher"] is ema.ema_model  # a resumed run resumes the teacher too
    # the branches' weights: the projection heads train only with prototype contrast, off by default since LA 0.4.7
    def branches(model: torch.nn.Module) -> list[torch.Tensor]:
        return [p for name, p in model.named_parameters() if name.startswith("branch_")]

    start = [p.detach().clone() for p in branches(ema.ema_model)]
    train.run()
    assert trainer.state.iteration == TINY["iterations"]
    teacher, network = branches(ema.ema_model), branches(parse("network"))
    assert teacher and all(t.grad is None for t in teacher)
    moved = [not torch.equal(p0, t) for p0, t in zip(start, teacher)]
    lags = [not torch.equal(t, p) for t, p in zip(teacher, network)]
    assert all(moved) and all(lags)  # updated every iteration, behind the network


def _values_outside(crop: torch.Tensor, volume: torch.Tensor) -> float:
    """Fraction of a crop's voxel values that occur nowhere in ``volume`` (0 for a pure spatial crop/flip/rotation)."""
    return 1.0 - torch.isin(crop.flatten(), volume.flatten()).float().mean().item()


@pytest.mark.parametrize("overlay", ["full", "no_intensity_augmentation"])
def test_intensity_augmentation_perturbs_labeled_and_unlabeled_crops_only_when_set(tmp_path, overlay: str) -> None:
    config = [TRAIN, DEMO, str(CONFIGS / "ablation" / f"{overlay}.json")]
    train = ConfigWorkflow(config_file=config, workflow_type="train", output_dir=str(tmp_path), **TINY)
    train.initialize()
    parse = train.parser.get_parsed_content
    deterministic = Compose(parse("train#deterministic_transforms"))
    for dataset in ("train#dataset", "train#unlabeled_dataset"):
        volume = deterministic(dict(parse(dataset).data[0]))
        crop = parse(dataset)[0]
        outside = _values_outside(crop["image"], volume["image"])
        assert (outside > 0.5) if overlay == "full" else (outside == 0.0), (dataset, outside)
        if "label" in crop:  # the label is cropped, never perturbed
            assert _values_outside(crop["label"], volume["label"]) == 0.0


def test_supervised_overlay_trains_with_the_augmentation_and_without_unlabeled_terms(tmp_path) -> None:
    overlay = str(CONFIGS / "ablation" / "supervised.json")
    train = ConfigWorkflow(config_file=[TRAIN, DEMO, overlay], workflow_type="train", output_dir=str(tmp_path), **TINY)
    train.initialize()
    objective = train.parser.get_parsed_content("loss")
    assert not objective.uses_unlabeled and objective.copy_paste is None and not objective.needs_teacher_pass
    assert len(train.parser.get_parsed_content("intensity_augmentation")) == 4
    train.run()
    assert train.parser.get_parsed_content("train#trainer").state.iteration == TINY["iterations"]


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


def _equal_state_dicts(a: Path, b: Path) -> bool:
    first, second = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not path.exists() and process.poll() is None:
        time.sleep(0.05)
    assert path.exists(), f"{path} was never written"


#: 3 labeled and 3 unlabeled phantoms, batch 1: state every 4 iterations falls in the middle of both streams' passes
RESUME = {**TINY, "phantom_train_cases": 6, "num_labeled": 3, "iterations": 16, "save_interval": 4, "val_interval": 1000,
          "evaluate_after_training": False}  # fmt: skip


def _cli(configs: list[str], args: dict, torchrun_port: int | None = None) -> list[str]:
    launcher = [sys.executable, "-m", "monai.bundle", "run"]
    if torchrun_port is not None:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={torchrun_port}",
                    "-m", "monai.bundle", "run"]  # fmt: skip
    cmd = [*launcher, "--config_file", str(configs)]
    for key, value in args.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return cmd


@pytest.mark.slow
def test_killed_run_resumes_bit_identical_to_the_uninterrupted_one(tmp_path) -> None:
    """SIGKILL between two state files (both data streams in mid-pass), then the same command with --resume true."""
    uninterrupted = tmp_path / "uninterrupted"
    result = subprocess.run(_cli([TRAIN, DEMO], {**RESUME, "output_dir": str(uninterrupted)}), cwd=REPO,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    out = tmp_path / "run"
    cmd = _cli([TRAIN, DEMO], {**RESUME, "output_dir": str(out)})
    state_dir = out / "models" / "state"
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(state_dir / "state_checkpoint_8.pt", process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = sorted(int(p.stem.rsplit("_", 1)[1]) for p in state_dir.glob("state_checkpoint_*.pt"))
    assert saved and 8 <= saved[-1] < 16 and not (out / "models" / "model.pt").exists()

    result = subprocess.run(cmd + ["--resume", "true"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = result.stdout + result.stderr
    assert int(text.split("at iteration ")[1].split(".")[0]) == saved[-1]  # at most save_interval iterations lost
    assert _equal_state_dicts(out / "models" / "model.pt", uninterrupted / "models" / "model.pt")


@pytest.mark.slow
def test_killed_rank_of_a_two_process_run_resumes_on_every_rank(tmp_path) -> None:
    """torchrun, 2 processes (gloo): SIGKILL to rank 1 (torchrun ends rank 0), resume: both ranks hold the weights
    of the uninterrupted 2-process run."""
    dump = tmp_path / "dump_ranks.json"
    dump.write_text(json.dumps({"run": ["$@train#trainer.run()", "$torch.save(@network_def.state_dict(), "
                                        "@output_dir + f'/rank{torch.distributed.get_rank()}.pt')"]}))  # fmt: skip
    configs = [TRAIN, str(CONFIGS / "multi_gpu_train.json"), DEMO, str(dump)]
    ddp = {**RESUME, "phantom_train_cases": 12, "num_labeled": 6, "phantom_validation_cases": 2}  # 3 + 3 per rank
    uninterrupted = tmp_path / "uninterrupted"
    result = subprocess.run(_cli(configs, {**ddp, "output_dir": str(uninterrupted)}, 29541), cwd=REPO,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    out = tmp_path / "run"
    process = subprocess.Popen(_cli(configs, {**ddp, "output_dir": str(out)}, 29542), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    _wait_for(out / "models" / "state" / "state_checkpoint_8.pt", process)
    rank1 = [pid for pid in _children(process.pid) if _environ(pid).get("RANK") == "1"]
    assert len(rank1) == 1
    os.kill(rank1[0], signal.SIGKILL)
    assert process.wait(timeout=300) != 0  # torchrun ends the other rank and fails
    assert not (out / "rank0.pt").exists()

    result = subprocess.run(_cli(configs, {**ddp, "output_dir": str(out), "resume": "true"}, 29543), cwd=REPO,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (result.stdout + result.stderr).count("resumed from") == 2  # every rank restored
    for rank in (0, 1):
        assert _equal_state_dicts(out / f"rank{rank}.pt", uninterrupted / f"rank{rank}.pt")
    assert _equal_state_dicts(out / "rank0.pt", out / "rank1.pt")


def _children(pid: int) -> list[int]:
    """Every descendant process of ``pid`` (Linux /proc)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            kids = [int(k) for k in task.read_text().split()]
            found += kids
            frontier += kids
    return found


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


@pytest.mark.slow
@pytest.mark.parametrize("overlay", [None, "supervised", "weaker_teacher"])
def test_multi_gpu_config_trains_with_two_processes_on_cpu(tmp_path, overlay: str | None) -> None:
    """The full method and the ablation rows that leave parameters without a gradient (a projection head) under DDP."""
    out = tmp_path / "ddp"
    extra = [] if overlay is None else [str(CONFIGS / "ablation" / f"{overlay}.json")]
    configs = str([TRAIN, str(CONFIGS / "multi_gpu_train.json"), DEMO, *extra])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "monai.bundle", "run", "--config_file", configs, "--output_dir", str(out)]  # fmt: skip
    # one validation case per rank: MONAI's DistributedSampler refuses a list shorter than the ranks
    settings = {**TINY, "phantom_validation_cases": 2, "val_interval": 1000, "evaluate_after_training": False}
    for key, value in settings.items():
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # the plain network_def, loadable without DDP


def _dataset_error(workflow: ConfigWorkflow) -> BaseException | None:
    """The dataset check's error of ``workflow.initialize()`` (MONAI wraps it in the expression's error), or None."""
    try:
        workflow.initialize()
    except Exception as error:  # noqa: BLE001 - the cause is what is looked at
        while error is not None and type(error).__name__ != "DatasetError":
            error = error.__cause__
        assert error is not None
        return error
    return None


def test_evaluation_checks_only_the_test_cases_it_reads(tmp_path) -> None:
    from semiseg.data import write_phantom_dataset

    data = tmp_path / "data"
    datalist = write_phantom_dataset(data, num_train=3, num_test=1, kind="la", seed=0)
    (data / "labelsTr" / "la_phantom_001.nii.gz").write_bytes(b"not a volume")  # a label only training reads
    overrides = {"dataset_dir": str(data), "datalist": str(datalist), "num_labeled": 2, "output_dir": str(tmp_path)}
    evaluate = [TRAIN, str(CONFIGS / "evaluate.json")]
    assert _dataset_error(ConfigWorkflow(config_file=evaluate, workflow_type="eval", **overrides)) is None
    error = _dataset_error(ConfigWorkflow(config_file=TRAIN, workflow_type="train", **overrides))
    assert error is not None and "la_phantom_001" in str(error)
    test_label = next((data / "labelsTs").iterdir())
    test_label.write_bytes(b"not a volume")
    error = _dataset_error(ConfigWorkflow(config_file=evaluate, workflow_type="eval", **overrides))
    assert error is not None and test_label.name.split(".")[0] in str(error) and "labeled" not in str(error)


@pytest.mark.parametrize("multi_gpu", [False, True])
def test_bad_dataset_stops_before_training_and_keeps_earlier_outputs(tmp_path, monkeypatch, multi_gpu: bool) -> None:
    from semiseg.data import write_phantom_dataset

    configs = [TRAIN]
    if multi_gpu:  # one process of the multi-GPU config, as torchrun would start it
        configs.append(str(CONFIGS / "multi_gpu_train.json"))
        for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": "29541"}.items():  # fmt: skip
            monkeypatch.setenv(key, value)

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
    result = bundle_run(*configs, dataset_dir=str(data), datalist=str(datalist), num_labeled=2, ckpt_dir=str(ckpt),
                        output_dir=str(tmp_path / "out"), timeout=300)  # fmt: skip
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert "la_phantom_001.nii.gz" in text and "cannot read" in text  # both problems, in one run
    assert "la_phantom_000.nii.gz" in text and "7" in text
    assert "Epoch[" not in text
    assert (ckpt / "model.pt").read_bytes() == b"earlier weights" and sorted(p.name for p in ckpt.iterdir()) == ["model.pt"]
    assert not (tmp_path / "out").exists()
