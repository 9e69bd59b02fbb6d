"""Derive the pancreas and BraTS bundles' shared files from the LA bundle, so the three never drift apart.

The LA bundle is the one hand-edited source of every config the bundles share (``train.json``, ``evaluate.json``,
``inference.json``, ``multi_gpu_train.json``, ``demo.json``, ``ablation/*.json``, ``logging.conf``). Each other
bundle differs only in the top-level keys listed in ``SPECIFIC`` below; everything else is copied. The ablation
overlays are copied as they are: they hold switches only (``fully_supervised.json`` sets ``num_labeled`` to null, all
labeled, which a bundle's own ``num_labeled`` must not replace). Each bundle stays self-contained (it can be zipped
and shared alone). ``metadata.json``, docs and splits are written by hand per bundle.

The Auto3DSeg template (``plugin/semiseg/auto3dseg/templates/dualnet/configs``) ships the same configs, LA's
``metadata.json`` included and ``demo.json`` excluded, unchanged: its generator rewrites them with derived values.

Usage::

    python scripts/sync_bundles.py          # rewrite the derived files
    python scripts/sync_bundles.py --check  # exit 1 and name the files that differ (what the tests run)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fire

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "bundles" / "la" / "configs"
SHARED = ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "demo.json", "logging.conf")

SPECIFIC: dict[str, dict[str, object]] = {
    "pancreas": {
        "bundle_name": "pancreas",
        "dataset_dir": "/workspace/data/pancreas",
        "class_names": ["pancreas"],
        "num_labeled": 6,
        "patch_size": [96, 96, 96],
        "sw_stride": [16, 16, 16],
    },
    "brats": {
        "bundle_name": "brats",
        "dataset_dir": "/workspace/data/brats",
        "class_names": ["whole_tumour"],
        "num_labeled": 25,
        "patch_size": [96, 96, 96],
        "sw_stride": [64, 64, 64],
    },
}
DEMO_SPECIFIC: dict[str, dict[str, object]] = {"pancreas": {}, "brats": {}}
TEMPLATE = REPO / "plugin" / "semiseg" / "auto3dseg" / "templates" / "dualnet" / "configs"
TEMPLATE_FILES = tuple(f for f in SHARED if f != "demo.json") + ("metadata.json",)

__all__ = ["derived_files", "sync", "template_files"]


def _derive_json(text: str, overrides: dict[str, object]) -> str:
    config = json.loads(text)
    for key, value in overrides.items():
        if key in config:
            config[key] = value
    return json.dumps(config, indent=4) + "\n"


def derived_files(name: str) -> dict[Path, str]:
    """Target path -> content of every file of bundle ``name`` derived from the LA bundle."""
    if name not in SPECIFIC:
        raise ValueError(f"unknown bundle {name!r}; derived bundles are {sorted(SPECIFIC)}")
    target = REPO / "bundles" / name / "configs"
    sources = [SOURCE / f for f in SHARED] + sorted((SOURCE / "ablation").glob("*.json"))
    files: dict[Path, str] = {}
    for source in sources:
        text = source.read_text()
        if source.suffix == ".json" and source.parent.name != "ablation":
            overrides = DEMO_SPECIFIC[name] if source.name == "demo.json" else SPECIFIC[name]
            text = _derive_json(text, overrides)
        files[target / source.relative_to(SOURCE)] = text
    return files


def template_files() -> dict[Path, str]:
    """Target path -> content of every config of the Auto3DSeg template copied from the LA bundle."""
    sources = [SOURCE / f for f in TEMPLATE_FILES] + sorted((SOURCE / "ablation").glob("*.json"))
    return {TEMPLATE / source.relative_to(SOURCE): source.read_text() for source in sources}


def sync(check: bool = False) -> list[str]:
    """Write the derived files, or with ``check`` only list those that differ (exit status 1 when any does)."""
    stale = []
    targets = [derived_files(name) for name in SPECIFIC] + [template_files()]
    for files in targets:
        for path, text in files.items():
            if path.is_file() and path.read_text() == text:
                continue
            stale.append(str(path.relative_to(REPO)))
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if check and stale:
        print("out of sync with bundles/la (run python scripts/sync_bundles.py):\n  " + "\n  ".join(stale))
        sys.exit(1)
    return stale


if __name__ == "__main__":
    fire.Fire(sync)
