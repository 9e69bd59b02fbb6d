"""Every bundle against the real MONAI bundle tooling: metadata schema, network in/out, TorchScript export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).resolve().parent / "data" / "meta_schema_20240725.json"
BUNDLES = sorted(p.parent.parent for p in (REPO / "bundles").glob("*/configs/metadata.json"))
SMALL = ["--n_filters", "2", "--feature_dim", "4"]


def monai_bundle(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600)


@pytest.fixture(params=BUNDLES, ids=lambda p: p.name)
def bundle(request) -> Path:
    return request.param


def test_metadata_follows_the_published_schema(bundle: Path) -> None:
    result = monai_bundle(
        "verify_metadata", "--meta_file", str(bundle / "configs" / "metadata.json"), "--filepath", str(SCHEMA)
    )
    assert result.returncode == 0 and "metadata is verified with no error" in result.stdout + result.stderr, (
        result.stdout[-2000:] + result.stderr[-2000:]
    )


def test_metadata_names_the_plugin_and_the_papers(bundle: Path) -> None:
    meta = ConfigParser.load_config_file(str(bundle / "configs" / "metadata.json"))
    assert meta["required_packages_version"]["monai-semiseg"]
    for key in ("name", "intended_use", "data_source", "references", "eval_metrics", "changelog"):
        assert meta[key], key
    assert any("2509.13084" in ref for ref in meta["references"])
    channels = meta["network_data_format"]
    assert channels["inputs"]["image"]["channel_def"] and channels["outputs"]["pred"]["channel_def"]


def test_network_in_out_matches_the_metadata(bundle: Path) -> None:
    configs = bundle / "configs"
    result = monai_bundle(
        "verify_net_in_out", "network_def", "--meta_file", str(configs / "metadata.json"),
        "--config_file", str(configs / "train.json"), "--device", "cpu", *SMALL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_ckpt_export_gives_the_eager_output(bundle: Path, tmp_path: Path) -> None:
    configs = bundle / "configs"
    parser = ConfigParser.load_config_file(str(configs / "train.json"))
    parser = ConfigParser(parser)
    parser.update({"n_filters": 2, "feature_dim": 4})
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    result = monai_bundle(
        "ckpt_export", "network_def", "--filepath", str(tmp_path / "model.ts"), "--ckpt_file", str(tmp_path / "model.pt"),
        "--meta_file", str(configs / "metadata.json"), "--config_file", str(configs / "train.json"), *SMALL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    exported = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(exported(x), net(x), atol=1e-4)
