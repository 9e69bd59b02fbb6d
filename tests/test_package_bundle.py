from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "package_bundle.py"
spec = importlib.util.spec_from_file_location("package_bundle", SCRIPT)
package = importlib.util.module_from_spec(spec)
spec.loader.exec_module(package)


def test_zip_unpacks_to_the_bundle_name_with_the_model(tmp_path: Path) -> None:
    ckpt = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(3)}, ckpt)
    out = package.package_bundle("la", output=str(tmp_path / "la.zip"), ckpt=str(ckpt))
    names = zipfile.ZipFile(out).namelist()
    assert all(n.startswith("la/") for n in names)
    for required in ("la/configs/train.json", "la/configs/metadata.json", "la/models/model.pt", "la/large_files.yml"):
        assert required in names
    assert not any("/state/" in n or "/demo/" in n for n in names)


def test_large_files_are_listed_not_zipped(tmp_path: Path) -> None:
    ckpt = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(300_000)}, ckpt)  # about 1.2 MB
    out = package.package_bundle("la", output=str(tmp_path / "la.zip"), ckpt=str(ckpt), max_mb=1.0)
    archive = zipfile.ZipFile(out)
    assert "la/models/model.pt" not in archive.namelist()
    listed = yaml.safe_load(archive.read("la/large_files.yml"))["large_files"]
    assert listed[0]["path"] == "models/model.pt" and len(listed[0]["hash_val"]) == 64


def test_missing_weights_say_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no trained weights"):
        package.package_bundle("la", output=str(tmp_path / "x.zip"), ckpt=str(tmp_path / "nope.pt"))
    with pytest.raises(FileNotFoundError, match="no bundle"):
        package.package_bundle("nope")
