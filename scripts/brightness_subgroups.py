"""What one row of a protocol adds over another on the cases the labeled ones do not cover, and on the rest.

Under the label-limited protocol the 2 labeled training cases have dim atria (target brightness 0.27 and 0.59, as
:func:`collapse_cases.target_brightness` measures it), and a few cases of the family have an atrium as bright as
the brightest structures around it (brightness >= 0.9, about 8.5 % of ``la_varied`` phantoms; session 31). A
network taught by the 2 labeled cases alone has not seen those; the unlabeled volumes have. A mean over all cases
can hide a row that helps there and costs a little elsewhere, so this splits the cases of one list at
``threshold`` of target brightness, a property of the image and its label fixed before any run is read, and pairs
``row`` with ``reference`` seed by seed within each subgroup: per seed the mean Dice of each row over the subgroup's
cases, the mean difference, its standard error (sample std / sqrt(n)) and the wins.

Choices are made on the validation list only. ``split="test"`` reads the test Dice the protocol already recorded
(one scoring per run, at its last iteration), for a report of the subgroups, not for choosing anything.

Besides the table, ``<output_dir>/subgroups_<row>_vs_<reference>_<split>.png`` draws each subgroup's per-seed
means, one line per seed from the reference to the row (``--plot false`` leaves it out).

Usage (from the repository root)::

    python scripts/benchmark.py subgroups --output_dir output/label_limited_96 --row full \\
        --reference no_unlabeled_volumes [--split test] [--threshold 0.9] [--phantom_dir DIR]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from collapse_cases import case_brightness, case_name, protocol_dataset, protocol_runs
from quality import paired_difference, seed_lines
from semiseg.arguments import check_number, flag

__all__ = ["SPLITS", "split_by_brightness", "paired_subgroup", "run_brightness_subgroups"]

#: list of the datalist -> the key of a ``collect_runs`` record holding that list's per-case Dice
SPLITS = {"validation": "val_cases", "test": "test_case_dice"}


def split_by_brightness(brightness: dict[str, float], threshold: float) -> dict[str, list[str]]:
    """``{"bright": [...], "rest": [...]}``: the cases at or above ``threshold`` of target brightness and the others,
    each in the order of ``brightness``."""
    return {
        "bright": [case for case, value in brightness.items() if value >= threshold],
        "rest": [case for case, value in brightness.items() if value < threshold],
    }


def paired_subgroup(row_runs: list[dict], reference_runs: list[dict], cases: list[str], key: str) -> dict:
    """Mean Dice over ``cases`` per seed for two rows, and their paired difference.

    Args:
        row_runs: ``collect_runs`` records of the row (``{"seed", key: {case: Dice}}``).
        reference_runs: records of the reference row.
        cases: the subgroup's case names.
        key: the record key of the per-case Dice (a value of ``SPLITS``).

    Returns:
        ``{"seeds", "row", "reference", "difference", "mean", "se", "wins"}``: the seeds both rows hold with every
        case of the subgroup scored, the per-seed means (lists in seed order), the mean difference, its standard
        error (NaN under 2 seeds) and how many seeds the row is above.

    Raises:
        ValueError: the subgroup is empty, or no seed of the row has a paired reference run scored on its cases.
    """
    if not cases:
        raise ValueError("the subgroup has no case; change the threshold.")
    ref = {r["seed"]: r.get(key, {}) for r in reference_runs}
    seeds, means, ref_means = [], [], []
    for run in row_runs:
        scored, paired = run.get(key, {}), ref.get(run["seed"], {})
        if all(case in scored and case in paired for case in cases):
            seeds.append(run["seed"])
            means.append(float(np.mean([scored[case] for case in cases])))
            ref_means.append(float(np.mean([paired[case] for case in cases])))
    if not seeds:
        raise ValueError(f"no seed has both rows scored on the subgroup's {len(cases)} cases ({key}).")
    d = np.array(means) - np.array(ref_means)
    mean, se, wins = paired_difference(d)
    return {"seeds": seeds, "row": means, "reference": ref_means, "difference": d.tolist(), "mean": mean, "se": se,
            "wins": wins}  # fmt: skip


def _print_table(result: dict) -> None:
    print(f"{result['split']} cases split at target brightness {result['threshold']}; labeled training cases: "
          + ", ".join(f"{k} {v:.2f}" for k, v in result["labeled"].items()))  # fmt: skip
    row, reference = result["row"], result["reference"]
    print(f"| subgroup | cases | {row} per seed | {reference} per seed | paired diff +- s.e. | wins |")
    print("|---|---|---|---|---|---|")
    for name, group in result["subgroups"].items():
        row_means = " ".join(f"s{s}:{x:.3f}" for s, x in zip(group["seeds"], group["row"]))
        ref_means = " ".join(f"s{s}:{x:.3f}" for s, x in zip(group["seeds"], group["reference"]))
        print(f"| {name} | {len(result['cases'][name])} | {row_means} | {ref_means} | "
              f"{group['mean']:+.3f} +- {group['se']:.3f} "
              f"| {group['wins']}/{len(group['seeds'])} |")  # fmt: skip


def _plot(result: dict, path: Path) -> None:
    """One panel per subgroup: each seed's mean Dice under the reference and the row, joined by a line (a rising
    line is a win of the row), the black bars the means over seeds; the title gives the paired difference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = result["subgroups"]
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups) + 1, 4), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (name, group) in zip(axes, groups.items()):
        pairs = zip(group["seeds"], group["reference"], group["row"])
        seed_lines(ax, {seed: {0: ref, 1: row} for seed, ref, row in pairs})
        ax.set_xticks([0, 1])
        ax.set_xticklabels([result["reference"], result["row"]], rotation=15, ha="right", fontsize=8)
        ax.set_xlim(-0.5, 1.5)
        ax.set_title(f"{name}: {len(result['cases'][name])} cases\n{group['mean']:+.3f} +- {group['se']:.3f} "
                     f"({group['wins']}/{len(group['seeds'])} up)", fontsize=9)  # fmt: skip
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"mean {result['split']} Dice of the subgroup's cases")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{result['split']} cases split at target brightness {result['threshold']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_brightness_subgroups(
    output_dir: str,
    row: str = "full",
    reference: str = "no_unlabeled_volumes",
    split: str = "validation",
    threshold: float = 0.9,
    budget: int = 2,
    phantom_dir: str | None = None,
    plot: bool | str = True,
) -> dict:
    """Print and return the paired difference of ``row`` and ``reference`` on the bright cases and on the rest.

    Args:
        output_dir: a ``quality`` output folder of one protocol (its runs' per-case ``metrics.csv`` are read).
        row: the row whose gain is asked about (the defaults: ``full``).
        reference: the row it is paired with, seed by seed (the labeled-only control: ``no_unlabeled_volumes``).
        split: ``"validation"`` (where choices are made) or ``"test"`` (a report only).
        threshold: the target brightness at and above which a case counts as bright.
        budget: the label budget of the runs.
        phantom_dir: the dataset of the runs; ``<output_dir>/phantoms`` by default.
        plot: also write ``<output_dir>/subgroups_<row>_vs_<reference>_<split>.png`` (:func:`_plot`).

    Returns:
        ``{"split", "threshold", "row", "reference", "labeled": {case: brightness}, "brightness": {case: value},
        "cases": {"bright": [...], "rest": [...]}, "subgroups": {"bright": paired, "rest": paired}}`` with the
        results of :func:`paired_subgroup`.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}.")
    check_number(threshold, "threshold", 0.0, low_open=True)
    plot = flag(plot, "plot")
    root, lists = protocol_dataset(output_dir, phantom_dir)
    if not lists.get(split):
        raise ValueError(f"{root / 'datalist.json'} has no {split!r} list.")
    runs = protocol_runs(Path(output_dir), budget)
    by_row = {name: [r for r in runs if r["row"] == name] for name in (row, reference)}
    missing = [name for name, found in by_row.items() if not found]
    if missing:
        raise ValueError(f"{output_dir}: no run of {missing} at budget {budget}.")
    brightness = {case_name(entry): case_brightness(entry, root) for entry in lists[split]}
    cases = split_by_brightness(brightness, threshold)
    result = {
        "split": split,
        "threshold": threshold,
        "row": row,
        "reference": reference,
        "labeled": {case_name(e): case_brightness(e, root) for e in lists["training"][:budget]},
        "brightness": brightness,
        "cases": cases,
        "subgroups": {name: paired_subgroup(by_row[row], by_row[reference], names, SPLITS[split])
                      for name, names in cases.items()},  # fmt: skip
    }
    _print_table(result)
    if plot:
        path = Path(output_dir) / f"subgroups_{row}_vs_{reference}_{split}.png"
        _plot(result, path)
        print(f"figure:    {path}")
    return result


if __name__ == "__main__":
    import fire

    fire.Fire(run_brightness_subgroups)
