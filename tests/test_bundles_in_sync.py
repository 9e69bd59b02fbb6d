from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("sync_bundles", REPO / "scripts" / "sync_bundles.py")
sync_bundles = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sync_bundles)


def test_derived_bundles_equal_what_the_la_bundle_generates() -> None:
    for name in sync_bundles.SPECIFIC:
        for path, text in sync_bundles.derived_files(name).items():
            assert path.is_file(), f"{path} missing: run python scripts/sync_bundles.py"
            assert path.read_text() == text, f"{path} differs from bundles/la: run python scripts/sync_bundles.py"


def test_auto3dseg_template_ships_the_la_configs() -> None:
    files = sync_bundles.template_files()
    assert any(path.name == "train.json" for path in files) and any(path.parent.name == "ablation" for path in files)
    for path, text in files.items():
        assert path.is_file() and path.read_text() == text, f"{path}: run python scripts/sync_bundles.py"


@pytest.mark.parametrize("bundle", ["la", "pancreas", "brats"])
def test_fully_supervised_overlay_trains_on_every_labeled_case(tmp_path, bundle: str) -> None:
    cases = [{"image": f"imagesTr/{i}.nii.gz", "label": f"labelsTr/{i}.nii.gz"} for i in range(40)]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": cases, "test": cases[:1]}))
    configs = REPO / "bundles" / bundle / "configs"
    splits = {}
    for overlay in ("supervised", "fully_supervised"):
        parser = ConfigParser()
        parser.read_config([str(configs / "train.json"), str(configs / "ablation" / f"{overlay}.json")])
        parser.update({"dataset_dir": str(tmp_path), "datalist": str(tmp_path / "datalist.json")})
        splits[overlay] = parser.get_parsed_content("split")
    assert len(splits["fully_supervised"].labeled) == len(cases) and not splits["fully_supervised"].unlabeled
    assert len(splits["supervised"].labeled) < len(cases)  # the bundle's own few-label setting


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
