"""``python -m semiseg.auto3dseg``: a new dataset to trained semi-supervised bundles in one command.

    python -m semiseg.auto3dseg --datalist my.json --dataroot /data --modality mri --work_dir work \\
        [--num_fold 5] [--folds 0] [--train false] [--num_labeled 4] [--iterations 300] [--key value ...]

1. converts the datalist (unlabeled cases under ``"unlabeled"``, folds, ``"testing"``) into ``work/datalist.json``;
2. runs MONAI's ``DataAnalyzer`` on the labeled cases (``work/datastats.yaml``) and on the unlabeled images
   (``work/datastats_unlabeled.yaml``);
3. writes one complete bundle per fold, ``work/dualnet_<fold>/`` (its ``docs/README.md`` names the statistic behind
   every derived value), with ``algo_object.json`` so that Auto3DSeg's ensemble can use it;
4. unless ``--train false``, trains the bundles of ``--folds`` (default all) and prints each final validation Dice.

Further ``--key value`` go to the template (``--num_labeled``, ``--iterations``, ``--patch_size``, ``--spacing``,
``--n_filters``, ``--memory_gb``, ``--learning_rate``, ... any top-level key of the bundle's ``train.json``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import fire
import torch
from monai.apps.auto3dseg import DataAnalyzer
from monai.auto3dseg import algo_to_json
from monai.bundle import ConfigParser
from monai.utils.enums import AlgoKeys

from semiseg.bundle import flag

from .algo import ALGO_NAME, DualnetAlgo
from .datalist import convert_datalist, read_datalist

__all__ = ["main"]


def main(
    datalist: str,
    dataroot: str | None = None,
    modality: str = "mri",
    work_dir: str = "work",
    num_fold: int = 5,
    folds: int | list[int] | tuple[int, ...] | None = None,
    train: bool | str = True,
    analyze: bool | str = True,
    seed: int = 0,
    **template: Any,
) -> None:
    """Generate (and train) the semi-supervised bundles of a dataset.

    Args:
        datalist: MSD-style datalist JSON; training entries without a label, and an ``"unlabeled"`` list, are the
            unlabeled cases; a ``"validation"`` list or ``"fold"`` keys choose the folds.
        dataroot: folder the datalist's paths start from; default the datalist's folder.
        modality: ``ct`` or ``mri``.
        work_dir: output folder.
        num_fold: folds to assign when the datalist has none (1 fold with a ``"validation"`` list).
        folds: folds to train; default all.
        train: ``false`` stops after generating the bundles.
        analyze: ``false`` reuses ``work_dir/datastats.yaml``.
        seed: seed of the fold assignment.
        template: template arguments, see above.

    """
    if str(modality).lower() not in ("ct", "mri", "mr"):
        raise ValueError(f"--modality must be ct or mri, got {modality!r}")
    work = Path(work_dir).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    dataroot = str(Path(dataroot if dataroot is not None else Path(datalist).expanduser().parent).resolve())
    original = read_datalist(datalist)
    converted = convert_datalist(original, work / "datalist.json", num_fold=num_fold, seed=seed)
    fold_ids = sorted({int(e["fold"]) for e in converted["training"]})
    if original.get("validation") and not all("fold" in e for e in original["training"] if e.get("label")):
        fold_ids = [0]  # the validation list is fold 0; fold 1 (the training cases) is not validated on
    print(f"datalist: {len(converted['training'])} labeled, {len(converted['unlabeled'])} unlabeled, "
          f"{len(converted.get('testing', []))} test cases; folds {fold_ids} -> {work / 'datalist.json'}")  # fmt: skip
    source = work / "input.yaml"
    ConfigParser.export_config_file({"modality": str(modality).lower(), "datalist": str(work / "datalist.json"),
                                     "dataroot": dataroot}, str(source), fmt="yaml")  # fmt: skip
    stats = work / "datastats.yaml"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if flag(analyze) or not stats.is_file():
        print("data analysis of the labeled cases (MONAI DataAnalyzer) ...", flush=True)
        (work / "datastats_unlabeled.yaml").unlink(missing_ok=True)
        DataAnalyzer(str(work / "datalist.json"), dataroot, output_path=str(stats), device=device,
                     worker=0).get_all_case_stats()  # fmt: skip
    algos = []
    for fold in fold_ids:
        algo = DualnetAlgo(**template)
        algo.name = ALGO_NAME
        algo.set_data_stats(str(stats))
        algo.set_data_source(str(source))
        algo.export_to_disk(str(work), f"{ALGO_NAME}_{fold}", fold=fold)
        algo_to_json(algo, template_path=algo.template_path)
        derived = algo.fill_records["derived"]
        print(f"{ALGO_NAME}_{fold}: spacing {derived['spacing']['value']}, patch {derived['patch_size']['value']}, "
              f"{derived['num_classes']['value']} classes, {derived['iterations']['value']} iterations, batch "
              f"{derived['labeled_batch_size']['value']} + {derived['unlabeled_batch_size']['value']} -> "
              f"{algo.output_path}", flush=True)  # fmt: skip
        algos.append((fold, algo))
    if not flag(train):
        return
    wanted = None if folds is None else {int(f) for f in (folds if isinstance(folds, (list, tuple)) else [folds])}
    for fold, algo in algos:
        if wanted is not None and fold not in wanted:
            continue
        print(f"training {algo.name}_{fold} ...", flush=True)
        algo.train({}, {"CMD_PREFIX": sys.executable + " "})
        score = algo.get_score()
        algo_to_json(algo, template_path=algo.template_path, **{str(AlgoKeys.SCORE): score})  # what the ensemble reads
        print(f"{os.path.basename(algo.output_path)}: final validation Dice {score:.4f}", flush=True)


if __name__ == "__main__":
    fire.Fire(main)
