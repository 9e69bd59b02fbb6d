"""This project's three dataset bundles as the ``dualnet`` template filled with the literature's fixed values.

The template's configs (``templates/dualnet/configs``) are the one hand-edited source of every config the bundles
share; ``scripts/sync_bundles.py`` writes ``bundles/<name>/configs`` from them with :func:`dataset_bundle_files`
(and ``--check`` compares). Auto3DSeg derives these values from data statistics; the benchmark bundles fix them to
the literature's, so that their results stay comparable to the published ones. The template's own values are LA's,
so the LA bundle is the template with nothing changed but what is listed here.

Preprocessing that the benchmarks do once, offline, stays in the preparation scripts (the bundles read prepared
data and z-score it): LA is not resampled (0.625 mm); Pancreas-CT is resampled to 1 mm and windowed to
[-125, 275] HU, scaled to [0, 1], by ``scripts/prepare_pancreas.py``; BraTS uses FLAIR alone, z-scored over the
brain, by ``scripts/prepare_brats.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .algo import ALGO_NAME, TEMPLATE_PATH
from .fill import fill_config

__all__ = ["DATASETS", "SHARED_FILES", "dataset_bundle_files"]

SHARED_FILES = ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "demo.json", "logging.conf")
"""Template configs every dataset bundle carries (plus ``ablation/*.json``); metadata and docs are per bundle."""

# the demo of the pancreas and BraTS bundles: their own phantom kind, 4 of 24 labeled, 300 iterations at a constant
# learning rate, patch 64x64x32 (as measured; the template's is 48x48x32 since LA 0.4.12); LA's demo is the
# template's (the label-limited regime of scripts/quality.py, shortened and at a smaller patch)
_SHORT_DEMO: dict[str, Any] = {
    "phantom_train_cases": 24,
    "phantom_validation_cases": 0,
    "phantom_test_cases": 8,
    "phantom_test_seed": None,
    "num_labeled": 4,
    "iterations": 300,
    "val_interval": 100,
    "save_interval": 100,
    "rampup_iterations": 200,
    "rampup_start": 100,
    "lr_step": 100000,
    "patch_size": [64, 64, 32],
}

DATASETS: dict[str, dict[str, Any]] = {
    "la": {  # UA-MT (Yu et al., MICCAI 2019): 0.625 mm LGE-MRI, 112x112x80 patches, stride 18x18x4, 8 of 80 labeled
        "bundle_name": "la",
        "dataset_dir": "/workspace/data/la",
        "class_names": ["left_atrium"],
        "largest_component_labels": [1],  # one connected atrium: the prediction's largest component is kept
        "num_labeled": 8,
        "patch_size": [112, 112, 80],
        "sw_stride": [18, 18, 4],
    },
    "pancreas": {  # MC-Net+ (Wu et al., MedIA 2022): 1 mm CT, [-125, 275] HU, 96^3 patches, stride 16, 6 of 62 labeled
        "bundle_name": "pancreas",
        "dataset_dir": "/workspace/data/pancreas",
        "class_names": ["pancreas"],
        "largest_component_labels": [],  # not tried on this dataset: predictions kept whole
        "num_labeled": 6,
        "patch_size": [96, 96, 96],
        "sw_stride": [16, 16, 16],
        "demo": {"phantom_kind": "pancreas", **_SHORT_DEMO},
    },
    "brats": {  # SSL4MIS BraTS 2019: FLAIR, whole tumour, 96^3 patches, stride 64, 25 of 250 labeled
        "bundle_name": "brats",
        "dataset_dir": "/workspace/data/brats",
        "class_names": ["whole_tumour"],
        "largest_component_labels": [],  # not tried on this dataset: predictions kept whole
        "num_labeled": 25,
        "patch_size": [96, 96, 96],
        "sw_stride": [64, 64, 64],
        "demo": {"phantom_kind": "brats", **_SHORT_DEMO},
    },
}


def dataset_bundle_files(name: str, template: str | Path | None = None) -> dict[Path, str]:
    """Path relative to the bundle's ``configs/`` -> content, for every shared config of dataset bundle ``name``.

    ``train.json`` and ``inference.json`` get the dataset's values (``inference.json`` only those it has),
    ``demo.json`` the dataset's ``"demo"`` values (its phantom kind and run length; none for LA); the other configs
    and the ablation overlays (switches only: ``fully_supervised.json`` sets ``num_labeled`` to null, all labeled,
    which no bundle value may replace) are the template's, unchanged.

    Raises:
        ValueError: for an unknown dataset.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset bundle {name!r}; the dataset bundles are {sorted(DATASETS)}")
    source = Path(template) if template is not None else Path(TEMPLATE_PATH) / ALGO_NAME / "configs"
    files: dict[Path, str] = {}
    for path in [source / f for f in SHARED_FILES] + sorted((source / "ablation").glob("*.json")):
        text = path.read_text()
        if path.name in ("train.json", "inference.json") and path.parent == source:
            config = fill_config(json.loads(text), _bundle_values(name), keep_only_existing=True)
            text = json.dumps(config, indent=4) + "\n"
        elif path.name == "demo.json" and DATASETS[name].get("demo"):
            config = fill_config(json.loads(text), DATASETS[name]["demo"], keep_only_existing=True)
            text = json.dumps(config, indent=4) + "\n"
        files[path.relative_to(source)] = text
    return files


def _bundle_values(name: str) -> dict[str, Any]:
    """The top-level values of bundle ``name``'s ``train.json`` and ``inference.json`` (its demo's apart)."""
    return {key: value for key, value in DATASETS[name].items() if key != "demo"}
