"""The method the benchmarks time, built the way users train it: the LA bundle's configs, resolved by MONAI.

:func:`bundle_parser` reads ``bundles/la/configs/train.json`` + ``demo.json`` (+ overlays such as
``ablation/supervised.json``) with ``monai.bundle.ConfigParser`` and applies overrides; :func:`build_method` takes
the bundle's ``network``, ``objective`` and ``optimizer`` from it. So a benchmark of "the bundle's method" times the
objective of ``train.json`` (class-balanced reliability, cross-reliable supervision, ramp-up weights...), not a copy
written here; its dual-network step, without the copy-paste term (:data:`PLAIN_STEP_OVERRIDES`). The benchmark
flags map onto the bundle's ids with :func:`method_overrides`.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from monai.bundle import ConfigParser

from .options import step_arguments

__all__ = [
    "LA_BUNDLE",
    "PLAIN_STEP_OVERLAYS",
    "PLAIN_STEP_OVERRIDES",
    "REPO_ROOT",
    "SUPERVISED_OVERLAY",
    "WITH_CONSISTENCY_OVERLAY",
    "WITH_CONTRASTIVE_OVERLAY",
    "WITH_CROSS_PSEUDO_OVERLAY",
    "WITH_CROSS_RELIABLE_OVERLAY",
    "WITH_ENTROPY_FILTER_OVERLAY",
    "WITH_KL_OVERLAY",
    "BundleMethod",
    "TrainingSetup",
    "batch_to",
    "build_inferer",
    "build_method",
    "build_objective",
    "bundle_setting",
    "bundle_parser",
    "copy_setup",
    "make_batch",
    "method_arguments",
    "method_overrides",
    "training_setup",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
LA_BUNDLE = REPO_ROOT / "bundles" / "la"

SUPERVISED_OVERLAY = "ablation/supervised.json"
"""The bundle's supervised-only row: every unlabeled term (and cross-reliable supervision) off."""

WITH_KL_OVERLAY = "ablation/with_kl.json"
"""The bundle's method with KL uncertainty weighting, off by default since bundle 0.4.5."""

WITH_ENTROPY_FILTER_OVERLAY = "ablation/with_entropy_filter.json"
"""The bundle's method with the entropy-filtered supervision, off by default since LA bundle 0.4.6."""

WITH_CONTRASTIVE_OVERLAY = "ablation/with_contrastive.json"
"""The bundle's method with prototype contrast, off by default since LA bundle 0.4.7."""

WITH_CONSISTENCY_OVERLAY = "ablation/with_consistency.json"
"""The bundle's method with prediction consistency, off by default since LA bundle 0.4.8."""

WITH_CROSS_PSEUDO_OVERLAY = "ablation/with_cross_pseudo.json"
"""The bundle's method with cross pseudo supervision, off by default since LA bundle 0.4.9."""

WITH_CROSS_RELIABLE_OVERLAY = "ablation/with_cross_reliable.json"
"""The bundle's method with cross-reliable supervision, off by default since LA bundle 0.4.11."""

PLAIN_STEP_OVERRIDES: dict[str, Any] = {"pseudo_label_pass": "train", "loss#copy_paste": None}
"""How the timed step differs from the bundle's defaults: no teaching pass without dropout, no copy-paste mixes, and
CPS and cross-reliable supervision on (:data:`PLAIN_STEP_OVERLAYS`).

The loops here make one forward of the labeled and unlabeled crops, as the objective's terms need; the default
copy-paste term also needs a no-gradient teaching pass and a forward of the mixed crops, which only
``SemiSupervisedTrainer`` assembles. Copy-paste is the defaults' one unlabeled term since LA bundle 0.4.9, so without
it the objective would read no unlabeled crop: the engine would then skip them while the plain loop still forwards
them. Cross pseudo supervision (the paper's core term, an option since 0.4.9) and cross-reliable supervision (an
option since 0.4.11) stay on instead, so the step is the dual-network step the benchmarks timed before 0.4.9 and both
loops do the same work.
"""

PLAIN_STEP_OVERLAYS: tuple[str, ...] = (WITH_CROSS_PSEUDO_OVERLAY, WITH_CROSS_RELIABLE_OVERLAY)
"""Overlays read before a benchmark's own (which may switch the terms off again, as the supervised row does)."""


def bundle_setting(key: str, bundle: Path = LA_BUNDLE) -> Any:
    """A plain value of the bundle's ``train.json`` (no expression), e.g. ``patch_size`` or ``sw_stride``."""
    return json.loads((bundle / "configs" / "train.json").read_text())[key]


def bundle_parser(
    overrides: Mapping[str, Any] | None = None, overlays: Sequence[str] = (), bundle: Path = LA_BUNDLE
) -> ConfigParser:
    """``train.json`` + ``demo.json`` + ``overlays`` of ``bundle``, with ``overrides`` applied, ready to resolve.

    Args:
        overrides: ``{id: value}`` as on the bundle's command line (``"n_filters": 16``, ``"loss#contrastive": None``).
        overlays: more config files, relative to ``<bundle>/configs`` (e.g. ``"ablation/supervised.json"``) or
            absolute, read after the demo overlay as ``python -m monai.bundle run --config_file`` would.
        bundle: the bundle folder; ``bundle_root`` is set to it.

    Raises:
        FileNotFoundError: naming a config file that does not exist.
    """
    files = [bundle / "configs" / "train.json", bundle / "configs" / "demo.json"]
    files += [Path(o) if Path(o).is_absolute() else bundle / "configs" / o for o in overlays]
    for config_file in files:
        if not config_file.is_file():
            raise FileNotFoundError(f"bundle config {config_file} not found.")
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    parser["bundle_root"] = str(bundle)
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def method_overrides(
    n_filters: int, feature_dim: int, norm: str, patch: Sequence[int], labeled_batch: int, unlabeled_batch: int
) -> dict[str, Any]:
    """The benchmark flags as the bundle's ids (``patch`` -> ``patch_size``, ``labeled_batch`` -> ...)."""
    return {
        "n_filters": n_filters,
        "feature_dim": feature_dim,
        "norm": norm,
        "patch_size": [int(p) for p in patch],
        "labeled_batch_size": labeled_batch,
        "unlabeled_batch_size": unlabeled_batch,
    }


def method_arguments(
    device: str,
    threads: int | None,
    patch: int | str | Sequence[int],
    n_filters: int,
    feature_dim: int,
    norm: str,
    labeled_batch: int,
    unlabeled_batch: int,
    **counts: int,
) -> tuple[torch.device, tuple[int, int, int], dict[str, Any]]:
    """Check the flags of a benchmark of the method; the device, the patch and the flags as the bundle's overrides.

    ``counts`` (repeats, iterations...) must be positive integers too.
    """
    dev, patch_t = step_arguments(
        device, threads, patch, n_filters=n_filters, feature_dim=feature_dim, labeled_batch=labeled_batch,
        unlabeled_batch=unlabeled_batch, **counts,
    )  # fmt: skip
    return dev, patch_t, method_overrides(n_filters, feature_dim, norm, patch_t, labeled_batch, unlabeled_batch)


@dataclass
class BundleMethod:
    """The bundle's ``network`` (on the device), ``objective`` and ``optimizer``, and the parser they came from."""

    network: nn.Module
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    parser: ConfigParser


def build_method(
    device: torch.device, overrides: Mapping[str, Any] | None = None, overlays: Sequence[str] = ()
) -> BundleMethod:
    """Resolve the bundle's network, objective and optimizer on ``device``, without its data.

    The ramp-ups of the objective are declared against the configured ``iterations`` (only a trainer given epochs
    fits them to another length), so no data set is read or written.
    """
    parser = _method_parser(device, overrides, overlays)
    network = parser.get_parsed_content("network")
    objective = parser.get_parsed_content("objective")
    optimizer = parser.get_parsed_content("optimizer")
    return BundleMethod(network, objective, optimizer, parser)


def build_inferer(overrides: Mapping[str, Any] | None = None) -> Any:
    """The bundle's ``inferer`` (the sliding window of validation and evaluation) after ``overrides``."""
    return bundle_parser(overrides).get_parsed_content("inferer")


def build_objective(
    device: torch.device, overrides: Mapping[str, Any] | None = None, overlays: Sequence[str] = ()
) -> nn.Module:
    """The bundle's ``objective`` alone (e.g. an ablation row's, with its overlay), as :func:`build_method` makes it."""
    return _method_parser(device, overrides, overlays).get_parsed_content("objective")


def _method_parser(
    device: torch.device, overrides: Mapping[str, Any] | None, overlays: Sequence[str]
) -> ConfigParser:
    device_id = {"device": f"$torch.device('{device}')"}
    return bundle_parser({**device_id, **PLAIN_STEP_OVERRIDES, **(overrides or {})}, [*PLAIN_STEP_OVERLAYS, *overlays])


def make_batch(batch_size: int, patch: Sequence[int], labeled: bool = True) -> dict[str, torch.Tensor]:
    """A batch of noisy bright ellipsoids: ``image`` (B, 1, *patch) and, if ``labeled``, ``label`` (B, 1, *patch).

    Draws from torch's global generator: seed it (``torch.manual_seed``) for identical batches.
    """
    axes = [torch.linspace(-1.0, 1.0, int(s)) for s in patch]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (3, *patch)
    images, labels = [], []
    for _ in range(batch_size):
        centre = (torch.rand(3) - 0.5) * 0.6
        radii = 0.25 + 0.3 * torch.rand(3)
        inside = (((grid - centre.view(3, 1, 1, 1)) / radii.view(3, 1, 1, 1)) ** 2).sum(0) <= 1.0
        label = inside.float()[None]
        images.append(label + 0.3 * torch.randn_like(label))
        labels.append(label)
    batch = {"image": torch.stack(images)}
    if labeled:
        batch["label"] = torch.stack(labels)
    return batch


def batch_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch with every tensor on ``device``."""
    return {k: v.to(device) for k, v in batch.items()}


@dataclass
class TrainingSetup:
    """What a timed training loop needs: the bundle's network, optimizer and objective, and in-memory batches."""

    network: nn.Module
    optimizer: torch.optim.Optimizer
    objective: nn.Module
    labeled: list[dict[str, torch.Tensor]]
    unlabeled: list[dict[str, torch.Tensor]]


def training_setup(
    device: torch.device, overrides: Mapping[str, Any], num_batches: int, seed: int
) -> TrainingSetup:
    """The bundle's method (see :func:`build_method`) and ``num_batches`` synthetic labeled and unlabeled batches.

    The batch sizes and the patch are the bundle's (``labeled_batch_size``, ``unlabeled_batch_size``,
    ``patch_size`` after ``overrides``).
    """
    torch.manual_seed(seed)
    method = build_method(device, overrides)
    parsed = functools.partial(method.parser.get_parsed_content)
    patch, n_l, n_u = parsed("patch_size"), parsed("labeled_batch_size"), parsed("unlabeled_batch_size")
    to = functools.partial(batch_to, device=device)
    labeled = [to(make_batch(n_l, patch)) for _ in range(num_batches)]
    unlabeled = [to(make_batch(n_u, patch, labeled=False)) for _ in range(num_batches)]
    return TrainingSetup(method.network, method.optimizer, method.objective, labeled, unlabeled)


def copy_setup(setup: TrainingSetup) -> TrainingSetup:
    """An independent network, optimizer and objective with the same state, sharing the batches."""
    network = copy.deepcopy(setup.network)
    optimizer = type(setup.optimizer)(network.parameters(), **setup.optimizer.defaults)
    return TrainingSetup(network, optimizer, copy.deepcopy(setup.objective), setup.labeled, setup.unlabeled)
