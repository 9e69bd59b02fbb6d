from __future__ import annotations

import pytest

from semiseg.bundle import BundleData, DatasetNotFoundError, default_bundle_root, image_datalist
from semiseg.bundle import overlap_for_stride, require_cases


def test_overlap_gives_the_literature_stride() -> None:
    roi = [112, 112, 80]
    overlap = overlap_for_stride(roi, [18, 18, 4])
    assert [int(r * (1 - o)) for r, o in zip(roi, overlap)] == [18, 18, 4]
    with pytest.raises(ValueError, match="between 1 and the window size"):
        overlap_for_stride([16], [20])
    with pytest.raises(ValueError, match="same length"):
        overlap_for_stride([16, 16], [4])


def test_bundle_root_from_the_command_line(tmp_path) -> None:
    argv = ["monai.bundle", "run", "--config_file", "['bundles/la/configs/train.json','bundles/la/configs/demo.json']"]
    assert default_bundle_root(argv).endswith("bundles/la")
    assert default_bundle_root(["x", "--config_file", "/a/b/configs/train.json"]) == "/a/b"
    assert default_bundle_root(["x"]) == "."


def test_missing_dataset_says_how_to_prepare_it_or_run_the_demo(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        BundleData(str(tmp_path / "datalist.json"), str(tmp_path), 8, bundle_name="la").labeled
    text = str(err.value)
    assert "scripts/prepare_la.py" in text and "demo.json" in text and str(tmp_path) in text


def test_image_datalist_and_require_cases(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        image_datalist(str(tmp_path / "nope"))
    with pytest.raises(DatasetNotFoundError, match="no image"):
        image_datalist(str(tmp_path))
    (tmp_path / "b.nii.gz").write_bytes(b"")
    (tmp_path / "a.nii.gz").write_bytes(b"")
    assert [d["image"].rsplit("/", 1)[1] for d in image_datalist(str(tmp_path))] == ["a.nii.gz", "b.nii.gz"]
    with pytest.raises(DatasetNotFoundError, match="lists no test case"):
        require_cases([], "test", "x.json")


def test_flag_reads_command_line_text() -> None:
    from semiseg.bundle import flag

    assert flag("true") and flag("True") and flag(True) and flag("1") and flag("yes")
    assert not flag("false") and not flag(False) and not flag("0") and not flag(None)
    with pytest.raises(ValueError, match="boolean flag"):
        flag("maybe")


def test_training_log_writes_the_terms_every_20_iterations() -> None:
    from pathlib import Path

    from ignite.engine import Engine
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(__file__).resolve().parent.parent / "bundles" / "la" / "configs" / "train.json"))
    stats = parser.get_parsed_content("train#rank0_handlers#0")
    engine = Engine(lambda engine, batch: {"terms": {"loss": 1.0}})
    stats.attach(engine)
    logged: list[tuple[int, dict]] = []
    stats.iteration_print_logger = lambda e: logged.append((e.state.iteration, stats.output_transform(e.state.output)))
    engine.run(range(15), max_epochs=3)
    assert logged == [(20, {"loss": 1.0}), (40, {"loss": 1.0})]  # across epochs: the run's iteration counts


def test_process_device_follows_local_rank(monkeypatch) -> None:
    import torch

    from semiseg.bundle import process_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert process_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert process_device() == torch.device("cuda:3")
    monkeypatch.delenv("LOCAL_RANK")
    assert process_device() == torch.device("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "one")
    with pytest.raises(ValueError, match="LOCAL_RANK"):
        process_device()


def test_conv_memory_format_is_channels_last_on_the_cpu_only() -> None:
    import torch

    from semiseg.bundle import conv_memory_format

    assert conv_memory_format("cpu") == torch.channels_last_3d
    assert conv_memory_format(torch.device("cpu")) == torch.channels_last_3d
    assert conv_memory_format("cuda:1") == torch.preserve_format


def test_channels_last_network_computes_what_the_contiguous_one_does(tmp_path) -> None:
    """The bundles' channels-last weights change only the rounding: same outputs and gradients, checkpoints interchange."""
    import copy

    import torch

    from semiseg.bundle import conv_memory_format
    from semiseg.networks import DualNet, ResVNet, VNet

    torch.manual_seed(0)
    plain = DualNet(VNet(1, 2, n_filters=4), ResVNet(1, 2, n_filters=4), feature_dim=8)
    fast = copy.deepcopy(plain).to("cpu", memory_format=conv_memory_format("cpu"))
    first_conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv3d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 1, 32, 32, 16)
    for net in (plain, fast):
        net.eval()  # dropout off, so both see the same function
        net.zero_grad()
        torch.manual_seed(1)
        out = net.forward_branches(x)
        sum(o.square().mean() for o in out).backward()
    torch.testing.assert_close(fast.forward_branches(x), plain.forward_branches(x), rtol=1e-4, atol=1e-5)
    for (name, p_fast), p_plain in zip(fast.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p_fast.grad, p_plain.grad, rtol=1e-3, atol=1e-6, msg=name)
    torch.save(fast.state_dict(), tmp_path / "model.pt")
    loaded = copy.deepcopy(plain)
    loaded.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    torch.testing.assert_close(loaded(x), fast(x), rtol=1e-4, atol=1e-5)
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    fast.load_state_dict(torch.load(tmp_path / "plain.pt", weights_only=True))
    first_conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv3d))
    assert first_conv.weight.is_contiguous(memory_format=torch.channels_last_3d)  # the layout survives the load
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
