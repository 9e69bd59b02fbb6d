"""Fill the ``dualnet`` template: derive every data-dependent value and write a complete bundle of this project.

The template's ``configs/`` are the source of this project's bundle configs (the dataset bundles are the template
filled with fixed values, :mod:`semiseg.auto3dseg.datasets`). :func:`write_bundle` rewrites them in the generated bundle folder with the derived
values: top-level keys (``num_classes``, ``patch_size``, ``iterations``, ...), the input channels of both branches,
a ``Spacingd`` after each ``Orientationd`` when the data need resampling, and the derived intensity transform in
place of each ``NormalizeIntensityd``. ``docs/README.md`` of the bundle lists each value with its statistic.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from . import derive
from .derive import Derived
from .memory import LOSS_OVERHEAD, activation_bytes_per_voxel, memory_budget, static_bytes

__all__ = ["DERIVATION_KEYS", "derive_values", "fill_config", "write_bundle"]

DERIVATION_KEYS = ("spacing", "patch_size", "iterations", "memory_gb", "device", "labeled_batch_size",
                   "unlabeled_batch_size", "n_filters", "feature_dim", "norm", "num_labeled")  # fmt: skip
"""Template arguments that change what is derived (the other accepted ones are top-level keys of ``train.json``)."""

_TOP_LEVEL = ("num_classes", "class_names", "largest_component_labels", "num_labeled", "spacing", "patch_size",
              "sw_stride", "sw_batch_size", "iterations", "rampup_iterations", "lr_step", "val_interval", "save_interval",
              "labeled_batch_size", "unlabeled_batch_size", "n_filters", "norm", "feature_dim", "num_workers")  # fmt: skip


def derive_values(
    stats: Mapping[str, Any],
    modality: str,
    labeled_cases: int,
    unlabeled_cases: int,
    labels: Mapping[str, str] | None = None,
    **given: Any,
) -> tuple[dict[str, Derived], bool]:
    """Every derived value of a generated bundle, and whether it resamples.

    Args:
        stats: the ``datastats.yaml`` content of the labeled training cases.
        modality: ``"ct"`` or ``"mri"``.
        labeled_cases: labeled training cases of the fold (``num_labeled`` in ``given`` may keep fewer).
        unlabeled_cases: unlabeled training cases.
        labels: the datalist's ``"labels"`` (``{"1": "liver", ...}``), for class names.
        given: template arguments (:data:`DERIVATION_KEYS`, and any top-level key of ``train.json``); a given value
            replaces the derived one and is marked ``given``.
    """
    given = {k: v for k, v in given.items() if v is not None}
    values: dict[str, Derived] = {}
    channels = derive.input_channels(stats)
    values["in_channels"] = channels
    values["num_classes"] = derive.class_count(stats)
    num_classes = values["num_classes"].value
    names = [str((labels or {}).get(str(i), f"class_{i}")).replace(" ", "_") for i in range(1, num_classes)]
    values["class_names"] = Derived(names, "datalist 'labels'" if labels else "label values", "one name per class")
    component_source = "given" if "largest_component_labels" in given else "default"
    values["largest_component_labels"] = Derived(
        list(given.pop("largest_component_labels", [])), component_source,
        "classes whose prediction keeps only its largest connected component (none by default: a new dataset's "
        "structures may be several components; the LA bundle keeps it for its one atrium)",
    )
    spacing, resample = derive.target_spacing(stats, given.pop("spacing", None))
    values["spacing"] = spacing
    values["intensity"] = derive.intensity_transforms(stats, modality, channels.value)

    for key, default, rule in (("n_filters", 16, "base width of both branches (16 in the benchmarks)"),
                               ("feature_dim", 32, "projection head width (32 in the benchmarks)")):  # fmt: skip
        source = "given" if key in given else "default"
        values[key] = Derived(int(given.pop(key, default)), source, rule)
    n_filters, feature_dim = values["n_filters"].value, values["feature_dim"].value
    budget, budget_source = memory_budget(given.pop("memory_gb", None), given.pop("device", None))
    per_voxel = activation_bytes_per_voxel(channels.value, num_classes, n_filters, feature_dim) * LOSS_OVERHEAD
    available = max(budget - static_bytes(channels.value, num_classes, n_filters, feature_dim), 0.0)
    max_voxels = int(available // (2 * per_voxel))  # one labeled and one unlabeled patch at least
    values["patch_size"] = derive.patch_size(stats, spacing.value, max_voxels, given.pop("patch_size", None))
    patch = values["patch_size"].value

    kept = int(given.pop("num_labeled", labeled_cases))
    if not 1 <= kept <= labeled_cases:
        raise ValueError(f"num_labeled must be between 1 and the fold's {labeled_cases} labeled cases, got {kept}")
    unlabeled = unlabeled_cases + labeled_cases - kept
    values["num_labeled"] = Derived(
        kept, "given" if kept != labeled_cases else f"{labeled_cases} labeled training cases of the fold",
        "labeled cases that keep their label (the rest of the fold's training cases become unlabeled)",
    )
    labeled_batch, unlabeled_batch = derive.batch_sizes(
        per_voxel * math.prod(patch), available, kept, unlabeled, budget_source
    )
    for key, value in (("labeled_batch_size", labeled_batch), ("unlabeled_batch_size", unlabeled_batch)):
        values[key] = Derived(int(given.pop(key)), "given", "given by the user") if key in given else value
    for key, value in derive.run_length(
        kept, unlabeled, values["labeled_batch_size"].value, values["unlabeled_batch_size"].value,
        given.pop("iterations", None),
    ).items():  # fmt: skip
        values[key] = value
    per_forward = values["labeled_batch_size"].value + (values["unlabeled_batch_size"].value if unlabeled else 0)
    norm = given.pop("norm", None)
    values["norm"] = Derived(norm, "given", "given by the user") if norm else Derived(
        "batch" if per_forward >= 4 else "instance", f"{per_forward} patches per forward",
        "batch norm from 4 patches per forward (the benchmarks' 2 + 2), instance norm below",
    )
    values["sw_stride"] = Derived([p // 2 for p in patch], f"patch_size = {patch}", "half the patch (overlap 0.5)")
    values["sw_batch_size"] = Derived(4, "fixed", "4 windows per call, on a GPU and on the CPU (there 3.8x faster "
                                      "than 1 window per call at the LA demo's size)")  # fmt: skip
    values["num_workers"] = Derived(min(4, os.cpu_count() or 1), f"{os.cpu_count()} CPUs", "at most 4 workers")
    for key, value in given.items():
        values[key] = Derived(value, "given", "given by the user")
    return values, resample


def write_bundle(
    algo_path: str | os.PathLike,
    values: Mapping[str, Derived],
    resample: bool,
    datalist: Mapping[str, list],
    dataroot: str | os.PathLike,
    modality: str,
    fold: int,
    name: str,
) -> None:
    """Rewrite the configs copied into ``algo_path`` with ``values``; write its datalist, metadata and README.

    Raises:
        ValueError: when a given key is not a top-level key of the template's ``train.json``.
    """
    root = Path(algo_path)
    configs = root / "configs"
    train = json.loads((configs / "train.json").read_text())
    unknown = sorted(k for k in values if k not in train and k not in _TOP_LEVEL and k not in ("in_channels",
                                                                                               "intensity"))
    if unknown:
        raise ValueError(f"unknown template arguments {unknown}: give derivation arguments {list(DERIVATION_KEYS)} "
                         "or top-level keys of the bundle's train.json")  # fmt: skip
    top = {k: v.value for k, v in values.items() if k not in ("in_channels", "intensity")}
    top.update(bundle_name=name, dataset_dir=str(Path(dataroot).expanduser().resolve()),
               datalist="$@bundle_root + '/datalist.json'")  # fmt: skip
    for file in ("train.json", "inference.json"):
        config = fill_config(json.loads((configs / file).read_text()), top, file != "train.json",
                             values["in_channels"].value, values["intensity"].value, resample)  # fmt: skip
        (configs / file).write_text(json.dumps(config, indent=4) + "\n")
    (configs / "demo.json").unlink(missing_ok=True)  # its phantoms are of a kind named by the bundle: none here
    (root / "datalist.json").write_text(json.dumps(datalist, indent=4) + "\n")
    metadata = _metadata(json.loads((configs / "metadata.json").read_text()), values, modality, name)
    (configs / "metadata.json").write_text(json.dumps(metadata, indent=4) + "\n")
    hyper = {
        "bundle_root": str(root.resolve()),
        "ckpt_path": "$@bundle_root + '/models'",
        "fold": fold,
        "derived": {k: v.as_dict() for k, v in values.items()},
    }
    (configs / "hyper_parameters.yaml").write_text(yaml.safe_dump(hyper, sort_keys=False))
    (root / "docs").mkdir(exist_ok=True)
    (root / "docs" / "README.md").write_text(_readme(values, resample, datalist, modality, fold, name))


def fill_config(
    config: dict,
    top: Mapping[str, Any],
    keep_only_existing: bool,
    in_channels: int | None = None,
    intensity: Sequence[Mapping[str, Any]] | None = None,
    resample: bool = False,
) -> dict:
    """One config of the template filled: top-level keys set (with ``keep_only_existing`` only those it has, and
    ``spacing``), both branches' ``in_channels``, ``intensity`` transforms in place of ``NormalizeIntensityd`` and a
    ``Spacingd`` after each ``Orientationd`` when ``resample`` (None / False leave the transforms as they are)."""
    config = _set_top_level(config, top, keep_only_existing)
    if in_channels is not None and "network_def" in config:
        for branch in ("branch_a", "branch_b"):
            config["network_def"][branch]["in_channels"] = in_channels
    if intensity is not None or resample:
        config = _edit_transforms(config, intensity, resample)
    return config


def _set_top_level(config: dict, top: Mapping[str, Any], keep_only_existing: bool) -> dict:
    result: dict[str, Any] = {}
    for key, value in config.items():
        result[key] = top.get(key, value)
        if key == "dataset_dir" and "spacing" in top and "spacing" not in config:
            result["spacing"] = top["spacing"]  # next to the data it describes
    for key, value in top.items():
        if key not in result and not (keep_only_existing and key != "spacing"):
            result[key] = value
    return result


def _edit_transforms(node: Any, intensity: Sequence[Mapping[str, Any]] | None, resample: bool) -> Any:
    """Replace ``NormalizeIntensityd`` by the derived intensity transforms; add ``Spacingd`` after ``Orientationd``."""
    if isinstance(node, dict):
        return {k: _edit_transforms(v, intensity, resample) for k, v in node.items()}
    if not isinstance(node, list):
        return node
    result: list[Any] = []
    for item in node:
        target = item.get("_target_") if isinstance(item, dict) else None
        if target == "NormalizeIntensityd" and intensity is not None:
            common = {k: v for k, v in item.items() if k in ("keys", "allow_missing_keys")}
            result += [{**{"_target_": t["_target_"]}, **common, **{k: v for k, v in t.items() if k != "_target_"}}
                       for t in intensity]  # fmt: skip
            continue
        result.append(_edit_transforms(item, intensity, resample))
        if target == "Orientationd" and resample:
            keys = item["keys"] if isinstance(item["keys"], list) else [item["keys"]]
            spacing = {"_target_": "Spacingd", "keys": keys, "pixdim": "@spacing",
                       "mode": ["bilinear" if k == "image" else "nearest" for k in keys]}  # fmt: skip
            if "allow_missing_keys" in item:
                spacing["allow_missing_keys"] = item["allow_missing_keys"]
            result.append(spacing)
    return result


def _metadata(metadata: dict, values: Mapping[str, Derived], modality: str, name: str) -> dict:
    num_classes, patch = values["num_classes"].value, values["patch_size"].value
    channel_def = {"0": "background", **{str(i + 1): n for i, n in enumerate(values["class_names"].value)}}
    ct = modality.lower() == "ct"
    metadata.update(
        version="0.1.0",
        changelog={"0.1.0": f"generated by the monai-semiseg Auto3DSeg template ({name})"},
        name=f"Semi-supervised segmentation generated by Auto3DSeg ({name}, dual network)",
        task=f"Semi-supervised 3D {'CT' if ct else 'MRI'} segmentation of {', '.join(values['class_names'].value)}",
        data_source="the datalist this bundle was generated from (see docs/README.md)",
        image_classes=f"{values['in_channels'].value} channel {'CT' if ct else 'MRI'}; {values['intensity'].rule}",
        label_classes=", ".join(f"{k}: {v}" for k, v in channel_def.items()),
        pred_classes=", ".join(f"{k}: {v}" for k, v in channel_def.items()),
        eval_metrics={"mean_dice": None, "note": "validation Dice of the trained bundle: models/progress.yaml"},
    )
    metadata["references"] = metadata.get("references", [])[:1]
    image = metadata["network_data_format"]["inputs"]["image"]
    image.update(format="hounsfield" if ct else "magnitude", modality="CT" if ct else "MR",
                 num_channels=values["in_channels"].value, spatial_shape=patch,
                 channel_def={str(i): f"image channel {i}" for i in range(values["in_channels"].value)})  # fmt: skip
    pred = metadata["network_data_format"]["outputs"]["pred"]
    pred.update(num_channels=num_classes, spatial_shape=patch, channel_def=channel_def)
    return metadata


def _readme(values: Mapping[str, Derived], resample: bool, datalist: Mapping[str, list], modality: str, fold: int,
            name: str) -> str:  # fmt: skip
    rows = "\n".join(
        f"| `{key}` | `{json.dumps(v.value)}` | {v.source} | {v.rule} |" for key, v in values.items()
    ).replace("\n| `intensity`", "\n| intensity transform")
    counts = ", ".join(f"{len(datalist.get(k) or [])} {k}" for k in ("training", "validation", "unlabeled", "test"))
    return f"""# {name}: a semi-supervised bundle generated by Auto3DSeg

Generated by the `dualnet` algorithm template of monai-semiseg (two networks trained together on labeled and
unlabeled volumes: copy-paste by default; the paper's cross pseudo supervision, entropy-filtered pseudo-labels, KL
uncertainty weighting, prototype contrast, and the recipe's cross-reliable supervision and prediction consistency as
options in `configs/ablation/`; Lu et al., Knowledge-Based Systems 2025, arXiv 2509.13084) from the data statistics of MONAI's
`DataAnalyzer`. Modality: {modality}. Fold {fold}: {counts} cases (`datalist.json`, absolute paths).
Resampling: {"yes, `Spacingd` to `spacing`" if resample else "none (every case already has the target spacing)"}.

## Run

From this folder's parent (`bundle_root` is the folder holding `configs/`):

    python -m monai.bundle run --config_file {name}/configs/train.json
    python -m monai.bundle run --config_file "['{name}/configs/train.json','{name}/configs/evaluate.json']"
    python -m monai.bundle run --config_file {name}/configs/inference.json --input_dir <images>
    torchrun --nproc_per_node=2 -m monai.bundle run \\
        --config_file "['{name}/configs/train.json','{name}/configs/multi_gpu_train.json']"

The ablation overlays of this project are in `configs/ablation/`. Auto3DSeg trains it with
`python {name}/scripts/train.py run`, which also writes the validation Dice to `models/progress.yaml`.

## Where each value came from

| key | value | statistic | rule |
|---|---|---|---|
{rows}
"""
