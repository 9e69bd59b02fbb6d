from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("sync_bundles", REPO / "scripts" / "sync_bundles.py")
sync_bundles = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sync_bundles)


def test_derived_bundles_equal_what_the_la_bundle_generates() -> None:
    for name in sync_bundles.SPECIFIC:
        for path, text in sync_bundles.derived_files(name).items():
            assert path.is_file(), f"{path} missing: run python scripts/sync_bundles.py"
            assert path.read_text() == text, f"{path} differs from bundles/la: run python scripts/sync_bundles.py"


def test_each_bundle_is_self_contained_and_complete() -> None:
    for bundle in ("la", "pancreas", "brats"):
        root = REPO / "bundles" / bundle
        for rel in ("configs/metadata.json", "configs/train.json", "configs/inference.json", "configs/evaluate.json",
                    "configs/multi_gpu_train.json", "configs/demo.json", "configs/logging.conf", "docs/README.md",
                    "docs/data_license.txt", "LICENSE", "large_files.yml", "splits/train.txt", "splits/test.txt"):
            assert (root / rel).is_file(), f"{bundle}: {rel}"
        for config in (root / "configs").rglob("*.json"):
            assert "../shared" not in config.read_text() and "bundles/la" not in config.read_text(), config
        train = json.loads((root / "configs" / "train.json").read_text())
        assert train["bundle_name"] == bundle
