from __future__ import annotations

import ast
import importlib.util
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("quality", Path(__file__).resolve().parent.parent / "scripts" / "quality.py")
quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(quality)


def test_every_row_has_an_overlay_in_every_bundle() -> None:
    for bundle in ("la", "pancreas", "brats"):
        for row in quality.ROWS:
            assert (quality.REPO / "bundles" / bundle / "configs" / "ablation" / f"{row}.json").is_file()


def test_table_gives_mean_and_std_over_seeds() -> None:
    results = {
        "supervised": {4: [{"seed": 0, "dice": 0.6, "hd95": 10.0}, {"seed": 1, "dice": 0.8, "hd95": 20.0}]},
        "fully_supervised": {None: [{"seed": 0, "dice": 0.9, "hd95": 5.0}]},
    }
    table = quality._table(results, [4])
    assert "| supervised only (both branches, unlabeled terms off) | 0.700 +- 0.100 | 15.0 +- 5.0 | 2 |" in table
    assert "| fully supervised bound (all training cases labeled) | 0.900 +- 0.000 | 5.0 +- 0.0 | 1 |" in table


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown: \\['nope'\\]"):
        quality.run_quality(rows="nope")
    with pytest.raises(ValueError, match="parallel"):
        quality.run_quality(rows="full", parallel=0)


def _fake_run(
    root: Path, name: str, row: str, budget: int | None, seed: int, overrides: dict, dice: float, config: str = ""
) -> None:
    run_dir = root / name
    run_dir.mkdir()
    settings = {"row": row, "budget": budget, "seed": seed, "overrides": overrides}
    digest = config or quality.config_digest(row, overrides)
    (run_dir / "run.json").write_text(json.dumps({**settings, "config": digest}))
    metrics = {"dice_left_atrium": {"mean": dice}, "hd95_left_atrium": {"mean": 10.0 * seed}}
    (run_dir / "summary.json").write_text(json.dumps({"metrics": metrics}))


def test_collect_runs_joins_invocations_with_the_same_overrides(tmp_path: Path) -> None:
    _fake_run(tmp_path, "full_l4_s1", "full", 4, 1, {}, 0.7)
    _fake_run(tmp_path, "full_l4_s0", "full", 4, 0, {}, 0.5)
    _fake_run(tmp_path, "supervised_l8_s0", "supervised", 8, 0, {}, 0.6)
    _fake_run(tmp_path, "fully_supervised_all_s0", "fully_supervised", None, 0, {}, 0.9)
    _fake_run(tmp_path, "other", "full", 4, 2, {"iterations": 10}, 0.1)  # other settings: left out
    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "run.json").write_text(json.dumps({"row": "cps", "budget": 4, "seed": 0, "overrides": {}}))

    results = quality.collect_runs(tmp_path, {})

    assert list(results) == ["supervised", "full", "fully_supervised"]
    assert [r["seed"] for r in results["full"][4]] == [0, 1]
    assert [r["dice"] for r in results["full"][4]] == [0.5, 0.7]
    assert results["supervised"] == {8: [{"seed": 0, "dice": 0.6, "hd95": 0.0}]}
    assert results["fully_supervised"][None][0]["dice"] == 0.9
    assert quality.collect_runs(tmp_path, {"iterations": 10})["full"][4][0]["seed"] == 2


def test_a_run_directory_is_not_reused_for_other_settings(tmp_path: Path) -> None:
    _fake_run(tmp_path, "full_l4_s0", "full", 4, 0, {"iterations": 10}, 0.1)
    with pytest.raises(RuntimeError, match="other settings"):
        quality._run_one(tmp_path / "full_l4_s0", "full", 4, 0, tmp_path, 1, {})


def test_a_relabelled_run_is_reused_and_tabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a run made as another row whose merged configuration is now this row's: its run.json says so in a note
    _fake_run(tmp_path, "full_l4_s0", "full", 4, 0, {}, 0.7)
    settings = json.loads((tmp_path / "full_l4_s0" / "run.json").read_text())
    note = {"relabelled_from": "no_consistency (LA bundle 0.4.7)"}
    (tmp_path / "full_l4_s0" / "run.json").write_text(json.dumps({**settings, **note}))
    monkeypatch.setattr(quality.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was trained again"))
    run_dir = tmp_path / "full_l4_s0"
    assert quality._run_one(run_dir, "full", 4, 0, tmp_path, 1, {}) == run_dir / "summary.json"
    assert quality.collect_runs(tmp_path, {})["full"][4][0]["dice"] == 0.7


def test_runs_of_an_earlier_configuration_are_neither_reused_nor_tabled(tmp_path: Path) -> None:
    # a run made before a default or the row's overlay changed (another digest of the merged configs)
    _fake_run(tmp_path, "full_l4_s0", "full", 4, 0, {}, 0.1, config="0123456789ab")
    _fake_run(tmp_path, "supervised_l4_s0", "supervised", 4, 0, {}, 0.6)
    _fake_run(tmp_path, "gone_l4_s0", "supervised", 4, 1, {}, 0.6)
    settings = json.loads((tmp_path / "gone_l4_s0" / "run.json").read_text())
    (tmp_path / "gone_l4_s0" / "run.json").write_text(json.dumps({**settings, "row": "dropped_overlay"}))
    assert list(quality.collect_runs(tmp_path, {})) == ["supervised"]
    with pytest.raises(RuntimeError, match="digest that differs"):
        quality._run_one(tmp_path / "full_l4_s0", "full", 4, 0, tmp_path, 1, {})
    # the digest follows the merged content: the defaults differ from a row that switches terms off
    assert quality.config_digest("full") != quality.config_digest("no_copy_paste")
    assert quality.config_digest("full") == quality.config_digest("full")


def test_the_digest_leaves_out_what_the_run_sets_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a protocol run sets its own schedule: a new demo schedule must not make it stale, a new default must
    configs = tmp_path / "configs"
    shutil.copytree(quality.BUNDLE / "configs", configs)
    monkeypatch.setattr(quality, "BUNDLE", tmp_path)
    schedule = {"iterations": 1500, "lr_step": 625}
    before, before_plain = quality.config_digest("full", schedule), quality.config_digest("full")
    demo = json.loads((configs / "demo.json").read_text())
    (configs / "demo.json").write_text(json.dumps({**demo, "lr_step": demo["lr_step"] + 1}))
    assert quality.config_digest("full", schedule) == before
    assert quality.config_digest("full") != before_plain  # a run that does not set it trained with it
    (configs / "demo.json").write_text(json.dumps({**demo, "learning_rate": 2 * demo["learning_rate"]}))
    assert quality.config_digest("full", schedule) != before


def test_the_digest_counts_a_disabled_component_as_null(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # bundle 0.4.5 switched KL off with "_disabled_": true; 0.4.3's no_kl overlay set it to null: the same training
    configs = tmp_path / "configs"
    shutil.copytree(quality.BUNDLE / "configs", configs)
    monkeypatch.setattr(quality, "BUNDLE", tmp_path)
    (configs / "ablation" / "null_kl.json").write_text(json.dumps({"loss#kl_uncertainty": None}))
    assert quality.config_digest("full") == quality.config_digest("null_kl")
    assert quality.config_digest("with_kl") != quality.config_digest("full")
    # LA 0.4.6 switched the entropy filter off the same way: 0.4.5's no_entropy_filter runs are 0.4.6's full runs
    (configs / "ablation" / "null_filter.json").write_text(json.dumps({"loss#entropy_filter": None}))
    assert quality.config_digest("full") == quality.config_digest("null_filter")
    # and LA 0.4.7 prototype contrast: 0.4.6's no_contrastive runs are 0.4.7's full runs
    (configs / "ablation" / "null_contrast.json").write_text(json.dumps({"loss#contrastive": None}))
    assert quality.config_digest("full") == quality.config_digest("null_contrast")
    assert quality.config_digest("with_contrastive") != quality.config_digest("full")
    # and LA 0.4.8 prediction consistency: 0.4.7's no_consistency runs are 0.4.8's full runs
    (configs / "ablation" / "null_consistency.json").write_text(json.dumps({"loss#consistency": None}))
    assert quality.config_digest("full") == quality.config_digest("null_consistency")
    assert quality.config_digest("with_consistency") != quality.config_digest("full")
    # and LA 0.4.9 cross pseudo supervision: 0.4.8's no_cross_pseudo runs are 0.4.9's full runs
    (configs / "ablation" / "null_cps.json").write_text(json.dumps({"loss#cross_pseudo": None}))
    assert quality.config_digest("full") == quality.config_digest("null_cps")
    assert quality.config_digest("with_cross_pseudo") != quality.config_digest("full")
    # and LA 0.4.11 cross-reliable supervision: 0.4.10's no_cross_reliable runs are 0.4.11's full runs
    (configs / "ablation" / "null_cross_reliable.json").write_text(json.dumps({"loss#cross_reliable": None}))
    assert quality.config_digest("full") == quality.config_digest("null_cross_reliable")
    assert quality.config_digest("with_cross_reliable") != quality.config_digest("full")
    train = json.loads((configs / "train.json").read_text())
    train["loss"]["kl_uncertainty"].pop("_disabled_")  # 0.4.3's train.json: the term on, no flag
    (configs / "train.json").write_text(json.dumps(train))
    with_kl_as_flag = quality.config_digest("with_kl")  # "_disabled_": false on top: trains as 0.4.3's defaults
    (configs / "ablation" / "with_kl.json").write_text("{}")
    assert quality.config_digest("with_kl") == with_kl_as_flag


def test_runs_get_the_allocator_settings_and_keep_the_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def fake_subprocess_run(cmd: list, stdout: object, stderr: object, env: dict, cwd: object) -> object:
        seen.update(env)
        (tmp_path / "run" / "summary.json").write_text("{}")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(quality.subprocess, "run", fake_subprocess_run)
    monkeypatch.setenv("MALLOC_TOP_PAD_", "1234")
    quality._run_one(tmp_path / "run", "full", 4, 0, tmp_path / "phantoms", threads=1, extra={})
    assert seen["MALLOC_MMAP_THRESHOLD_"] == quality.ALLOCATOR_ENV["MALLOC_MMAP_THRESHOLD_"]
    assert seen["MALLOC_TRIM_THRESHOLD_"] == quality.ALLOCATOR_ENV["MALLOC_TRIM_THRESHOLD_"]
    assert seen["MALLOC_TOP_PAD_"] == "1234"  # a value the user set wins
    assert seen["OMP_NUM_THREADS"] == "1"


def test_protocol_table_pairs_rows_by_seed_on_validation_and_test() -> None:
    def runs(values: list[tuple[int, float, float]]) -> list[dict]:
        return [{"seed": s, "dice": t, "hd95": 1.0, "val_dice": v} for s, v, t in values]

    results = {
        "supervised": {4: runs([(0, 0.70, 0.60), (1, 0.72, 0.62), (2, 0.74, 0.64)])},
        "full": {4: runs([(0, 0.75, 0.66), (1, 0.76, 0.70), (2, 0.73, 0.66)])},
        "fully_supervised": {None: runs([(0, 0.90, 0.80), (1, 0.90, 0.82), (2, 0.90, 0.84)])},
    }
    table = quality.protocol_table(results, [4])
    test_row = next(line for line in table.splitlines() if line.startswith("| full method") and "| test |" in line)
    # test differences 0.06, 0.08, 0.02: mean 0.053, sample std 0.0306, s.e. 0.0176; gap 0.2 on average
    assert "s0:0.660 s1:0.700 s2:0.660" in test_row
    assert "| +0.053 +- 0.018 | 3/3 | 27% |" in test_row
    val_row = next(line for line in table.splitlines() if line.startswith("| full method") and "| validation |" in line)
    assert "| 2/3 |" in val_row  # seed 2 loses on validation
    bound = next(line for line in table.splitlines() if line.startswith("| fully supervised") and "| test |" in line)
    assert bound.endswith("| 3/3 | - |")  # the bound closes no gap of its own


def _same_on_both_splits(values: list[tuple[int, float]]) -> list[dict]:
    """Protocol records ``(seed, Dice)`` with the same Dice on validation and test."""
    return [{"seed": s, "dice": d, "hd95": 1.0, "val_dice": d} for s, d in values]


def test_protocol_table_pairs_with_another_reference_row() -> None:
    results = {
        "supervised": {2: _same_on_both_splits([(0, 0.50), (1, 0.50)])},
        "supervised+no_intensity_augmentation": {2: _same_on_both_splits([(0, 0.70), (1, 0.72)])},
        "no_intensity_augmentation": {2: _same_on_both_splits([(0, 0.75), (1, 0.73)])},
    }
    table = quality.protocol_table(results, [2], reference="supervised+no_intensity_augmentation")
    assert "paired against supervised only, without intensity augmentation" in table
    row = next(
        line for line in table.splitlines() if line.startswith("| full method without intensity") and "| test |" in line
    )
    assert "| +0.030 +- 0.020 | 2/2 |" in row  # 0.05 and 0.01 over the reference
    baseline = next(line for line in table.splitlines() if line.startswith("| supervised only (both") and "| test |" in line)
    assert "| -0.210 +- 0.010 | 0/2 |" in baseline
    with pytest.raises(ValueError, match="unknown: \\['no_such_row'\\]"):
        quality.run_quality(rows="full", reference="no_such_row")


def test_paired_plot_draws_every_row_with_the_bound_last(tmp_path: Path) -> None:
    def runs(values: list[tuple[int, float, float]]) -> list[dict]:
        return [{"seed": s, "val_dice": v, "dice": t, "hd95": 1.0} for s, v, t in values]

    results = {
        "supervised": {2: runs([(0, 0.6, 0.7), (1, 0.65, 0.75)])},
        "fully_supervised": {None: runs([(0, 0.85, 0.86), (1, 0.84, 0.87)])},
        "full": {2: runs([(0, 0.66, 0.80)]), 4: runs([(0, 0.8, 0.82)])},
        "supervised_only_at_4": {4: runs([(0, 0.7, 0.8)])},
    }
    png = tmp_path / "paired.png"
    rows = quality._paired_plot(results, 2, png, "title")
    assert rows == ["supervised", "full", "fully_supervised"]  # rows without runs at the budget are left out
    assert png.read_bytes().startswith(b"\x89PNG")


def test_seed_lines_draw_a_line_per_seed_and_a_bar_at_each_mean() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    quality.seed_lines(ax, {1: {0: 0.6, 1: 0.8}, 0: {0: 0.5, 1: 0.9, 2: 0.7}}, half_width=0.2)
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["seed 0", "seed 1"]
    assert list(lines[0].get_ydata()) == [0.5, 0.9, 0.7]
    bars = sorted(tuple(map(tuple, c.get_segments()[0])) for c in ax.collections)  # ((x0, y0), (x1, y1)) each
    assert len(bars) == 3  # one bar per x position, over the seeds that have a value there
    for ((x0, y0), (x1, y1)), x, mean in zip(bars, (0, 1, 2), (0.55, 0.85, 0.7)):
        assert (x0, x1) == pytest.approx((x - 0.2, x + 0.2))
        assert (y0, y1) == pytest.approx((mean, mean))
    plt.close(fig)


def test_case_swings_pair_each_validation_case_with_the_reference_of_its_seed(tmp_path: Path) -> None:
    for name, row, seed, cases in [
        ("supervised_l2_s0", "supervised", 0, {"a": 0.5, "b": 0.6, "c": 0.7}),
        ("full_l2_s0", "full", 0, {"a": 0.9, "b": 0.3, "c": 0.75, "d": 0.1}),  # d: no reference case, left out
        ("full_l2_s1", "full", 1, {"a": 0.2}),  # no reference run of seed 1: left out
    ]:
        _fake_run(tmp_path, name, row, 2, seed, {}, 0.5)
        (tmp_path / name / "validation").mkdir()
        (tmp_path / name / "validation" / "summary.json").write_text(
            json.dumps({"metrics": {"dice_left_atrium": {"mean": 0.5}}})
        )
        lines = ["case,dice_left_atrium,hd95_monai_mm_left_atrium"] + [f"{c},{d},3.0" for c, d in cases.items()]
        (tmp_path / name / "validation" / "metrics.csv").write_text("\n".join(lines) + "\n")

    results = quality.collect_runs(tmp_path, {})
    assert results["full"][2][0]["val_cases"] == {"a": 0.9, "b": 0.3, "c": 0.75, "d": 0.1}
    swings = quality.case_swings(results, 2)
    assert list(swings) == ["full"]
    full = swings["full"]
    assert (full["cases"], full["up"], full["down"]) == (3, 1, 1)  # a +0.4, b -0.3, c +0.05
    assert full["rest_mean"] == pytest.approx(0.05)
    assert full["diffs"][0] == pytest.approx([0.4, -0.3, 0.05])
    table = quality.protocol_table(results, [2])
    full_name = quality.ROW_NAMES["full"]
    assert f"| {full_name} | 3 | 1 | 1 | +0.050 |" in table
    png = tmp_path / "cases.png"
    quality._case_plot(swings, png, "title")
    assert png.read_bytes().startswith(b"\x89PNG")


def _finishing_subprocess(commands: list[list[str]]) -> Callable[..., object]:
    """A stand-in for ``subprocess.run`` that records each command and writes a summary into its output_dir."""

    def fake_subprocess_run(cmd: list, stdout: object, stderr: object, env: dict, cwd: object) -> object:
        commands.append(cmd)
        out = Path(cmd[cmd.index("--output_dir") + 1])
        (out / "summary.json").write_text(json.dumps({"metrics": {"dice_la": {"mean": 0.5}, "hd95_monai_mm_la": {"mean": 3.0}}}))
        return type("Done", (), {"returncode": 0})()

    return fake_subprocess_run


def test_protocol_runs_score_the_final_checkpoint_on_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []
    monkeypatch.setattr(quality.subprocess, "run", _finishing_subprocess(commands))
    run_dir = tmp_path / "full_l4_s0"
    quality._run_one(run_dir, "full", 4, 0, tmp_path / "phantoms", 1, {"iterations": 8}, protocol="label_limited")
    assert len(commands) == 2
    validation = commands[1]
    assert validation[validation.index("--test#dataset#data") + 1] == "$@data.split.validation"
    assert validation[validation.index("--ckpt_dir") + 1] == str(run_dir / "models")
    assert json.loads((run_dir / "run.json").read_text())["protocol"] == "label_limited"
    # a finished run is neither trained nor validated again
    quality._run_one(run_dir, "full", 4, 0, tmp_path / "phantoms", 1, {"iterations": 8}, protocol="label_limited")
    assert len(commands) == 2
    (run_dir / "validation" / "summary.json").write_text(json.dumps({"metrics": {"dice_la": {"mean": 0.4}, "hd95_monai_mm_la": {"mean": 2.0}}}))
    num_test = quality.PROTOCOLS["label_limited"]["num_test"]
    assert quality.collect_runs(tmp_path, {"iterations": 8}, num_test)["full"][4][0]["val_dice"] == 0.4


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError, match="protocol must be one of"):
        quality.run_quality(protocol="everything")


def test_protocol_runs_keep_the_protocols_patch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo trains at 48x48x32 since LA 0.4.12; a protocol's runs at the protocol's 64x64x32, as its tables were
    made, unless the command line sets a patch."""

    class Stopped(Exception):
        pass

    seen: list[dict] = []

    def capture(run_dir: Path, row: str, budget: object, seed: int, phantom_dir: Path, threads: int, extra: dict,
                protocol: str | None = None) -> Path:  # fmt: skip
        seen.append(dict(extra))
        raise Stopped

    monkeypatch.setattr(quality, "_write_protocol_dataset", lambda spec, phantom_dir, budgets: tmp_path / "d.json")
    monkeypatch.setattr(quality, "_run_one", capture)
    for patch in ({}, {"patch_size": [32, 32, 32]}):
        with pytest.raises(Stopped):
            quality.run_quality(rows="full", seeds="0", protocol="site_shift", output_dir=str(tmp_path), **patch)
    assert seen[0]["patch_size"] == quality.PROTOCOLS["site_shift"]["patch_size"] == [64, 64, 32]
    assert seen[1]["patch_size"] == [32, 32, 32]
    assert quality.PROTOCOLS["label_limited"]["patch_size"] == [64, 64, 32]
    assert json.loads((quality.BUNDLE / "configs" / "demo.json").read_text())["patch_size"] == [48, 48, 32]
    assert "train#dataloader#sampler" not in seen[0]  # the bundle's own loader outside one_labeled
    with pytest.raises(Stopped):
        quality.run_quality(rows="supervised", seeds="0", protocol="one_labeled", output_dir=str(tmp_path))
    assert seen[2]["train#dataloader#sampler"].startswith("$torch.utils.data.RandomSampler(")
    assert seen[2]["train#dataloader#shuffle"] is False and seen[2]["iterations"] == 1500


def test_protocol_runs_take_the_bundles_schedule_in_proportion() -> None:
    train = json.loads((quality.BUNDLE / "configs" / "train.json").read_text())
    full_length = quality.bundle_schedule(int(train["iterations"]))
    assert full_length == {k: train[k] for k in ("lr_step", "rampup_iterations", "rampup_start")}
    assert quality.bundle_schedule(1200) == {"lr_step": 500, "rampup_iterations": 800, "rampup_start": 0}
    assert quality.bundle_schedule(1)["lr_step"] >= 1


def test_a_row_of_several_overlays_applies_them_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []

    def fake_subprocess_run(cmd: list, stdout: object, stderr: object, env: dict, cwd: object) -> object:
        commands.append(cmd)
        (Path(cmd[cmd.index("--output_dir") + 1]) / "summary.json").write_text("{}")
        return type("Done", (), {"returncode": 0})()

    monkeypatch.setattr(quality.subprocess, "run", fake_subprocess_run)
    row = "fully_supervised+no_intensity_augmentation"
    quality._run_one(tmp_path / "run", row, None, 0, tmp_path / "phantoms", threads=1, extra={})
    configs = ast.literal_eval(commands[0][commands[0].index("--config_file") + 1])
    ablation = quality.BUNDLE / "configs" / "ablation"
    assert configs[-2:] == [str(ablation / "fully_supervised.json"), str(ablation / "no_intensity_augmentation.json")]
    assert quality.is_bound(row) and not quality.is_bound("no_intensity_augmentation")

    # what the bundle makes of that order: every case labeled, no unlabeled term, and the augmentation list emptied
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(quality.BUNDLE / "configs" / n) for n in ("train.json", "demo.json")] + configs[-2:])
    assert parser["num_labeled"] is None and parser["loss#cross_pseudo"] is None and parser["loss#copy_paste"] is None
    assert parser["intensity_augmentation"] == []
    defaults = ConfigParser()
    defaults.read_config([str(quality.BUNDLE / "configs" / "train.json")])
    assert [t["_target_"] for t in defaults["intensity_augmentation"]][:2] == ["RandAdjustContrastd", "RandBiasFieldd"]
    with pytest.raises(ValueError, match="unknown: \\['full\\+no_such_row'\\]"):
        quality.run_quality(rows="full+no_such_row")


def test_gap_closed_divides_by_the_bound_named() -> None:
    results = {
        "supervised+no_intensity_augmentation": {2: _same_on_both_splits([(0, 0.70), (1, 0.70)])},
        "no_intensity_augmentation": {2: _same_on_both_splits([(0, 0.75), (1, 0.75)])},
        "fully_supervised": {None: _same_on_both_splits([(0, 0.80), (1, 0.80)])},
        "fully_supervised+no_intensity_augmentation": {None: _same_on_both_splits([(0, 0.95), (1, 0.95)])},
    }
    reference = "supervised+no_intensity_augmentation"
    rows = {
        bound: next(
            line for line in quality.protocol_table(results, [2], reference, bound).splitlines()
            if line.startswith("| full method without intensity") and "| test |" in line
        )
        for bound in ("fully_supervised", "fully_supervised+no_intensity_augmentation")
    }  # fmt: skip
    assert rows["fully_supervised"].endswith("| 50% |")  # 0.05 of the 0.10 to the plain bound
    assert rows["fully_supervised+no_intensity_augmentation"].endswith("| 20% |")  # 0.05 of 0.25
    table = quality.protocol_table(results, [2], reference, "fully_supervised+no_intensity_augmentation")
    assert "| fully supervised bound, without intensity augmentation | test |" in table


def test_protocol_runs_record_their_test_split_and_never_mix_with_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quality.subprocess, "run", _finishing_subprocess([]))
    run_dir = tmp_path / "full_l2_s0"
    quality._run_one(run_dir, "full", 2, 0, tmp_path / "phantoms", 1, {"iterations": 8}, protocol="label_limited")
    num_test = quality.PROTOCOLS["label_limited"]["num_test"]
    assert json.loads((run_dir / "run.json").read_text())["test_cases"] == num_test == 96
    assert [r["dice"] for r in quality.collect_runs(tmp_path, {"iterations": 8}, num_test)["full"][2]] == [0.5]
    assert quality.collect_runs(tmp_path, {"iterations": 8}) == {}  # not a demo-regime run
    # a run scored on the earlier 24-case split: neither tabled with the 96-case runs nor reused
    settings = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**settings, "test_cases": 24}))
    assert quality.collect_runs(tmp_path, {"iterations": 8}, num_test) == {}
    with pytest.raises(RuntimeError, match="'test_cases' differs"):
        quality._run_one(run_dir, "full", 2, 0, tmp_path / "phantoms", 1, {"iterations": 8}, protocol="label_limited")
