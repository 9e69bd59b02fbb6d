"""Which validation cases the collapsed runs of a protocol lose, against how bright each case's target is.

Under the label-limited protocol (2 labeled of 40) some runs of the semi-supervised rows end far below the others
on validation (0.47-0.57 where the same row reaches 0.65-0.70 with another seed). This diagnostic asks whether that
is spread over the cases or a switch on a few of them. For every finished run under ``output_dir`` that was scored
on the validation list, it splits the runs into *collapsed* (mean validation Dice below ``collapse_below``) and
*held*, and prints per validation case its mean Dice in each group and the difference (and, where the ``reference``
row's runs are there, their mean Dice as a column of its own, outside both groups), beside the case's
*target brightness*: the median of the z-scored image over the target label divided by the 99.5th percentile of
the z-scored image elsewhere (z-scored over the whole volume by MONAI's ``NormalizeIntensity``, as in the
bundle). About 1 means the target is as bright as the brightest structures around it; the labeled training cases
(the first ``budget`` of the datalist's ``training`` list) are listed with their brightness too, since a network
trained on 2 cases learns their intensity relation. Spearman's rank correlation between brightness and the held -
collapsed difference closes the table.

Validation cases only: the test list is read once per run, for the protocol table, and never for a diagnosis.

Usage (from the repository root)::

    python scripts/benchmark.py collapse --output_dir output/label_limited [--collapse_below 0.6] [--budget 2]
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import NormalizeIntensity
from scipy.stats import spearmanr

from quality import collect_runs

__all__ = [
    "target_brightness",
    "case_brightness",
    "case_name",
    "protocol_runs",
    "protocol_dataset",
    "split_runs",
    "run_collapse_cases",
]


def target_brightness(image: np.ndarray, label: np.ndarray) -> float:
    """Median z-score of the image over ``label > 0`` over the 99.5th percentile of the z-score elsewhere.

    Args:
        image: the volume, any shape.
        label: the label volume of the same shape; > 0 marks the target.

    Raises:
        ValueError: shapes differ, the label is empty or covers the image, the image is constant, or nothing outside
            the target is brighter than the image mean (the ratio would have no meaning).
    """
    if image.shape != label.shape:
        raise ValueError(f"image shape {image.shape} and label shape {label.shape} differ.")
    target = label > 0
    if not target.any() or target.all():
        raise ValueError("the label must mark some voxels as target and leave some outside it.")
    if float(image.std()) == 0:
        raise ValueError("the image is constant.")
    z = np.asarray(NormalizeIntensity()(image.astype(np.float64)))  # the bundle's z-score over the whole volume
    rest = float(np.percentile(z[~target], 99.5))
    if rest <= 0:
        raise ValueError("nothing outside the target is brighter than the image mean.")
    return float(np.median(z[target])) / rest


def split_runs(runs: list[dict], collapse_below: float, reference: str) -> dict[str, list[dict]]:
    """The records of ``collect_runs`` (with their ``row``) that carry per-case validation Dice, as ``{"held",
    "collapsed", "reference"}``: the ``reference`` row's runs, and the others by their mean validation Dice."""
    scored = [r for r in runs if r.get("val_cases")]
    others = [r for r in scored if r["row"] != reference]
    return {
        "held": [r for r in others if r["val_dice"] >= collapse_below],
        "collapsed": [r for r in others if r["val_dice"] < collapse_below],
        "reference": [r for r in scored if r["row"] == reference],
    }


def case_brightness(entry: dict, root: Path) -> float:
    """The :func:`target_brightness` of one datalist entry.

    Args:
        entry: a datalist item with ``image`` and ``label`` paths (relative to ``root``, or absolute).
        root: the dataset folder the datalist lives in.

    Raises:
        FileNotFoundError: naming the missing image or label file.
    """
    paths = {key: root / entry[key] for key in ("image", "label")}  # an absolute entry replaces root
    for key, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the {key} of {entry['image']} is missing.")
    return target_brightness(np.asarray(nib.load(paths["image"]).dataobj), np.asarray(nib.load(paths["label"]).dataobj))


def case_name(entry: dict) -> str:
    """The name the per-case tables key a datalist entry by: its image file name without extensions."""
    return Path(entry["image"]).name.split(".")[0]


def protocol_runs(output_dir: Path, budget: int) -> list[dict]:
    """The records of ``quality.collect_runs`` at ``budget``, each with its ``row``.

    Raises:
        ValueError: when the runs under ``output_dir`` do not share one set of overrides and one test split.
    """
    runs_json = [json.loads(p.read_text()) for p in output_dir.glob("*/run.json")]
    settings = {json.dumps([r["overrides"], r.get("test_cases")], sort_keys=True) for r in runs_json}
    if len(settings) != 1:
        raise ValueError(
            f"{output_dir}: the runs must share one set of overrides and test split; {len(settings)} found."
        )
    overrides, test_cases = json.loads(settings.pop())
    results = collect_runs(output_dir, overrides, test_cases)
    return [dict(r, row=row) for row, per_budget in results.items() for r in per_budget.get(budget, [])]


def protocol_dataset(output_dir: str, phantom_dir: str | None) -> tuple[Path, dict]:
    """The dataset folder of a protocol's runs (``phantom_dir``, else ``<output_dir>/phantoms``) and its datalist.

    Raises:
        FileNotFoundError: when the folder has no ``datalist.json``.
    """
    root = Path(phantom_dir) if phantom_dir is not None else Path(output_dir) / "phantoms"
    datalist = root / "datalist.json"
    if not datalist.is_file():
        raise FileNotFoundError(f"{datalist} is missing; pass phantom_dir, the dataset the runs were trained on.")
    return root, json.loads(datalist.read_text())


def _case_row(entry: dict, root: Path, groups: dict[str, list[dict]]) -> dict:
    name = case_name(entry)
    means = {group: float(np.mean([r["val_cases"][name] for r in runs])) for group, runs in groups.items() if runs}
    return {"case": name, "brightness": case_brightness(entry, root), **means,
            "difference": means["held"] - means["collapsed"]}  # fmt: skip


def _print_table(result: dict, collapse_below: float) -> None:
    collapsed, held, labeled = result["collapsed"], result["held"], result["labeled"]
    print(f"{len(collapsed)} collapsed runs (validation Dice < {collapse_below}): " + ", ".join(collapsed))
    print(f"{len(held)} held runs: " + ", ".join(held))
    print("labeled training cases, target brightness: " + ", ".join(f"{k} {v:.2f}" for k, v in labeled.items()))
    n_reference = len(result["reference_runs"])
    reference = [f"Dice, {result['reference']} ({n_reference} runs)"] if n_reference else []
    columns = ["validation case", "target brightness", "Dice, held runs", "Dice, collapsed runs", "held - collapsed"]
    print("| " + " | ".join(columns + reference) + " |")
    print("|" + "---|" * (len(columns) + len(reference)))
    for c in result["cases"]:
        values = f"{c['brightness']:.2f} | {c['held']:.3f} | {c['collapsed']:.3f} | {c['difference']:+.3f}"
        print(f"| {c['case']} | {values} |" + (f" {c['reference']:.3f} |" if reference else ""))
    print(f"Spearman rank correlation of brightness and held - collapsed: {result['spearman']:+.2f} "
          f"over {len(result['cases'])} cases")  # fmt: skip


def run_collapse_cases(
    output_dir: str,
    collapse_below: float = 0.6,
    budget: int = 2,
    reference: str = "supervised",
    phantom_dir: str | None = None,
) -> dict:
    """Print and return the per-case table of the collapsed and held runs under ``output_dir`` at ``budget``.

    Args:
        output_dir: a ``quality`` output folder (its runs' ``validation/metrics.csv`` are read).
        collapse_below: a run whose mean validation Dice is below this counts as collapsed.
        budget: the label budget of the runs to read (the bound's runs, budget None, are left out).
        reference: the row shown as a column of its own (supervised-only), in neither group.
        phantom_dir: the dataset of the runs; ``<output_dir>/phantoms`` by default.

    Returns:
        ``{"collapsed": [run names], "held": [...], "reference": row, "reference_runs": [...], "cases": [{"case",
        "brightness", "held", "collapsed", "difference", "reference"}, ...], "labeled": {case: brightness},
        "spearman": rho}``, cases by brightness, brightest first (``"reference"`` only where its runs exist).
    """
    if not 0 < collapse_below < 1:
        raise ValueError(f"collapse_below must be in (0, 1), got {collapse_below}.")
    root, lists = protocol_dataset(output_dir, phantom_dir)
    runs = protocol_runs(Path(output_dir), budget)
    groups = split_runs(runs, collapse_below, reference)
    if not groups["collapsed"] or not groups["held"]:
        raise ValueError(
            f"{output_dir}: {len(groups['collapsed'])} collapsed and {len(groups['held'])} held runs at budget "
            f"{budget} with validation cases; both groups are needed (change collapse_below)."
        )
    cases = sorted((_case_row(e, root, groups) for e in lists["validation"]), key=lambda c: -c["brightness"])
    rho = float(spearmanr([c["brightness"] for c in cases], [c["difference"] for c in cases]).statistic)
    result = {
        **{group: [f"{r['row']} s{r['seed']}" for r in groups[group]] for group in ("collapsed", "held")},
        "reference": reference,
        "reference_runs": [f"{r['row']} s{r['seed']}" for r in groups["reference"]],
        "cases": cases,
        "labeled": {case_name(e): case_brightness(e, root) for e in lists["training"][:budget]},
        "spearman": rho,
    }
    _print_table(result, collapse_below)
    return result


if __name__ == "__main__":
    import fire

    fire.Fire(run_collapse_cases)
