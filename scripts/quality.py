"""Quality under one protocol: the LA bundle's baselines and ablation rows on phantoms, several seeds and label budgets.

Each run is the bundle itself (``python -m monai.bundle run`` with ``train.json``, ``demo.json`` and the row's overlay
of ``configs/ablation``, or its overlays in order for a row ``a+b``), so what is measured is what users run. Runs go
``--parallel`` at a time with the CPU threads split between them and glibc's allocator told to keep freed activations
(``ALLOCATOR_ENV``, which changes no result); a run whose ``summary.json`` exists is not repeated, so an interrupted
sweep continues. The test cases never choose a checkpoint: every run is evaluated at its last iteration.

Each run directory holds ``run.json`` (row, label budget, seed, the overrides it ran with and a digest of its merged
configs). The summary covers every run under ``output_dir`` that ran with the same overrides and its row's current
configs, so a table can be filled by several invocations (one row or one budget at a time) and runs made with other
settings, or before a default changed, never mix into it.

Writes ``quality.md`` (mean +- std over seeds of the per-run mean Dice and HD95), ``quality.png`` (Dice against the
number of labeled cases) and ``quality.json`` under ``output_dir``, and prints the table and one JSON line. Under a
protocol the table is ``quality_<protocol>.md`` and the figure ``quality_<protocol>_l<budget>.png``, one per label
budget: validation and test Dice of each seed across the rows (a paired comparison drawn as one line per seed), and
``quality_<protocol>_l<budget>_cases.png``: each validation case's change against supervised-only of the same seed
(:func:`case_swings`; whether a row gains a little everywhere or flips a few cases).

Usage::

    python scripts/benchmark.py quality --rows supervised,full --seeds 0,1,2 --budgets 4 --output_dir output/quality

``--protocol label_limited`` runs the label-limited benchmark instead (see ``PROTOCOLS``): the ``la_varied``
phantoms (40 training, 24 validation, 96 test cases; the test cases from their own phantom seed), longer runs at
patch 64x64x32 (the protocol's, see ``PROTOCOLS``) with the bundle's own learning-rate step and unlabeled-weight
ramp in proportion to their length (:func:`bundle_schedule`), and a table of per-seed values, mean, std and the
paired difference of each row against supervised-only with its standard error, on validation (the cases every choice
is made on) and on test (read once per run, at its last iteration, for the table)::

    python scripts/benchmark.py quality --protocol label_limited --output_dir output/label_limited
    python scripts/benchmark.py quality --protocol label_limited --rows supervised,fully_supervised --seeds 0,1 \\
        --parallel 2 --threads 1 --output_dir output/label_limited

``--protocol site_shift`` draws the same family as two sites (``scripts/site_shift.py``): the 2 labeled cases from
the site whose atrium is darker than the pools around it, half of the unlabeled, validation and test cases from the
other, so that the mean asks what the unlabeled volumes add where the labeled cases do not reach; its runs are twice
as long (3000 iterations) and its default rows include the ``no_unlabeled_volumes`` control::

    python scripts/benchmark.py quality --protocol site_shift --parallel 2 --threads 1 --output_dir output/site_shift

``--protocol one_labeled`` is label_limited with 1 labeled case of 40 (its training and validation cases, test cases
from a stream no protocol had read): the three default rows at 1500 iterations, about 1 h 40 min two at a time::

    python scripts/benchmark.py quality --protocol one_labeled --parallel 2 --threads 1 --output_dir output/one_labeled

``--reference`` pairs every row with another row than supervised-only, and ``--bound`` names the fully supervised row
of the "gap closed" column; without intensity augmentation on either side of the comparison::

    python scripts/benchmark.py quality --protocol label_limited --output_dir output/label_limited --rows \\
        supervised+no_intensity_augmentation,no_intensity_augmentation,fully_supervised+no_intensity_augmentation \\
        --reference supervised+no_intensity_augmentation --bound fully_supervised+no_intensity_augmentation
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# glibc's allocator keeps freed activations in every run (bit-identical results, about 1.7x faster demo steps on CPU);
# train.json sets it too (semiseg.bundle.keep_freed_memory), the environment also covers the validation scoring
from semiseg.bundle import ALLOCATOR_ENV

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "bundles" / "la"
ROWS = ("supervised", "cps", "cps_entropy", "cps_entropy_kl", "full", "fully_supervised")
ROW_NAMES = {
    "supervised": "supervised only (both branches, unlabeled terms off)",
    "cps": "cross pseudo supervision",
    "cps_entropy": "+ entropy filter",
    "cps_entropy_kl": "+ KL uncertainty weighting",
    "full": "full method (copy-paste; CPS, entropy filter, KL, contrast, consistency and cross-reliable off)",
    "fully_supervised": "fully supervised bound (all training cases labeled)",
    "weaker_teacher": "full method, weaker-branch teaching",
    "global_percentile": "full method with prototype contrast, batch-wide entropy percentile (as DESIGN.md states it)",
    "no_unlabeled_volumes": "full method, its unlabeled crops cut from the labeled cases' images (no other volume read)",
    "with_cross_reliable": "full method with cross-reliable supervision (the defaults of bundle 0.4.10)",
    "with_cross_pseudo": "full method with cross pseudo supervision",
    "with_cross_pseudo+with_cross_reliable": "full method with CPS and cross-reliable (the defaults of 0.4.8)",
    "with_consistency": "full method with prediction consistency",
    "with_contrastive": "full method with prototype contrast",
    "with_entropy_filter": "full method with the entropy filter",
    "with_kl": "full method with KL uncertainty weighting",
    "with_consistency+with_cross_pseudo+with_cross_reliable": "with CPS, cross-reliable, consistency (0.4.7's)",
    "with_consistency+with_contrastive+with_cross_pseudo+with_cross_reliable": (
        "with CPS, cross-reliable, consistency and contrast (0.4.6's defaults)"
    ),
    "with_consistency+with_contrastive+with_cross_pseudo+with_cross_reliable+with_entropy_filter": (
        "with CPS, cross-reliable, consistency, contrast and the entropy filter"
    ),
    "with_consistency+with_contrastive+with_cross_pseudo+with_cross_reliable+with_entropy_filter+with_kl": (
        "all terms on (as in the paper)"
    ),
    "filtered_terms_only": "the terms that read only reliable voxels (filter, contrast), cross-reliable, augmentation",
    "perturbed_student": "full method, students on intensity-perturbed unlabeled crops, teacher on the clean ones",
    "agreement_reliability": "full method with prototype contrast, reliable only where both networks are and agree",
    "mean_teacher": "full method, pseudo-labels from an exponential moving average of the weights (mean teacher)",
    "weight_one_no_dropout": "full method, unlabeled weight 1 (as the paper's loss)",
    "strong_contrastive": "full method with prototype contrast at weight 0.3 (0.1 in with_contrastive)",
    "no_copy_paste": "full method without copy-paste (no term left: the supervised-only configuration)",
    "no_intensity_augmentation": "full method without intensity augmentation",
    "supervised+no_intensity_augmentation": "supervised only, without intensity augmentation",
    "fully_supervised+no_intensity_augmentation": "fully supervised bound, without intensity augmentation",
    "previous_defaults": "the defaults before copy-paste and augmentation (pseudo-labels from the training pass)",
}

#: row names short enough for a figure's axis
ROW_SHORT = {
    "supervised": "supervised only",
    "cps": "CPS",
    "cps_entropy": "+ entropy filter",
    "cps_entropy_kl": "+ KL",
    "full": "full method",
    "with_cross_reliable": "with cross-reliable",
    "with_cross_pseudo": "with CPS",
    "with_consistency": "with consistency",
    "with_contrastive": "with contrast",
    "with_consistency+with_cross_pseudo+with_cross_reliable": "with CPS, CR, consistency",
    "with_consistency+with_contrastive+with_cross_pseudo+with_cross_reliable": "with CPS, CR, cons., contrast",
    "with_consistency+with_contrastive+with_cross_pseudo+with_cross_reliable+with_entropy_filter": "all but KL",
    "with_consistency+with_contrastive+with_cross_pseudo+with_cross_reliable+with_entropy_filter+with_kl": "all terms",
    "fully_supervised": "all labeled",
    "agreement_reliability": "agreement required",
    "mean_teacher": "mean teacher",
    "filtered_terms_only": "filtered terms only",
    "perturbed_student": "perturbed student",
    "no_copy_paste": "no copy-paste",
    "no_intensity_augmentation": "no intensity aug.",
    "supervised+no_intensity_augmentation": "supervised, no aug.",
    "fully_supervised+no_intensity_augmentation": "all labeled, no aug.",
    "previous_defaults": "previous defaults",
}

__all__ = [
    "run_quality", "bundle_schedule", "case_swings", "collect_runs", "protocol_table", "overlays", "run_configs",
    "config_digest", "is_bound", "seed_lines",
    "ALLOCATOR_ENV", "PROTOCOLS",
]  # fmt: skip


def overlays(row: str) -> list[Path]:
    """The overlay files of a row, in the order they apply: ``a+b`` is ``ablation/a.json`` then ``ablation/b.json``
    (e.g. ``fully_supervised+no_intensity_augmentation``: every case labeled, then the augmentation list emptied)."""
    return [BUNDLE / "configs" / "ablation" / f"{part}.json" for part in row.split("+")]


def run_configs(row: str) -> list[Path]:
    """The config files of a run of ``row``: the bundle's ``train.json`` and ``demo.json``, then the row's overlays."""
    return [BUNDLE / "configs" / "train.json", BUNDLE / "configs" / "demo.json", *overlays(row)]


def config_digest(row: str, overrides: Mapping[str, object] | None = None) -> str:
    """A digest of the configuration a run of ``row`` trains with: its config files merged as MONAI merges them.

    ``run.json`` records it, so that a run made before a default or an overlay changed is neither reused nor mixed
    into a table with runs of the current configuration (the plugin's code is not part of it). The ids the run sets
    on its command line (``overrides``, recorded beside the digest) are left out of it: a protocol run sets its own
    length and schedule, so a change of the demo's does not make the protocol's runs stale.
    """
    from monai.bundle import ConfigParser

    merged = ConfigParser.load_config_files([str(path) for path in run_configs(row)])
    kept = {key: _as_trained(value) for key, value in merged.items() if key not in (overrides or {})}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def _as_trained(config: object) -> object:
    """``config`` as it trains: a component with ``"_disabled_": true`` is ``None`` (MONAI instantiates it as such),
    and ``"_disabled_": false`` is dropped, so switching a term off by either spelling gives the same digest."""
    if isinstance(config, list):
        return [_as_trained(item) for item in config]
    if not isinstance(config, dict):
        return config
    from monai.bundle import ConfigComponent

    if ConfigComponent(config).is_disabled():
        return None
    return {key: _as_trained(value) for key, value in config.items() if key != "_disabled_"}


def is_bound(row: str) -> bool:
    """Whether a row trains on every training case (it names ``fully_supervised``), so label budgets do not apply."""
    return "fully_supervised" in row.split("+")


def _name(row: str) -> str:
    return ROW_NAMES.get(row) or " + ".join(ROW_NAMES.get(part, part) for part in row.split("+"))


#: benchmark protocols: the phantom set (``dataset`` names its writer, see ``_write_protocol_dataset``; kind, cases per
#: split, seed; ``test_seed`` draws the test cases from another seed's stream, because the family's calibration looked
#: at the seed-0 test cases) and the default rows, seeds, label budgets and run length; every one but the phantom set
#: can be overridden on the command line. The label_limited choices were made on its validation cases: 24 of them (8 put
#: the gap at 4 labeled at 0.109, the 24 at 0.079), 2 labeled of 40 (5 %, as LA's 4 of 80; 4 labeled left less than the
#: 0.10 gap to the bound), 1500 iterations (the demo's 800 stopped short of the bound). 96 test cases, 24 until 2026-12
#: (the first 24 are those): one case's Dice moves by up to 0.36 between seeds of the defaults, and the first 24 cases'
#: mean sat 0.02-0.05 above the other 72's (session 32's scoring of 8 checkpoints), so a 24-case mean is too coarse for
#: the table's gaps; ``run.json`` records the number (``test_cases``), so that runs scored on either split never mix.
#: ``patch_size`` is the protocols' own (the demo's until LA 0.4.12, whose demo trains at 48x48x32), so that their runs
#: train and are scored as their tables were made; it is passed to each run, so a run made before 0.4.12 (no
#: ``patch_size`` among its overrides, the demo's patch inside its digest) is refused as "other settings": rerun it,
#: or record the override and the digest it has now (:func:`config_digest`) in its ``run.json``.
PROTOCOLS: dict[str, dict] = {
    "label_limited": {
        "kind": "la_varied",
        "num_train": 40,
        "num_validation": 24,
        "num_test": 96,
        "phantom_seed": 0,
        "test_seed": 1,
        "dataset": "phantoms",
        "rows": "supervised,full,fully_supervised",
        "seeds": "0,1,2,3,4",
        "budgets": "2",
        "iterations": 1500,
        "patch_size": [64, 64, 32],
    },
    # the same family drawn as two sites (scripts/site_shift.py): the 2 labeled cases from the dim-atrium one, half
    # of the unlabeled, validation and test cases from the bright-atrium one; test cases from a stream no protocol
    # has read. Made after label_limited's control showed the unlabeled volumes' gain on its few bright cases only.
    # 3000 iterations since session 39, chosen on validation (5 seeds each): at 1500 the bound stopped at 0.827, short
    # of the 0.85 the protocol asks of it; at 3000 it reaches 0.869 and supervised-only stays 0.120 below it.
    "site_shift": {
        "kind": "la_varied",
        "num_train": 40,
        "num_validation": 24,
        "num_test": 96,
        "phantom_seed": 0,
        "test_seed": 2,
        "dataset": "site_shift",
        "num_labeled": 2,
        "bright_fraction": 0.5,
        "threshold": 0.9,
        "rows": "supervised,full,no_unlabeled_volumes,fully_supervised",
        "seeds": "0,1,2,3,4",
        "budgets": "2",
        "iterations": 3000,
        "patch_size": [64, 64, 32],
    },
    # label_limited's family, training and validation cases with 1 labeled case instead of 2 and test cases from a
    # stream no protocol has read (test seed 3): made in session 41 because label_limited's 2-label gap to the bound
    # fell short of 0.10 on its test cases, and site_shift meets the bars only at 3000 iterations (about 5 h)
    "one_labeled": {
        "kind": "la_varied",
        "num_train": 40,
        "num_validation": 24,
        "num_test": 96,
        "phantom_seed": 0,
        "test_seed": 3,
        "dataset": "phantoms",
        "rows": "supervised,full,fully_supervised",
        "seeds": "0,1,2,3,4",
        "budgets": "1",
        "iterations": 1500,
        "patch_size": [64, 64, 32],
        # one labeled case fills the labeled batch of 2 with two random crops of it (the train.json loader would drop
        # its only, incomplete batch); with 2 or more cases this sampler draws as the loader's own shuffle does
        "overrides": {
            "train#dataloader#sampler": (
                "$torch.utils.data.RandomSampler(@train#dataset, "
                "num_samples=max(len(@train#dataset), @labeled_batch_size))"
            ),
            "train#dataloader#shuffle": False,
        },
    },
}


def _as_list(value: str | int | Sequence, cast: type = str) -> list:
    if isinstance(value, (list, tuple)):
        return [cast(v) for v in value]
    return [cast(v) for v in str(value).split(",") if str(v).strip()]


def _write_protocol_dataset(spec: dict, phantom_dir: Path, budgets: list[int]) -> Path:
    """Write (or find written) a protocol's phantom set; return its ``datalist.json``.

    ``spec["dataset"]`` names the writer: ``"phantoms"`` (:func:`semiseg.data.write_phantom_dataset`, one stream per
    split) or ``"site_shift"`` (:func:`site_shift.write_site_shift_dataset`, cases kept by site).
    """
    if spec["dataset"] not in ("phantoms", "site_shift"):
        raise ValueError(f"a protocol's dataset must be 'phantoms' or 'site_shift', got {spec['dataset']!r}.")
    if spec["dataset"] == "phantoms":
        from semiseg.data import write_phantom_dataset

        return write_phantom_dataset(
            phantom_dir, num_train=spec["num_train"], num_test=spec["num_test"], kind=spec["kind"],
            seed=spec["phantom_seed"], num_validation=spec["num_validation"], test_seed=spec.get("test_seed"),
        )  # fmt: skip
    from site_shift import write_site_shift_dataset  # imports collapse_cases, which imports this module

    if max(budgets) > spec["num_labeled"]:
        raise ValueError(
            f"budgets must be at most the protocol's {spec['num_labeled']} labeled cases of one site, got {budgets}."
        )
    return write_site_shift_dataset(
        phantom_dir, num_labeled=spec["num_labeled"], num_unlabeled=spec["num_train"] - spec["num_labeled"],
        num_validation=spec["num_validation"], num_test=spec["num_test"], bright_fraction=spec["bright_fraction"],
        threshold=spec["threshold"], seed=spec["phantom_seed"], test_seed=spec["test_seed"], kind=spec["kind"],
        workers=min(8, os.cpu_count() or 1),
    )  # fmt: skip


def _run_one(
    out: Path,
    row: str,
    budget: int | None,
    seed: int,
    phantom_dir: Path,
    threads: int,
    extra: dict,
    protocol: str | None = None,
) -> Path:
    summary = out / "summary.json"
    settings = {
        "row": row, "budget": budget, "seed": seed, "overrides": _jsonable(extra), "config": config_digest(row, extra),
    }  # fmt: skip
    if protocol is not None:
        settings.update(protocol=protocol, test_cases=PROTOCOLS[protocol]["num_test"])
    if summary.is_file() and _settings(out) == settings:
        if protocol is not None:
            _validate_one(out, phantom_dir, threads, extra)
        return summary
    if (out / "run.json").is_file() and _settings(out) != settings:
        raise RuntimeError(
            f"{out} holds a run with other settings ({_settings(out)}); use another output_dir for {settings} "
            "(a 'config' digest that differs: the bundle's configs or the row's overlays changed since that run, or it "
            "was made before bundle 0.4.2, whose digests also covered the ids a run sets on its command line; or "
            "'test_cases' differs: a protocol run scored on another test split)."
        )
    configs = run_configs(row)
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str([str(c) for c in configs]),
        "--bundle_root", str(BUNDLE),
        "--output_dir", str(out),
        "--phantom_dir", str(phantom_dir),
        "--seed", str(seed),
    ]  # fmt: skip
    if budget is not None:
        cmd += ["--num_labeled", str(budget)]
    for key, value in extra.items():
        cmd += [f"--{key}", str(value)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(settings, indent=2) + "\n")
    env = {**ALLOCATOR_ENV, **os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with open(out / "run.log", "w") as log:
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if result.returncode != 0 or not summary.is_file():
        raise RuntimeError(f"run {out.name} failed (exit {result.returncode}); see {out / 'run.log'}")
    if protocol is not None:
        _validate_one(out, phantom_dir, threads, extra)
    return summary


def bundle_schedule(iterations: int) -> dict[str, int]:
    """The LA bundle's learning-rate step and unlabeled-weight ramp (``train.json``) scaled to a run of ``iterations``.

    The demo overlay writes the schedule out for its own length (``demo.json``); a protocol run of another length
    takes the bundle's (6000 iterations: LR x0.1 every 2500, ramp over the first 4000) in proportion, so that only
    size and length differ from what real-data users train.
    """
    from semiseg.engines.run_length import scale_count

    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    keys = ("lr_step", "rampup_iterations", "rampup_start")
    return {key: scale_count(train[key], train["iterations"], iterations) for key in keys}


def _validate_one(out: Path, phantom_dir: Path, threads: int, extra: dict) -> Path:
    """The run's final checkpoint scored on the validation list (``evaluate.json``), under ``<run>/validation``."""
    summary = out / "validation" / "summary.json"
    if summary.is_file():
        return summary
    configs = [BUNDLE / "configs" / n for n in ("train.json", "evaluate.json", "demo.json")]
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str([str(c) for c in configs]),
        "--bundle_root", str(BUNDLE),
        "--output_dir", str(out / "validation"),
        "--ckpt_dir", str(out / "models"),
        "--phantom_dir", str(phantom_dir),
        "--test#dataset#data", "$@data.split.validation",
    ]  # fmt: skip
    for key, value in extra.items():
        cmd += [f"--{key}", str(value)]
    env = {**ALLOCATOR_ENV, **os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    (out / "validation").mkdir(parents=True, exist_ok=True)
    with open(out / "validation" / "run.log", "w") as log:
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if result.returncode != 0 or not summary.is_file():
        raise RuntimeError(f"validation of {out.name} failed (exit {result.returncode}); see {summary.parent / 'run.log'}")
    return summary


def _jsonable(overrides: dict) -> dict:
    return json.loads(json.dumps(overrides, default=str))


#: the keys of ``run.json`` that say what a run trained; other keys are notes (``relabelled_from``: the row a run was
#: made as, before a default change made its configuration another row's) and are left out of every comparison
RUN_KEYS = ("row", "budget", "seed", "overrides", "config", "protocol", "test_cases")


def _settings(run_dir: Path) -> dict | None:
    path = run_dir / "run.json"
    if not path.is_file():
        return None
    return {key: value for key, value in json.loads(path.read_text()).items() if key in RUN_KEYS}


def collect_runs(output_dir: Path, overrides: dict, test_cases: int | None = None) -> dict:
    """Every finished run under ``output_dir`` made with ``overrides`` and its row's current configuration
    (:func:`config_digest`), scored on ``test_cases`` test cases (a protocol's ``num_test``; None for the demo
    regime's runs, whose ``run.json`` does not record it): ``{row: {budget: [record, ...]}}``.

    Rows come in the order of ``ROWS`` (others after them), records in seed order; ``budget`` is None for the fully
    supervised row. A record is ``{"seed", "dice", "hd95"}`` read from the run's ``summary.json`` (MONAI's HD95),
    with ``"val_dice"`` when the run was also scored on the validation list (``<run>/validation/summary.json``) and
    ``"val_cases"`` (``{case: Dice}``, from ``<run>/validation/metrics.csv``) where that file exists, and
    ``"test_case_dice"`` (``{case: Dice}`` of the test list, from ``<run>/metrics.csv``) where that one exists.
    """
    wanted = _jsonable(overrides)
    digests: dict[str, str | None] = {}  # row -> its current config digest, merged once per row
    found: dict = {}
    for run_json in sorted(Path(output_dir).glob("*/run.json")):
        settings = json.loads(run_json.read_text())
        summary = run_json.parent / "summary.json"
        if settings.get("overrides") != wanted or settings.get("test_cases") != test_cases or not summary.is_file():
            continue
        row = settings["row"]
        if row not in digests:
            digests[row] = config_digest(row, wanted) if all(path.is_file() for path in overlays(row)) else None
        if settings.get("config") != digests[row] or digests[row] is None:
            continue
        record = {"seed": settings["seed"], "dice": _metric(summary, "dice"), "hd95": _metric(summary, "hd95")}
        per_case = _case_dice(run_json.parent / "metrics.csv")
        if per_case:
            record["test_case_dice"] = per_case
        validation = run_json.parent / "validation" / "summary.json"
        if validation.is_file():
            record["val_dice"] = _metric(validation, "dice")
            cases = _case_dice(validation.parent / "metrics.csv")
            if cases:
                record["val_cases"] = cases
        found.setdefault(row, {}).setdefault(settings["budget"], []).append(record)
    order = {row: i for i, row in enumerate(ROW_NAMES)}  # ROWS first, then the other overlays
    results = {row: found[row] for row in sorted(found, key=lambda r: (order.get(r, len(order)), r))}
    for per_budget in results.values():
        for runs in per_budget.values():
            runs.sort(key=lambda r: r["seed"])
    return results


def _case_dice(metrics_csv: Path) -> dict[str, float]:
    """``{case: Dice}`` of one scored list (the first ``dice_*`` column of MONAI's per-case ``metrics.csv``)."""
    if not metrics_csv.is_file():
        return {}
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    column = next((c for c in (rows[0] if rows else {}) if c.startswith("dice_")), None)
    return {r["case"]: float(r[column]) for r in rows if column is not None and r[column] not in ("", "nan")}


#: a validation case whose Dice moves by more than this against the paired reference run counts as a swing
SWING_THRESHOLD = 0.2


def case_swings(
    results: dict, budget: int, reference: str = "supervised", threshold: float = SWING_THRESHOLD
) -> dict:
    """Per validation case, how each row moves the Dice of the same case in the reference run of the same seed.

    A row can gain on average because most cases improve a little, or because a few cases flip from one structure to
    another (a look-alike taken for the target, or the reverse) while the rest stay; the mean hides which.

    Returns:
        ``{row: {"cases", "up", "down", "rest_mean", "diffs"}}`` over the cases of every seed the row shares with the
        reference: the number of paired cases, how many changed by more than ``threshold`` up and down, the mean
        change of the others, and every difference ``{seed: [row - reference, ...]}``.
    """
    ref = {r["seed"]: r.get("val_cases", {}) for r in (results.get(reference) or {}).get(budget, [])}
    swings = {}
    for row, per_budget in results.items():
        if row == reference or is_bound(row):
            continue
        diffs = {}
        for r in per_budget.get(budget, []):
            paired = sorted(set(r.get("val_cases", {})) & set(ref.get(r["seed"], {})))
            if paired:
                diffs[r["seed"]] = [r["val_cases"][c] - ref[r["seed"]][c] for c in paired]
        d = np.array([x for values in diffs.values() for x in values])
        if d.size:
            rest = d[np.abs(d) <= threshold]
            swings[row] = {"cases": int(d.size), "up": int((d > threshold).sum()), "down": int((d < -threshold).sum()),
                           "rest_mean": float(rest.mean()) if rest.size else float("nan"), "diffs": diffs}  # fmt: skip
    return swings


def _metric(summary: Path, name: str) -> float:
    """Mean of ``name`` over the cases; ``hd95`` is MONAI's convention (``hd95_monai_*``, or ``hd95_*`` of older runs)."""
    metrics = json.loads(summary.read_text())["metrics"]
    prefixes = ("hd95_monai_", "hd95_") if name == "hd95" else (f"{name}_",)
    key = next(k for prefix in prefixes for k in metrics if k.startswith(prefix))
    return float(metrics[key]["mean"])


def _table(results: dict, budgets: list[int]) -> str:
    header = "| row | " + " | ".join(f"{b} labeled: Dice | {b} labeled: HD95 (mm)" for b in budgets) + " | seeds |"
    lines = [header, "|---|" + "---|---|" * len(budgets) + "---|"]
    for row, per_budget in results.items():
        cells, seeds = [], []
        for budget in budgets:
            runs = per_budget.get(budget) or per_budget.get(None)
            if not runs:
                cells += ["-", "-"]
                continue
            seeds.append(str(len(runs)))
            dice = np.array([r["dice"] for r in runs])
            hd = np.array([r["hd95"] for r in runs])
            cells += [f"{dice.mean():.3f} +- {dice.std():.3f}", f"{np.nanmean(hd):.1f} +- {np.nanstd(hd):.1f}"]
        lines.append(f"| {_name(row)} | " + " | ".join(cells + ["/".join(seeds) or "-"]) + " |")
    return "\n".join(lines)


def paired_difference(differences: np.ndarray) -> tuple[float, float, int]:
    """Mean of per-seed differences (row - reference), its standard error (sample std / sqrt(n); NaN under 2 seeds)
    and the wins (seeds with a positive difference)."""
    d = np.asarray(differences, dtype=float)
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(d.mean()), se, int((d > 0).sum())


def protocol_table(
    results: dict, budgets: list[int], reference: str = "supervised", bound: str = "fully_supervised"
) -> str:
    """Per-seed Dice, mean, std and the paired difference against ``reference``, on validation and on test.

    One block per label budget. A row's paired difference uses the seeds it shares with the reference row: mean
    difference, its standard error (sample std / sqrt(n)), wins out of n, and the fraction of the reference to
    ``bound`` gap that the row closes (pair a reference and a bound trained alike, e.g.
    ``supervised+no_intensity_augmentation`` with ``fully_supervised+no_intensity_augmentation``). Choices are to be
    made on the validation columns only.
    """
    full = {r["seed"]: r for r in (results.get(bound) or {}).get(None, [])}
    lines = []
    for budget in budgets:
        ref = {r["seed"]: r for r in (results.get(reference) or {}).get(budget, [])}
        lines += [
            f"### {budget} labeled (paired against {_name(reference)})",
            "",
            "| row | split | per seed | mean +- std | paired diff +- s.e. | wins | gap closed |",
            "|---|---|---|---|---|---|---|",
        ]
        for row, per_budget in results.items():
            runs = per_budget.get(budget) or per_budget.get(None) or []
            for split, key in (("validation", "val_dice"), ("test", "dice")):
                values = {r["seed"]: r[key] for r in runs if key in r}
                if not values:
                    continue
                v = np.array(list(values.values()))
                per_seed = " ".join(f"s{s}:{x:.3f}" for s, x in values.items())
                cells = [f"{v.mean():.3f} +- {v.std(ddof=1) if v.size > 1 else 0.0:.3f}", "-", "-", "-"]
                paired = [s for s in values if s in ref and key in ref[s]]
                if row != reference and paired:
                    d = np.array([values[s] - ref[s][key] for s in paired])
                    mean, se, wins = paired_difference(d)
                    cells[1] = f"{mean:+.3f} +- {se:.3f}"
                    cells[2] = f"{wins}/{d.size}"
                    gap = [full[s][key] - ref[s][key] for s in paired if s in full and key in full[s]]
                    if gap and np.mean(gap) > 0 and not is_bound(row):
                        cells[3] = f"{d.mean() / np.mean(gap):.0%}"
                lines.append(f"| {_name(row)} | {split} | {per_seed} | " + " | ".join(cells) + " |")
        lines.append("")
        swings = case_swings(results, budget, reference)
        if swings:
            lines += [
                f"Validation cases, paired with {_name(reference)} of the same seed (all seeds "
                f"pooled): how many moved by more than {SWING_THRESHOLD} Dice, and the mean change of the others.",
                "",
                f"| row | paired cases | up > {SWING_THRESHOLD} | down > {SWING_THRESHOLD} | mean change of the rest |",
                "|---|---|---|---|---|",
            ]
            for row, sw in swings.items():
                lines.append(f"| {_name(row)} | {sw['cases']} | {sw['up']} | {sw['down']} | "
                             f"{sw['rest_mean']:+.3f} |")  # fmt: skip
            lines.append("")
    return "\n".join(lines)


def _plot(results: dict, budgets: list[int], path: Path, total_cases: int, kind: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for row, per_budget in results.items():
        if is_bound(row):
            runs = per_budget[None]
            dice = np.array([r["dice"] for r in runs])
            ax.axhline(dice.mean(), color="gray", linestyle="--", label=f"{_name(row)} ({total_cases})")
            continue
        xs = [b for b in budgets if per_budget.get(b)]
        means = [np.mean([r["dice"] for r in per_budget[b]]) for b in xs]
        stds = [np.std([r["dice"] for r in per_budget[b]]) for b in xs]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=_name(row))
    ax.set_xlabel("labeled training cases")
    ax.set_ylabel("test Dice (mean over seeds, +- std)")
    ax.set_xticks(budgets)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.set_title(f"{kind} phantoms, last checkpoint")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def seed_lines(ax: object, per_seed: Mapping[int, Mapping[int, float]], half_width: float = 0.25) -> None:
    """Draw on ``ax`` one line per seed through its values at x positions ``{seed: {x: value}}`` and, at each x, a
    black bar at the mean over the seeds that have a value there (paired runs: a rising line is a win)."""
    at_x: dict[int, list[float]] = {}
    for seed, points in sorted(per_seed.items()):
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", alpha=0.6, label=f"seed {seed}")
        for x in xs:
            at_x.setdefault(x, []).append(points[x])
    for x, values in at_x.items():
        ax.hlines(np.mean(values), x - half_width, x + half_width, color="black", linewidth=2)


def _paired_plot(results: dict, budget: int, path: Path, title: str) -> list[str]:
    """Validation and test Dice of every seed, one line per seed across the rows at label budget ``budget``.

    Paired runs share a seed, so a line that rises from supervised-only to a row is a win of that row for that seed;
    the black bar is the mean over seeds. Returns the rows in the order drawn (the fully supervised bound last).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row, per_budget in results.items() if per_budget.get(budget) or per_budget.get(None)]
    rows.sort(key=is_bound)  # the bounds last
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.6 * len(rows), 4.2), sharey=True)
    for ax, (split, key) in zip(axes, (("validation", "val_dice"), ("test", "dice"))):
        per_seed: dict[int, dict[int, float]] = {}
        for x, row in enumerate(rows):
            runs = [r for r in results[row].get(budget) or results[row].get(None) if key in r]
            for r in runs:
                per_seed.setdefault(r["seed"], {})[x] = r[key]
        seed_lines(ax, per_seed)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([ROW_SHORT.get(row, row) for row in rows], rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{split} Dice")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("mean Dice of the cases (black: mean over seeds)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return rows


def _case_plot(swings: dict, path: Path, title: str, reference: str = "supervised") -> None:
    """Every validation case's Dice change against the reference run of its seed, one column per row (see
    :func:`case_swings`), coloured by seed; the dashed lines mark ``SWING_THRESHOLD``, the table's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)  # horizontal jitter only
    fig, ax = plt.subplots(figsize=(3 + 1.6 * len(swings), 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for x, (row, sw) in enumerate(swings.items()):
        for seed, diffs in sorted(sw["diffs"].items()):
            xs = x + rng.uniform(-0.25, 0.25, len(diffs))
            label = f"seed {seed}" if x == 0 else None
            ax.scatter(xs, diffs, s=12, alpha=0.7, color=colors[seed % len(colors)], label=label)
        counts = f"{sw['up']} up, {sw['down']} down"
        ax.text(x, 1.02, counts, ha="center", fontsize=7, transform=ax.get_xaxis_transform())
    for level in (-SWING_THRESHOLD, SWING_THRESHOLD):
        ax.axhline(level, color="gray", linestyle="--", linewidth=0.8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(swings)))
    ax.set_xticklabels([ROW_SHORT.get(row, row) for row in swings], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"validation Dice change per case\n(row minus {ROW_SHORT.get(reference, reference)}, same seed)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no point hidden
    ax.set_title(title, fontsize=10, pad=18)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_quality(
    rows: str | Sequence[str] | None = None,
    seeds: str | Sequence[int] | None = None,
    budgets: str | Sequence[int] | None = None,
    output_dir: str = "output/quality",
    parallel: int = 2,
    threads: int | None = None,
    iterations: int | None = None,
    protocol: str | None = None,
    reference: str = "supervised",
    bound: str = "fully_supervised",
    **overrides: object,
) -> dict:
    """Run every (row, label budget, seed) of the LA bundle on phantoms and summarise them.

    Args:
        rows: overlays of ``bundles/la/configs/ablation``, or several joined by ``+`` (applied in that order);
            a row naming ``fully_supervised`` ignores the budgets. Default ``supervised,full``, or the protocol's.
        seeds: seeds of network initialisation and sampling; the phantoms stay the same. Default ``0,1,2``, or the
            protocol's.
        budgets: numbers of labeled training cases; default ``4``, or the protocol's.
        output_dir: where runs and the summary go.
        parallel: runs at a time.
        threads: CPU threads per run; default ``cpu_count // parallel``.
        iterations: training iterations per run; default the demo's, or the protocol's.
        protocol: None (the demo's phantoms and regime, test Dice only) or a name of ``PROTOCOLS``: its phantom
            set, each run also scored on the validation list after training, and the paired table of
            :func:`protocol_table` (``quality_<protocol>.md``) and figure of :func:`_paired_plot`.
        reference: the row every other row is paired with, seed by seed, in the protocol's table and case figure
            (e.g. ``supervised+no_intensity_augmentation`` to ask what the unlabeled terms add without augmentation).
        bound: the fully supervised row whose gap to the reference the table's "gap closed" column divides by
            (e.g. ``fully_supervised+no_intensity_augmentation`` beside a reference without augmentation).
        overrides: further ``--key value`` overrides for every run.
    """
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {tuple(PROTOCOLS)}, got {protocol!r}.")
    spec = PROTOCOLS.get(protocol or "", {})
    rows = rows if rows is not None else spec.get("rows", "supervised,full")
    seeds = seeds if seeds is not None else spec.get("seeds", "0,1,2")
    budgets = budgets if budgets is not None else spec.get("budgets", "4")
    iterations = iterations if iterations is not None else spec.get("iterations")
    rows_l, seeds_l, budgets_l = _as_list(rows), _as_list(seeds, int), _as_list(budgets, int)
    unknown = [r for r in [*rows_l, reference, bound] if not all(path.is_file() for path in overlays(r))]
    if unknown or not rows_l or not seeds_l or not budgets_l:
        raise ValueError(
            "rows, seeds and budgets must be non-empty, and rows, reference and bound names of overlays in "
            f"{BUNDLE / 'configs' / 'ablation'}, or of several joined by '+' (e.g. {', '.join(ROWS)}); "
            f"unknown: {unknown}"
        )
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}.")
    threads = threads or max(1, (os.cpu_count() or 2) // parallel)
    extra = dict(overrides)
    if iterations is not None:
        extra["iterations"] = iterations
    out = Path(output_dir).resolve()
    phantom_dir = out / "phantoms"
    demo = json.loads((BUNDLE / "configs" / "demo.json").read_text())
    from semiseg.data import write_phantom_dataset

    if protocol is None:
        # the phantoms the runs' demo.json writes (each run then finds them written): the demo's own regime
        write_phantom_dataset(
            phantom_dir, num_train=demo["phantom_train_cases"], num_test=demo["phantom_test_cases"],
            kind=demo["phantom_kind"], seed=demo["phantom_seed"], num_validation=demo["phantom_validation_cases"],
            test_seed=demo["phantom_test_seed"],
        )  # fmt: skip
        total_cases = demo["phantom_train_cases"]
    else:
        datalist = _write_protocol_dataset(spec, phantom_dir, budgets_l)
        total_cases = spec["num_train"]
        # the runs read this datalist (not the demo's phantoms); the validation list is scored once, after training
        # (_validate_one), so the trainer's own validation is moved past the end of the run
        extra = {"datalist": str(datalist), "dataset_dir": str(phantom_dir), **extra}
        length = int(extra.get("iterations") or demo["iterations"])
        extra.setdefault("val_interval", length + 1)
        extra.setdefault("patch_size", spec["patch_size"])
        for key, value in spec.get("overrides", {}).items():
            extra.setdefault(key, value)
        for key, value in bundle_schedule(length).items():
            extra.setdefault(key, value)
    jobs = []
    for row in rows_l:
        for budget in [None] if is_bound(row) else budgets_l:
            for seed in seeds_l:
                name = f"{row}_all_s{seed}" if budget is None else f"{row}_l{budget}_s{seed}"
                jobs.append((row, budget, seed, out / name))
    start = time.time()
    print(f"quality: {len(jobs)} runs, {parallel} at a time, {threads} threads each, under {out}", flush=True)

    def work(job: tuple) -> None:
        row, budget, seed, run_dir = job
        summary = _run_one(run_dir, row, budget, seed, phantom_dir, threads, extra, protocol)
        print(f"  done {run_dir.name}: Dice {_metric(summary, 'dice'):.3f} ({time.time() - start:.0f} s)", flush=True)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(work, jobs))
    results = collect_runs(out, extra, spec.get("num_test"))
    all_budgets = sorted({b for per_budget in results.values() for b in per_budget if b is not None})
    table = _table(results, all_budgets)
    if protocol is not None:
        table = protocol_table(results, all_budgets, reference, bound)
    # a table paired with another reference gets its own files, beside the default ones
    tag = f"quality_{protocol}" + ("" if reference == "supervised" else f"_vs_{reference}")
    (out / ("quality.md" if protocol is None else f"{tag}.md")).write_text(table + "\n")
    if protocol is None:
        _plot(results, all_budgets, out / "quality.png", total_cases=total_cases, kind=demo["phantom_kind"])
    for budget in all_budgets if protocol is not None else []:
        title = f"{protocol}: {spec['kind']} phantoms, {budget} of {total_cases} labeled, last checkpoint"
        _paired_plot(results, budget, out / f"quality_{protocol}_l{budget}.png", title)
        swings = case_swings(results, budget, reference)
        if swings:
            _case_plot(swings, out / f"{tag}_l{budget}_cases.png", title, reference)
    record = {
        "benchmark": "quality",
        "figures": [
            {"name": f"{row}_l{b if b is not None else 'all'}_dice", "value": float(np.mean([r["dice"] for r in runs])),
             "std": float(np.std([r["dice"] for r in runs])), "unit": "Dice", "seeds": [r["seed"] for r in runs]}
            for row, per_budget in results.items() for b, runs in per_budget.items()
        ],
        "config": {"rows": list(results), "budgets": all_budgets, "overrides": extra, "protocol": protocol,
                   "wall_s": round(time.time() - start, 1)},
    }  # fmt: skip
    (out / "quality.json").write_text(json.dumps(record, indent=2) + "\n")
    print(table)
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    import fire

    fire.Fire(run_quality)
