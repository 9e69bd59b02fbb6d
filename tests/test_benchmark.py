"""Tests of scripts/benchmark.py and its package scripts/benchmarks: every command at its tiniest settings, and the
reference sliding-window loop. pytest puts ``scripts/`` on the import path (``pythonpath`` in setup.cfg)."""

from __future__ import annotations

import json
import math

import benchmark as cli
import benchmarks as bench
import pytest
import torch

from semiseg.bundle import overlap_for_stride
from semiseg.inferers import ProbabilitySlidingWindowInferer

TINY = {"n_filters": 2, "patch": 32, "repeats": 1}


def _last_json_line(capsys: pytest.CaptureFixture) -> dict:
    lines = capsys.readouterr().out.strip().splitlines()
    return json.loads(lines[-1])


def _names(result: dict) -> set[str]:
    return {figure["name"] for figure in result["figures"]}


def test_losses_json_line(capsys):
    returned = bench.run_losses(**TINY)
    result = _last_json_line(capsys)
    assert result == returned
    assert result["benchmark"] == "losses"
    variants = ("supervised_labeled_forward", "supervised_same_forward", "all_terms", "all_terms_with_contrastive")
    steps = {f"step_time_{v}" for v in variants}
    terms = ("supervised", "cross_reliable", "reliability_masks", "cps", "entropy_filter", "kl", "consistency")
    terms += ("contrastive", "objective_supervised", "objective_all_terms", "sum_of_extra_terms")
    expected = steps | {f"loss_time_{t}" for t in terms} | {"unlabeled_terms_share", "contrastive_share"}
    expected |= {f"step_ratio_all_terms_vs_{v}" for v in ("supervised_same_forward", "supervised_labeled_forward")}
    assert _names(result) == expected
    figures = {f["name"]: f for f in result["figures"]}
    share = figures["unlabeled_terms_share"]
    assert share["goal"] == "<= 0.10" and share["met"] == (share["value"] <= 0.10)
    t_all, t_sup = figures["step_time_all_terms"]["value"], figures["step_time_supervised_same_forward"]["value"]
    assert share["value"] == pytest.approx((t_all - t_sup) / t_all)
    assert all(f["value"] > 0 for name, f in figures.items() if name.startswith("loss_time"))
    assert result["config"]["patch"] == [32, 32, 32] and result["config"]["n_filters"] == 2


def test_the_timed_objective_reads_the_unlabeled_crops():
    # else SemiSupervisedTrainer draws no unlabeled batch while the plain loop forwards one: unequal work timed
    from benchmarks.builder import build_objective

    objective = build_objective(torch.device("cpu"))
    assert objective.uses_unlabeled and objective.cross_pseudo is not None and objective.copy_paste is None


def test_step_json_line_without_memory(capsys):
    bench.run_step(iterations=1, memory=False, **TINY)
    result = _last_json_line(capsys)
    assert result["benchmark"] == "step"
    assert _names(result) == {"iteration_time_engine", "iteration_time_plain", "time_ratio_engine_vs_plain"}
    figures = {f["name"]: f for f in result["figures"]}
    ratio = figures["time_ratio_engine_vs_plain"]["value"]
    assert ratio == pytest.approx(figures["iteration_time_engine"]["value"] / figures["iteration_time_plain"]["value"])
    assert result["config"]["memory_method"] == "off"


@pytest.mark.slow
def test_step_json_line_with_memory(capsys):
    bench.run_step(iterations=1, memory=True, **TINY)
    result = _last_json_line(capsys)
    memory = {"peak_memory_engine", "peak_memory_plain", "memory_ratio_engine_vs_plain"}
    assert memory <= _names(result)
    figures = {f["name"]: f for f in result["figures"]}
    assert figures["peak_memory_engine"]["value"] > 0 and figures["peak_memory_plain"]["value"] > 0
    assert "minus" in result["config"]["memory_method"]


def test_inference_json_line(capsys):
    bench.run_inference(volume=(40, 40, 32), stride=(8, 8, 16), train_iterations=1, train_cases=1, **TINY)
    result = _last_json_line(capsys)
    assert result["benchmark"] == "inference"
    expected = {f"time_{v}" for v in ("reference_loop", "sliding_window_sw1", "sliding_window_sw4")}
    expected |= {"time_sliding_window_coarse", "time_ratio_sw1_vs_reference", "time_ratio_sw4_vs_reference"}
    expected |= {"max_abs_difference_sw1", "max_abs_difference_sw4", "time_ratio_coarse_vs_bundle_overlap"}
    expected |= {"dice_bundle_overlap", "dice_coarse_overlap", "dice_change_coarse_minus_bundle"}
    assert _names(result) == expected
    figures = {f["name"]: f for f in result["figures"]}
    assert figures["max_abs_difference_sw1"]["value"] <= 1e-5 and figures["max_abs_difference_sw1"]["met"] is True
    assert 0.0 <= figures["dice_bundle_overlap"]["value"] <= 1.0
    # 40 with a 32 window and stride 8: starts 0, 8 per in-plane axis; one window along z (32 = patch)
    assert result["config"]["windows"] == 4 and result["config"]["stride"] == [8, 8, 16]


def test_data_json_line(capsys, tmp_path):
    overrides = {"phantom_train_cases": 3, "phantom_validation_cases": 0, "phantom_test_cases": 1, "num_labeled": 1}
    overrides.update(labeled_batch_size=1, unlabeled_batch_size=1)
    bench.run_data(batches=1, overrides=overrides, output_dir=str(tmp_path), **TINY)
    result = _last_json_line(capsys)
    assert result["benchmark"] == "data"
    assert _names(result) == {
        "data_batches_per_second",
        "train_iterations_per_second",
        "data_to_train_ratio",
        "data_setup_time",
    }
    figures = {f["name"]: f for f in result["figures"]}
    expected_ratio = figures["data_batches_per_second"]["value"] / figures["train_iterations_per_second"]["value"]
    assert figures["data_to_train_ratio"]["value"] == pytest.approx(expected_ratio)
    assert result["config"]["patch_size"] == [32, 32, 32] and result["config"]["num_labeled"] == 1
    assert (tmp_path / "phantoms" / "datalist.json").is_file()


def test_norm_json_line(capsys):
    returned = bench.run_norm(repeats=1, rounds=1, batch=1, n_filters=2, patch=16)
    result = _last_json_line(capsys)
    assert result == returned and result["benchmark"] == "norm" and result["config"]["built"] == "GroupNorm"
    figures = {f["name"]: f for f in result["figures"]}
    assert figures["max_abs_difference"]["value"] < 1e-4 and figures["max_abs_difference"]["met"]
    assert figures["built_to_instance_norm_3d_ratio"]["value"] > 0
    assert result["config"]["shapes"] == [[1, 2, 16, 16, 16], [1, 4, 8, 8, 8], [1, 8, 4, 4, 4], [1, 16, 2, 2, 2]]
    assert "norm" in cli.COMMANDS


@pytest.mark.parametrize("size", [(40, 36, 24), (20, 40, 40)])  # larger than the window / one axis smaller (padded)
def test_reference_loop_matches_monai_sliding_window(size):
    torch.manual_seed(0)
    image = torch.rand(1, 1, *size)
    patch, stride = (32, 16, 16), (5, 7, 3)

    def network(window: torch.Tensor) -> torch.Tensor:  # output depends on the whole window, so windows differ
        dims = (1, 2, 3, 4)  # per window of a batch of windows
        mean, peak = window.mean(dims, keepdim=True), window.amax(dims, keepdim=True)
        return torch.cat([window * 2.0 + mean, peak.expand_as(window)], dim=1)

    reference = bench.reference_sliding_window(image, network, patch, stride)
    overlap = overlap_for_stride(patch, stride)
    inferer = ProbabilitySlidingWindowInferer(patch, sw_batch_size=3, overlap=overlap, mode="constant")
    expected = inferer(image, network)
    assert reference.shape == (1, 2, *size)
    assert torch.allclose(reference, expected, atol=1e-6, rtol=0)
    # the window set matters: a different stride gives a different average
    assert not torch.allclose(bench.reference_sliding_window(image, network, patch, (16, 16, 16)), expected)


def test_reference_loop_window_average_by_hand():
    image = torch.arange(4.0).view(1, 1, 4, 1, 1)
    # windows of 2 along x at stride 1: [0, 1], [1, 2], [2, 3], each giving logits (-0.5, 0.5) against 0, so channel 0
    # has probabilities (s(-0.5), s(0.5)); voxels 1 and 2 average two windows' probabilities: 0.5, not the geometric 0.485
    def network(window: torch.Tensor) -> torch.Tensor:
        return torch.cat([window - window.mean(), torch.zeros_like(window)], dim=1)

    blended = bench.reference_sliding_window(image, network, (2, 1, 1), (1, 1, 1))
    s = torch.sigmoid(torch.tensor(0.5)).item()
    assert blended[:, 0].exp().flatten().tolist() == pytest.approx([1 - s, 0.5, 0.5, s])


def test_scaled_stride():
    assert bench.scaled_stride((112, 112, 80)) == (18, 18, 4)
    assert bench.scaled_stride((64, 64, 32)) == (10, 10, 2)
    assert bench.scaled_stride((16, 16, 16)) == (3, 3, 1)


def test_report_goals_and_json():
    report = bench.BenchmarkReport("demo", config={"device": "cpu"})
    report.add("share", 0.2, "fraction", goal="<= 0.10")
    report.add("ratio", 3.0, "x", goal=">= 3")
    report.add("time", 1.5, "s", samples=[1.0, 1.5, 4.0])
    result = json.loads(report.to_json())
    assert result["figures"] == [
        {"name": "share", "value": 0.2, "unit": "fraction", "goal": "<= 0.10", "met": False},
        {"name": "ratio", "value": 3.0, "unit": "x", "goal": ">= 3", "met": True},
        {"name": "time", "value": 1.5, "unit": "s", "low": 1.0, "high": 4.0},
    ]
    assert result["config"] == {"device": "cpu"}


def test_run_interleaved_order_and_warmup():
    calls: list[str] = []

    def variant(name: str):
        return lambda: calls.append(name) or [float(len(calls))]

    samples = bench.run_interleaved({"a": variant("a"), "b": variant("b")}, repeats=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert samples == {"a": [3.0, 5.0], "b": [4.0, 6.0]}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patch": "64,64"}, "patch must be three positive integers like 64,64,32, got '64,64'."),
        ({"patch": (40, 32, 32)}, "patch [40, 32, 32] must be divisible by 16 on every axis"),
        ({"repeats": 0}, "repeats must be a positive integer, got 0."),
        ({"device": "tpu"}, "device must be 'cpu' or 'cuda[:N]', got 'tpu'."),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as error:
        bench.run_losses(**{"n_filters": 2, "patch": 32, **kwargs})
    assert message in str(error.value)


def test_bad_inference_arguments():
    with pytest.raises(ValueError, match=r"coarse_overlap must be in \[0, 1\), got 1.0"):
        bench.run_inference(coarse_overlap=1.0, **TINY)
    with pytest.raises(ValueError, match=r"volume \[20, 40, 40\] must be at least the patch \[32, 32, 32\]"):
        bench.run_inference(volume=(20, 40, 40), **TINY)
    with pytest.raises(ValueError, match="stride 40 must be between 1 and the window size 32"):
        bench.run_inference(stride=(8, 8, 40), train_iterations=0, **TINY)


# first axis 64: a bottleneck 2 voxels deep meets a PyTorch 2.13 CPU bfloat16 Conv3d weight-gradient bug (see the notes)
STEP_VARIANTS_TINY = {"n_filters": 2, "patch": "64,32,16", "labeled_batch": 1, "unlabeled_batch": 1, "repeats": 1}


def _with_one_thread(fn, **kwargs):
    threads = torch.get_num_threads()
    try:
        return fn(threads=1, **kwargs)  # one thread: the machine's cores may be busy with other runs
    finally:
        torch.set_num_threads(threads)


def test_step_variants_json_line(capsys):
    returned = _with_one_thread(bench.run_step_variants, **STEP_VARIANTS_TINY)
    result = _last_json_line(capsys)
    assert result == returned
    assert result["benchmark"] == "step_variants"
    variants = ("fp32", "amp", "channels_last", "amp+channels_last")
    others = variants[1:]
    expected = {f"iteration_time_{v}" for v in variants} | {f"time_ratio_{v}_vs_fp32" for v in others}
    expected |= {f"first_loss_{v}" for v in variants} | {f"last_loss_{v}" for v in variants}
    expected |= {f"first_loss_abs_difference_{v}_vs_fp32" for v in others} | {"max_first_loss_abs_difference_vs_fp32"}
    assert _names(result) == expected  # no peak memory on CPU
    figures = {f["name"]: f for f in result["figures"]}
    assert all(math.isfinite(f["value"]) for f in result["figures"])
    assert all(figures[f"iteration_time_{v}"]["value"] > 0 for v in variants)
    t_fp32 = figures["iteration_time_fp32"]["value"]
    assert figures["time_ratio_amp_vs_fp32"]["value"] == pytest.approx(figures["iteration_time_amp"]["value"] / t_fp32)
    # the same loss from the same weights, batch and random draws, within 1e-2 (bfloat16 autocast, and the
    # entropy-percentile masks and argmax pseudo-labels are discontinuous in the logits)
    first_fp32 = figures["first_loss_fp32"]["value"]
    for v in others:
        difference = figures[f"first_loss_abs_difference_{v}_vs_fp32"]["value"]
        assert difference == pytest.approx(abs(figures[f"first_loss_{v}"]["value"] - first_fp32))
    largest = figures["max_first_loss_abs_difference_vs_fp32"]
    assert largest["value"] < 1e-2 and largest["met"] is True and largest["goal"] == "<= 0.01"
    config = result["config"]
    assert config["variants"] == list(variants) and config["amp_dtype"] == "bfloat16"
    assert config["patch"] == [64, 32, 16] and config["memory_method"].startswith("n/a on CPU")


def test_step_variants_compile_failure_is_one_clear_error(monkeypatch, capsys):
    class Broken(torch.nn.Module):  # what torch.compile gives where the toolchain is missing: fails on first call
        def forward(self, x):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\n" + "  frame\n" * 50)

    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: Broken())
    with pytest.raises(bench.CompileError) as error:
        bench.run_step_variants(compile=True, **STEP_VARIANTS_TINY)
    message = str(error.value)
    assert "torch.compile failed in the 'compile' variant on cpu" in message
    assert "InvalidCxxCompiler: No working C++ compiler found" in message and "frame" not in message
    assert "run without --compile" in message
    # on the command line: that one line, no traceback
    with pytest.raises(SystemExit) as exit_:
        cli._command(bench.run_step_variants)(compile=True, **STEP_VARIANTS_TINY)
    assert str(exit_.value).startswith("error: torch.compile failed")
    assert "iteration_time" not in capsys.readouterr().out  # nothing was timed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"amp_dtype": "float8"}, "amp_dtype must be one of ['bfloat16', 'float16'] (or unset), got 'float8'."),
        ({"compile": "yes"}, "compile must be True or False, got 'yes'."),
        ({"iterations": 0}, "iterations must be a positive integer, got 0."),
    ],
)
def test_bad_step_variants_arguments(kwargs, message):
    with pytest.raises(ValueError) as error:
        bench.run_step_variants(**{**STEP_VARIANTS_TINY, **kwargs})
    assert message in str(error.value)
