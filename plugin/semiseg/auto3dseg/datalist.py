"""Datalists for Auto3DSeg: unlabeled cases under their own key, folds assigned without scikit-learn.

Auto3DSeg's ``DataAnalyzer`` reads every ``"training"`` entry's label and fails on one without; AutoRunner assigns
folds with scikit-learn when the datalist has neither ``"fold"`` nor ``"validation"``, and its ensemble predicts the
``"testing"`` list. This project's datalists mark an unlabeled training case by a missing ``"label"`` and call the
held-out list ``"test"``. :func:`convert_datalist` turns the one into the other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from semiseg.data.datalist import read_json_file

__all__ = ["assign_folds", "convert_datalist", "fold_datalist", "read_datalist"]


def read_datalist(datalist: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """The datalist as a dict (a copy), from a JSON file or a dict.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it is not a JSON object with a ``"training"`` list of entries with an ``"image"``.
    """
    if isinstance(datalist, Mapping):
        content, name = json.loads(json.dumps(dict(datalist))), "the datalist"
    else:
        path = Path(datalist).expanduser()
        content, name = read_json_file(path), str(path)
    if not isinstance(content, dict) or not isinstance(content.get("training"), list):
        raise ValueError(f"{name} must be a JSON object with a 'training' list")
    for key in ("training", "validation", "unlabeled", "test", "testing"):
        for index, entry in enumerate(content.get(key) or []):
            if not (isinstance(entry, str) or (isinstance(entry, dict) and "image" in entry)):
                raise ValueError(f"{name}: '{key}' entry {index} has no 'image': {entry!r}")
    return content


def assign_folds(num_cases: int, num_fold: int, seed: int = 0) -> list[int]:
    """Fold of each case: a seeded permutation dealt round-robin, so fold sizes differ by at most one.

    Raises:
        ValueError: when ``num_fold`` is not between 2 and ``num_cases``.
    """
    if not 2 <= int(num_fold) <= num_cases:
        raise ValueError(f"num_fold must be between 2 and the {num_cases} labeled cases, got {num_fold}")
    folds = [0] * num_cases
    for rank, index in enumerate(np.random.default_rng(seed).permutation(num_cases)):
        folds[int(index)] = rank % int(num_fold)
    return folds


def convert_datalist(
    datalist: str | os.PathLike | Mapping[str, Any],
    output: str | os.PathLike | None = None,
    num_fold: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """An Auto3DSeg datalist from this project's (or an Auto3DSeg) datalist.

    - ``"training"`` keeps the entries with a label; those without move to ``"unlabeled"`` (after the entries
      already there; plain paths become ``{"image": path}``);
    - folds: kept when every labeled entry has one; else a ``"validation"`` list becomes fold 0 (its entries join
      ``"training"``) and the training entries fold 1, as AutoRunner does; else :func:`assign_folds`;
    - ``"testing"`` (what the ensemble predicts) gets the ``"test"`` images when it is absent.

    Paths are left as they are (relative to the data root). With ``output`` the result is also written there.

    Raises:
        ValueError: when no training entry has a label, or folds cannot be assigned.
    """
    content = read_datalist(datalist)
    name = "the datalist" if isinstance(datalist, Mapping) else f"datalist {os.fspath(datalist)}"
    training = [dict(e) for e in content["training"] if isinstance(e, dict)]
    labeled = [e for e in training if e.get("label")]
    if not labeled:
        raise ValueError(f"none of the 'training' entries of {name} has a 'label'")
    unlabeled = [{"image": e} if isinstance(e, str) else dict(e) for e in content.get("unlabeled") or []]
    unlabeled += [{k: v for k, v in e.items() if k not in ("label", "fold")} for e in training if not e.get("label")]
    validation = [dict(e) for e in content.get("validation") or [] if isinstance(e, dict) and e.get("label")]
    if all("fold" in e for e in labeled):
        for entry in labeled:
            entry["fold"] = int(entry["fold"])
    elif validation:
        for entry in labeled:
            entry["fold"] = 1
        for entry in validation:
            entry["fold"] = 0
        labeled += validation
    else:
        try:
            folds = assign_folds(len(labeled), num_fold, seed)
        except ValueError as error:
            raise ValueError(f"{name}: {error} (or give a 'validation' list)") from error
        for entry, fold in zip(labeled, folds):
            entry["fold"] = fold
    result: dict[str, Any] = {k: v for k, v in content.items() if k not in ("training", "unlabeled", "validation")}
    result["training"] = labeled
    result["unlabeled"] = unlabeled
    if "testing" not in result and content.get("test"):
        result["testing"] = [{"image": e if isinstance(e, str) else e["image"]} for e in content["test"]]
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(result, indent=4) + "\n")
    return result


def fold_datalist(datalist: Mapping[str, Any], dataroot: str | os.PathLike, fold: int) -> dict[str, list[dict]]:
    """The bundle datalist of one fold, with absolute paths: ``"training"`` (labeled, other folds), ``"validation"``
    (this fold), ``"unlabeled"`` and ``"test"`` (the ``"testing"`` images, with labels where ``"test"`` has them).

    Raises:
        ValueError: when the fold has no validation or no training case.
    """
    root = Path(dataroot).expanduser().resolve()

    def absolute(entry: Mapping[str, Any]) -> dict[str, Any]:
        return {k: (str(root / v) if k in ("image", "label") and isinstance(v, str) else v)
                for k, v in entry.items() if k != "fold"}  # fmt: skip

    training = [absolute(e) for e in datalist["training"] if int(e.get("fold", -1)) != fold]
    validation = [absolute(e) for e in datalist["training"] if int(e.get("fold", -1)) == fold]
    if not training or not validation:
        raise ValueError(
            f"fold {fold} has {len(training)} training and {len(validation)} validation cases: each fold needs both"
        )
    test = [e for e in datalist.get("test") or [] if isinstance(e, dict)] or list(datalist.get("testing") or [])
    return {
        "training": training,
        "validation": validation,
        "unlabeled": [absolute({"image": e} if isinstance(e, str) else e) for e in datalist.get("unlabeled") or []],
        "test": [absolute({"image": e} if isinstance(e, str) else e) for e in test],
    }
