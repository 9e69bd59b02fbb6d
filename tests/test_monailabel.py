"""The LA bundle in MONAI Label 0.8.5 itself: its BundleInferTask, its server's ``/infer`` over HTTP on loopback, its
BundleTrainTask training semi-supervised from a local datastore.

These need monailabel, which lives in its own environment (``scripts/setup_monailabel_env.sh`` builds
``.venv-monailabel``); elsewhere they are skipped. Run them with::

    .venv-monailabel/bin/python -m pytest -m monailabel

The bundle is used as a user drops it into MONAI Label's ``monaibundle`` sample app (copied from the monailabel
installation): ``<app>/model/la`` is a copy of ``bundles/la`` whose configs get tiny sizes (top-level keys only, the way a
user adapts a bundle) so that everything runs in seconds on a CPU. No network beyond 127.0.0.1 is used: the bundle is
local and ``zoo_source`` is not the model zoo.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
HAVE_MONAILABEL = importlib.util.find_spec("monailabel") is not None

pytestmark = [
    pytest.mark.monailabel,
    pytest.mark.skipif(
        not HAVE_MONAILABEL,
        reason="monailabel is not installed here; it has its own environment: bash scripts/setup_monailabel_env.sh, "
        "then .venv-monailabel/bin/python -m pytest -m monailabel",
    ),
]

#: top-level keys of train.json and inference.json set in the dropped-in copy (tiny, CPU)
TINY = {
    "patch_size": [32, 32, 16],
    "sw_stride": [16, 16, 8],
    "sw_batch_size": 1,
    "n_filters": 2,
    "feature_dim": 4,
    "norm": "instance",
    "num_workers": 0,
    "labeled_batch_size": 1,
    "unlabeled_batch_size": 1,
    "val_interval": 3000,
    "amp": False,
}
SHAPE = (40, 36, 24)
#: a flipped, shifted voxel-to-world matrix, so that Orientationd(RAS) really reorients and the result must be restored
AFFINE = np.array([[-1.25, 0, 0, 30.0], [0, -1.25, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
LABELED = ("case_000", "case_001", "case_002", "case_003")
UNLABELED = ("case_004", "case_005")


def _write_datastore(studies: Path) -> None:
    """A MONAI Label local datastore: phantom images, final labels for LABELED in labels/final/, none for UNLABELED."""
    import nibabel as nib

    from semiseg.data import make_phantom

    (studies / "labels" / "final").mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(LABELED + UNLABELED):
        image, label, _ = make_phantom("la", seed=index, shape=SHAPE)
        nib.save(nib.Nifti1Image(image, AFFINE), studies / f"{name}.nii.gz")
        if name in LABELED:
            nib.save(nib.Nifti1Image(label, AFFINE), studies / "labels" / "final" / f"{name}.nii.gz")


def _monaibundle_app(app_dir: Path) -> Path:
    """MONAI Label's own ``monaibundle`` sample app with our LA bundle dropped into ``model/la``; returns the bundle."""
    sample = Path(sys.prefix) / "monailabel" / "sample-apps" / "monaibundle"
    assert (sample / "main.py").is_file(), f"monailabel's monaibundle sample app is not at {sample}"
    shutil.copytree(sample, app_dir)
    bundle = app_dir / "model" / "la"
    shutil.copytree(REPO / "bundles" / "la", bundle, ignore=shutil.ignore_patterns("models", "eval", "demo", "runs"))
    for name in ("train.json", "inference.json"):
        path = bundle / "configs" / name
        config = json.loads(path.read_text())
        config.update({key: value for key, value in TINY.items() if key in config})
        path.write_text(json.dumps(config, indent=4))
    return bundle


def _save_untrained_model(bundle: Path) -> None:
    """``models/model.pt`` as the bundle's CheckpointSaver writes it (the state_dict of ``network_def``)."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    (bundle / "models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), bundle / "models" / "model.pt")


def _bundle_prediction(bundle: Path, image: Path, out: Path) -> np.ndarray:
    """The bundle's own inference (inference.json, outside MONAI Label) on ``image``: the reference prediction."""
    import nibabel as nib
    from monai.bundle import ConfigWorkflow

    in_dir = out / "in"
    in_dir.mkdir(parents=True)
    shutil.copy(image, in_dir / image.name)
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(bundle),
        input_dir=str(in_dir),
        prediction_dir=str(out / "pred"),
        device="$torch.device('cpu')",
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    (written,) = sorted((out / "pred").glob("*_seg.nii.gz"))
    return np.asarray(nib.load(written).dataobj)


def _check_label_volume(label_file: str | Path, image_file: Path) -> np.ndarray:
    """The returned label volume has the image's shape and geometry and only the bundle's classes."""
    import nibabel as nib

    image, label = nib.load(image_file), nib.load(label_file)
    assert label.shape == image.shape == SHAPE
    assert np.allclose(label.affine, image.affine, atol=1e-4), (label.affine, image.affine)
    values = np.asarray(label.dataobj)
    assert np.issubdtype(values.dtype, np.integer) or np.all(values == np.round(values))
    assert set(np.unique(values).astype(int)) <= {0, 1}
    return values


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> dict[str, Path]:
    """The monaibundle app with the LA bundle (untrained weights saved as model.pt) and a phantom datastore."""
    root = tmp_path_factory.mktemp("monailabel")
    bundle = _monaibundle_app(root / "app")
    _save_untrained_model(bundle)
    _write_datastore(root / "studies")
    return {"root": root, "app": root / "app", "bundle": bundle, "studies": root / "studies"}


def test_bundle_infer_task_segments_a_phantom(app) -> None:
    from monailabel.interfaces.tasks.infer_v2 import InferType
    from monailabel.tasks.infer.bundle import BundleInferTask

    task = BundleInferTask(str(app["bundle"]), {})
    assert task.is_valid()
    assert task.type == InferType.SEGMENTATION and task.labels == {"left atrium": 1} and task.dimension == 3
    image = app["studies"] / "case_004.nii.gz"
    label_file, result = task({"image": str(image), "device": "cpu"})
    assert isinstance(result, dict)
    values = _check_label_volume(label_file, image)
    # the same voxels as the bundle's own inference.json run on the same file
    reference = _bundle_prediction(app["bundle"], image, app["root"] / "reference_infer_task")
    assert set(np.unique(reference)) == {0, 1}  # not a constant volume, so comparing voxels means something
    assert reference.shape == values.shape and np.mean(reference == values) > 0.999


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_infer_endpoint_returns_the_label_volume(app, tmp_path) -> None:
    import requests

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "monailabel.main", "start_server",
        "--app", str(app["app"]), "--studies", str(app["studies"]),
        "--host", "127.0.0.1", "--port", str(port),
        "--conf", "models", "la", "--conf", "zoo_source", "local",  # the local bundle, never the model zoo
        "--conf", "sam2", "false", "--conf", "preload", "false",
    ]  # fmt: skip
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        info = None
        deadline = time.time() + 120
        while time.time() < deadline and server.poll() is None:
            try:
                info = requests.get(f"{base}/info/", timeout=5).json()
                break
            except requests.ConnectionError:
                time.sleep(1)
        assert info is not None, (tmp_path / "server.log").read_text()[-4000:]
        assert "la" in info["models"] and info["models"]["la"]["labels"] == {"left atrium": 1}
        assert "la" in info["trainers"]
        image = app["studies"] / "case_005.nii.gz"
        with open(image, "rb") as stream:
            response = requests.post(
                f"{base}/infer/la",
                params={"output": "image"},
                data={"params": json.dumps({"device": "cpu"})},
                files={"file": (image.name, stream, "application/gzip")},
                timeout=120,
            )
        assert response.status_code == 200, response.text[:2000]
        returned = tmp_path / "returned.nii.gz"
        returned.write_bytes(response.content)
        values = _check_label_volume(returned, image)
        reference = _bundle_prediction(app["bundle"], image, tmp_path / "reference_server")
        assert set(np.unique(reference)) == {0, 1} and np.mean(reference == values) > 0.999
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.mark.parametrize("val_split", [0.25, 0.0])
def test_bundle_train_task_trains_semi_supervised_on_the_datastore(tmp_path, monkeypatch, val_split: float) -> None:
    import torch
    from monai.bundle import ConfigParser
    from monailabel.datastore.local import LocalDatastore
    from monailabel.tasks.train.bundle import BundleTrainTask

    from semiseg.engines import SemiSupervisedTrainer

    bundle = _monaibundle_app(tmp_path / "app")
    studies = tmp_path / "studies"
    _write_datastore(studies)
    datastore = LocalDatastore(str(studies), extensions=("*.nii.gz", "*.nii"))
    assert len(datastore.datalist()) == len(LABELED)  # MONAI Label hands the labeled pairs only

    trainers: list[SemiSupervisedTrainer] = []
    unlabeled_draws: list[torch.Size] = []
    run, draw = SemiSupervisedTrainer.run, SemiSupervisedTrainer.next_unlabeled_batch

    def recording_run(self, *args, **kwargs):
        trainers.append(self)
        return run(self, *args, **kwargs)

    def recording_draw(self):
        image, view = draw(self)
        unlabeled_draws.append(image.shape)
        return image, view

    monkeypatch.setattr(SemiSupervisedTrainer, "run", recording_run)
    monkeypatch.setattr(SemiSupervisedTrainer, "next_unlabeled_batch", recording_draw)

    task = BundleTrainTask(str(bundle), {})
    assert task.is_valid()
    max_epochs = 2
    request = {"model": "la", "max_epochs": max_epochs, "val_split": val_split, "device": "cpu", "multi_gpu": False}
    task(request, datastore)

    (trainer,) = trainers
    labeled_data = trainer.data_loader.dataset.data
    unlabeled_data = trainer.unlabeled_data_loader.dataset.data
    # 4 labeled pairs, 1 of them for validation with val_split 0.25; none (and no validation run) with 0
    assert len(labeled_data) == (3 if val_split else 4)
    assert {Path(case["image"]).name for case in unlabeled_data} == {f"{name}.nii.gz" for name in UNLABELED}
    assert all("label" not in case for case in unlabeled_data)
    # epochs requested by MONAI Label: max_epochs passes over the labeled batches, each with an unlabeled batch
    assert trainer.state.iteration == max_epochs * len(labeled_data)
    assert len(unlabeled_draws) == trainer.state.iteration
    assert all(shape == torch.Size([1, 1, *TINY["patch_size"]]) for shape in unlabeled_draws)
    assert trainer.objective.uses_unlabeled
    # the ramp-ups keep their share of the run (4000 of 6000 configured iterations -> 4 of 6, 5 of 8)
    ramp = round(4000 * trainer.state.iteration / 6000)
    assert trainer.objective.unlabeled_weight.length == trainer.objective.contrastive_weight.length == ramp
    # the final weights land where MONAI Label's BundleInferTask looks for them
    saved = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser.get_parsed_content("network_def").load_state_dict(saved)
