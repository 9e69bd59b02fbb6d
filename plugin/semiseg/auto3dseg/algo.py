"""The dual-network semi-supervised method as an Auto3DSeg algorithm (``BundleAlgo``) and its template folder."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any

from monai.apps.auto3dseg import BundleAlgo, DataAnalyzer
from monai.bundle import ConfigParser

from .datalist import fold_datalist, read_datalist
from .fill import derive_values, write_bundle

__all__ = ["ALGO_NAME", "TEMPLATE_PATH", "DualnetAlgo", "algos", "unlabeled_stats"]

logger = logging.getLogger(__name__)

ALGO_NAME = "dualnet"
"""The template's name: not an importable module's name (a folder ``semiseg`` would resolve to this package) and
without ``_`` (Auto3DSeg's ensemble parses ``<name>_<fold>``)."""

TEMPLATE_PATH = str(Path(__file__).resolve().parent / "templates")
"""The folder holding the installed template folder ``dualnet/`` (``template_path`` of Auto3DSeg)."""


def algos(**template: Any) -> dict[str, dict[str, Any]]:
    """The ``algos`` argument of MONAI's ``AutoRunner`` / ``BundleGen`` for this method, in the dict form (no
    download is attempted with it).

    Args:
        template: template arguments written into every generated bundle (e.g. ``num_labeled=4``, ``iterations=300``,
            ``n_filters=4``, ``patch_size=[64, 64, 32]``); see :func:`semiseg.auto3dseg.fill.derive_values`.

    Example::

        from monai.apps.auto3dseg import AutoRunner
        import semiseg.auto3dseg

        AutoRunner(work_dir="work", input={"modality": "ct", "datalist": "dl.json", "dataroot": "/data"},
                   algos=semiseg.auto3dseg.algos()).run()
    """
    return {ALGO_NAME: {"_target_": "semiseg.auto3dseg.DualnetAlgo", "template_path": TEMPLATE_PATH, **template}}


def unlabeled_stats(datalist: str, dataroot: str, output_path: str, device: str = "cpu") -> dict | None:
    """Image statistics of the datalist's ``"unlabeled"`` cases (``DataAnalyzer`` without labels), cached in
    ``output_path``; None when there is none."""
    if os.path.isfile(output_path):
        return ConfigParser.load_config_file(output_path)
    if not read_datalist(datalist).get("unlabeled"):
        return None
    analyzer = DataAnalyzer(datalist, dataroot, output_path=output_path, device=device, worker=0, label_key=None)
    return analyzer.get_all_case_stats(key="unlabeled")


class DualnetAlgo(BundleAlgo):
    """Auto3DSeg algorithm of the dual-network semi-supervised method: fills the ``dualnet`` template with values
    derived from ``datastats.yaml`` and trains, scores and predicts with the generated bundle.

    The generated ``<work_dir>/dualnet_<fold>/`` is a complete bundle of this project (train, evaluate, inference,
    multi-GPU configs, metadata, README naming the statistic behind each value) that ``python -m monai.bundle run``
    runs as it runs ``bundles/la``.

    Args:
        template_path: folder holding ``dualnet/``; default the installed template.
        template: template arguments given to every bundle it generates (see :func:`algos`).
    """

    def __init__(self, template_path: str | None = None, **template: Any) -> None:
        super().__init__(template_path if template_path is not None else TEMPLATE_PATH)
        self.template = dict(template)
        self._inferers: dict[str, Any] = {}

    def fill_template_config(self, data_stats_filename: str, algo_path: str, **kwargs: Any) -> dict:
        """Derive the bundle's values from the statistics and write them into ``algo_path``.

        ``self.data_list_file`` is Auto3DSeg's ``input.yaml`` (modality, datalist, dataroot). Unlabeled cases are the
        datalist's ``"unlabeled"`` list (see :func:`semiseg.auto3dseg.convert_datalist`).

        Returns:
            ``{"fold": ..., "derived": {key: {"value", "source", "rule"}}}`` (kept in ``algo_object.json``).
        """
        fold = int(kwargs.pop("fold", 0))
        given = {**self.template, **kwargs}
        source = ConfigParser.load_config_file(self.data_list_file)
        for key in ("modality", "datalist", "dataroot"):
            if key not in source:
                raise ValueError(f"{self.data_list_file} has no {key!r}")
        datalist = read_datalist(source["datalist"])
        without = [e.get("image") for e in datalist["training"] if isinstance(e, dict) and not e.get("label")]
        if without:
            raise ValueError(f"{source['datalist']}: training entries without a label ({without[:3]}...): convert it "
                             "with semiseg.auto3dseg.convert_datalist (unlabeled cases go under 'unlabeled')")  # fmt: skip
        stats = ConfigParser.load_config_file(data_stats_filename)
        extra = unlabeled_stats(source["datalist"], source["dataroot"],
                                str(Path(data_stats_filename).with_name("datastats_unlabeled.yaml")))  # fmt: skip
        _check_unlabeled(stats, extra)
        cases = fold_datalist(datalist, source["dataroot"], fold)
        values, resample = derive_values(stats, str(source["modality"]), len(cases["training"]),
                                         len(cases["unlabeled"]), datalist.get("labels"), **given)  # fmt: skip
        write_bundle(algo_path, values, resample, cases, source["dataroot"], str(source["modality"]), fold,
                     os.path.basename(os.path.normpath(algo_path)))  # fmt: skip
        return {"fold": fold, "derived": {k: v.as_dict() for k, v in values.items()}}

    def train(self, train_params: dict | None = None, device_setting: dict | None = None) -> Any:
        """Train the generated bundle (``scripts/train.py``) in a subprocess of this interpreter, progress shown."""
        setting = dict(device_setting or {})
        if not setting.get("CMD_PREFIX") and not self.device_setting.get("CMD_PREFIX"):
            setting["CMD_PREFIX"] = sys.executable + " "  # Auto3DSeg would start "python", maybe another one
        if "CUDA_VISIBLE_DEVICES" not in setting:
            setting["CUDA_VISIBLE_DEVICES"] = self.device_setting["CUDA_VISIBLE_DEVICES"]
        return super().train(train_params, setting)

    def _run_cmd(self, cmd: str, devices_info: str = "") -> subprocess.CompletedProcess:
        if int(self.device_setting["NUM_NODES"]) > 1 or int(self.device_setting["n_devices"]) > 1:
            return super()._run_cmd(cmd, devices_info)
        env = os.environ.copy()
        env["CUDA_VISIBLE_DEVICES"] = str(self.device_setting["CUDA_VISIBLE_DEVICES"])
        logger.info("training %s: %s", self.name or self.output_path, cmd)
        return subprocess.run(cmd.split(), env=env, check=True)  # output not captured: progress stays visible

    def get_score(self, *args: Any, **kwargs: Any) -> float:
        """Validation Dice of the trained bundle's final model (last entry of ``models/progress.yaml``).

        Raises:
            FileNotFoundError: when the bundle has not been trained.
        """
        path = Path(self.output_path) / "models" / "progress.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {self.output_path} has not been trained")
        return float(ConfigParser.load_config_file(str(path))[-1]["best_avg_dice_score"])

    def predict(self, predict_files: list, predict_params: dict | None = None) -> list:
        """Channel-first probabilities (``MetaTensor``, in each image's own space) for each file or ``{"image": ...}``.

        The inferer (network and weights) is built once per set of parameters and kept.
        """
        from .infer import InferClass

        params = deepcopy(predict_params or {})
        key = repr(sorted(params.items()))
        if key not in self._inferers:
            self._inferers[key] = InferClass(str(Path(self.output_path) / "configs" / "inference.json"), **params)
        files = predict_files if isinstance(predict_files, (list, tuple)) else [predict_files]
        return [self._inferers[key].infer(item) for item in files]

    def __deepcopy__(self, memo: dict) -> DualnetAlgo:
        copy = type(self).__new__(type(self))
        memo[id(self)] = copy
        for key, value in self.__dict__.items():
            setattr(copy, key, {} if key == "_inferers" else deepcopy(value, memo))
        return copy


def _check_unlabeled(stats: dict, extra: dict | None) -> None:
    """Stop when unlabeled images differ in channels from labeled ones; warn when their spacing differs."""
    if not extra:
        return
    from .derive import stat

    channels = (stat(stats, "image_stats#channels#max"), stat(extra, "image_stats#channels#max"))
    if channels[0] != channels[1]:
        raise ValueError(f"labeled images have {channels[0]} channels, unlabeled ones {channels[1]}")
    labeled, unlabeled = stat(stats, "image_stats#spacing#median"), stat(extra, "image_stats#spacing#median")
    if any(abs(float(a) - float(b)) > 0.25 * float(a) for a, b in zip(labeled, unlabeled)):
        logger.warning("median spacing of unlabeled images %s differs from labeled ones %s", unlabeled, labeled)
