"""What the template derives from the data statistics of Auto3DSeg's ``DataAnalyzer`` (``datastats.yaml``).

Every function returns :class:`Derived` values: the value, the statistic it came from and the rule, so that the
generated bundle can say in its README where each of its numbers came from. The rules follow the official Auto3DSeg
templates (research-contributions ``auto3dseg/algorithm_templates``, read for this project: segresnet's median
spacing and ROI from the median size, dints'/swinunetr's batch size from memory) and the semi-supervised literature's
recipe for the run length (Yu et al., "Uncertainty-aware self-ensembling model for semi-supervised 3D left atrium
segmentation", MICCAI 2019: 6000 iterations of 2 labeled + 2 unlabeled patches on 8 + 72 cases, ramp-up over 4000).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DOWNSAMPLING",
    "Derived",
    "batch_sizes",
    "class_count",
    "input_channels",
    "intensity_transforms",
    "patch_size",
    "run_length",
    "stat",
    "target_spacing",
]

DOWNSAMPLING = 16
"""Both branches (:class:`~semiseg.networks.VNet`, :class:`~semiseg.networks.ResVNet`) down-sample four times by 2:
patch sides must be multiples of 16 (``tests/test_auto3dseg.py`` checks it against the networks)."""

ANISOTROPY_RATIO = 3.0
"""Spacing ratio (coarsest / finest median axis) above which data count as anisotropic (nnU-Net's threshold)."""

PASSES = 300
"""Passes over all training cases (labeled + unlabeled) per run: 6000 iterations of 2 + 2 patches on 8 + 72 LA
cases, the benchmark's recipe."""

ITERATION_BOUNDS = (1000, 30000)
MAX_BATCH_EACH = 2
"""Largest labeled (and unlabeled) batch: the literature's 2 + 2 (a larger batch would change its learning rate)."""


@dataclass(frozen=True)
class Derived:
    """A value of the generated bundle and where it came from.

    Attributes:
        value: what the bundle config gets (JSON-serialisable).
        source: the statistic(s) it was computed from, with their values (``"given"`` when a user gave it).
        rule: how it was computed, in words.
    """

    value: Any
    source: str
    rule: str

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source, "rule": self.rule}


def stat(stats: Mapping[str, Any], key: str) -> Any:
    """``stats["stats_summary"]`` looked up along ``key`` (``"image_stats#spacing#median"``), lists of one channel
    unwrapped.

    Raises:
        KeyError: naming the key that the statistics lack.
    """
    node: Any = stats.get("stats_summary", stats)
    for part in key.split("#"):
        if isinstance(node, list) and len(node) >= 1 and isinstance(node[0], Mapping):
            node = node[0]
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"the data statistics have no 'stats_summary#{key}' (missing '{part}')")
        node = node[part]
    return node


def _floats(value: Any, name: str) -> list[float]:
    if isinstance(value, (int, float)):
        value = [value]
    if isinstance(value, Sequence) and len(value) == 1 and isinstance(value[0], Sequence):
        value = value[0]
    values = [float(v) for v in value]
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name} must be three positive numbers, got {value!r}")
    return values


def input_channels(stats: Mapping[str, Any]) -> Derived:
    """Input channels: the largest channel count of the labeled images (``image_stats#channels#max``)."""
    channels = int(round(float(_scalar(stat(stats, "image_stats#channels#max")))))
    if channels < 1:
        raise ValueError(f"image_stats#channels#max must be >= 1, got {channels}")
    return Derived(channels, f"image_stats#channels#max = {channels}", "channels of the images")


def class_count(stats: Mapping[str, Any]) -> Derived:
    """Number of classes (background included) from ``label_stats#labels``, which must be ``0 .. K-1``.

    Raises:
        ValueError: when the labels are not consecutive integers from 0 (the networks' one-hot channels are).
    """
    labels = sorted({int(round(float(v))) for v in stat(stats, "label_stats#labels")})
    if not labels or labels != list(range(labels[-1] + 1)):
        raise ValueError(
            f"label_stats#labels = {labels}: the label values must be 0 .. K-1 (background 0); remap them first"
        )
    return Derived(len(labels), f"label_stats#labels = {labels}", "number of label values, background included")


def target_spacing(stats: Mapping[str, Any], given: Sequence[float] | None = None) -> tuple[Derived, bool]:
    """Target voxel spacing (mm) and whether the bundle resamples.

    The median spacing of each axis (segresnet's rule). Anisotropic data (coarsest / finest median above
    :data:`ANISOTROPY_RATIO`) keep their coarse axis: nothing is resampled towards isotropy. The bundle resamples only
    when some case has another spacing (``spacing#min`` or ``#max`` differs from the median by more than 1 %); data
    that already share one spacing (LA) are not resampled.

    Returns:
        The spacing and ``resample``.
    """
    median = _floats(stat(stats, "image_stats#spacing#median"), "image_stats#spacing#median")
    low = _floats(stat(stats, "image_stats#spacing#min"), "image_stats#spacing#min")
    high = _floats(stat(stats, "image_stats#spacing#max"), "image_stats#spacing#max")
    uniform = all(abs(lo - m) <= 0.01 * m and abs(hi - m) <= 0.01 * m for lo, hi, m in zip(low, high, median))
    if given is not None:
        spacing = _floats(given, "spacing")
        resample = not (uniform and all(abs(s - m) <= 0.01 * m for s, m in zip(spacing, median)))
        return Derived([round(s, 4) for s in spacing], "given", "spacing given by the user"), resample
    ratio = max(median) / min(median)
    if ratio > ANISOTROPY_RATIO:
        kind = f"anisotropic (ratio {ratio:.1f} > {ANISOTROPY_RATIO:g}): coarse axis kept"
    else:
        kind = f"near-isotropic (ratio {ratio:.1f})"
    action = "every case has it already: no resampling" if uniform else "cases differ (min/max): resampled to it"
    rule = f"median spacing per axis; {kind}; {action}"
    source = f"image_stats#spacing#median = {_fmt(median)}, #min = {_fmt(low)}, #max = {_fmt(high)}"
    return Derived([round(m, 4) for m in median], source, rule), not uniform


def patch_size(
    stats: Mapping[str, Any],
    spacing: Sequence[float],
    max_voxels: int | None = None,
    given: Sequence[int] | None = None,
) -> Derived:
    """Training patch (voxels at ``spacing``): the median image size in mm at that spacing, each side rounded down to
    a multiple of :data:`DOWNSAMPLING` (at least one multiple), then shrunk along its longest side, one multiple at a
    time, until it has at most ``max_voxels`` voxels (the memory budget, see :func:`semiseg.auto3dseg.memory`).

    For LA-like statistics (0.625 mm, median about 76 x 76 x 55 mm, i.e. 121 x 122 x 88 voxels) it gives the
    benchmark's 112 x 112 x 80.
    """
    if given is not None:
        size = [int(v) for v in given]
        if len(size) != 3 or any(s < DOWNSAMPLING or s % DOWNSAMPLING for s in size):
            raise ValueError(f"patch_size must be three multiples of {DOWNSAMPLING}, got {list(given)!r}")
        return Derived(size, "given", "patch size given by the user")
    size_mm = _floats(stat(stats, "image_stats#sizemm#median"), "image_stats#sizemm#median")
    voxels = [mm / s for mm, s in zip(size_mm, spacing)]
    size = [max(DOWNSAMPLING, int(v // DOWNSAMPLING) * DOWNSAMPLING) for v in voxels]
    rule = f"median size in mm / spacing, rounded down to multiples of {DOWNSAMPLING} (the networks' down-sampling)"
    capped = False
    while max_voxels is not None and math.prod(size) > max_voxels and max(size) > DOWNSAMPLING:
        longest = max(range(3), key=lambda i: size[i])
        size[longest] -= DOWNSAMPLING
        capped = True
    if capped:
        rule += f", shrunk to the memory budget of {max_voxels} voxels"
    source = f"image_stats#sizemm#median = {_fmt(size_mm)} mm = {_fmt(voxels)} voxels at {_fmt(spacing)} mm"
    return Derived(size, source, rule)


def intensity_transforms(stats: Mapping[str, Any], modality: str, channels: int) -> Derived:
    """Intensity normalisation as bundle transform configs (``keys`` filled in by the generator).

    - CT: clip to the 0.5-99.5 percentiles of the foreground (labeled) intensities and scale to [0, 1]
      (``ScaleIntensityRanged``), the official templates' rule;
    - MRI: z-score of each volume and channel on its non-zero voxels (``NormalizeIntensityd``).

    Raises:
        ValueError: for another modality.
    """
    modality = str(modality).lower()
    if modality == "ct":
        low = float(_scalar(stat(stats, "image_foreground_stats#intensity#percentile_00_5")))
        high = float(_scalar(stat(stats, "image_foreground_stats#intensity#percentile_99_5")))
        if not high > low:
            raise ValueError(f"foreground intensity percentiles 0.5 / 99.5 are {low} / {high}: no range to scale")
        transform = {"_target_": "ScaleIntensityRanged", "a_min": round(low, 3), "a_max": round(high, 3),
                     "b_min": 0.0, "b_max": 1.0, "clip": True}  # fmt: skip
        source = (
            f"image_foreground_stats#intensity#percentile_00_5 = {low:.4g}, #percentile_99_5 = {high:.4g}"
        )
        return Derived([transform], source, "CT: clip to the foreground 0.5-99.5 percentiles, scale to [0, 1]")
    if modality in ("mri", "mr"):
        transform = {"_target_": "NormalizeIntensityd", "nonzero": True, "channel_wise": channels > 1}
        return Derived([transform], "modality = mri", "MRI: z-score per volume (and channel) on non-zero voxels")
    raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")


def run_length(
    num_labeled: int,
    num_unlabeled: int,
    labeled_batch: int,
    unlabeled_batch: int,
    given_iterations: int | None = None,
) -> dict[str, Derived]:
    """Iterations and the schedules tied to them.

    ``iterations`` = :data:`PASSES` passes over all training cases at ``labeled_batch + unlabeled_batch`` patches per
    iteration, rounded up to a hundred, within :data:`ITERATION_BOUNDS` (LA: 300 x 80 / 4 = 6000); the ramp-up of the
    unlabeled terms takes two thirds of it (4000), the learning rate drops at 5/12 (2500), validation every sixth
    (1000), state saved every twelfth (500), as in the LA recipe. A given ``iterations`` keeps these shares.
    """
    if num_labeled < 1:
        raise ValueError(f"at least one labeled training case is needed, got {num_labeled}")
    cases = num_labeled + max(0, num_unlabeled)
    per_iteration = labeled_batch + (unlabeled_batch if num_unlabeled > 0 else 0)
    if given_iterations is not None:
        iterations = int(given_iterations)
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {given_iterations}")
        it = Derived(iterations, "given", "iterations given by the user")
    else:
        raw = PASSES * cases / per_iteration
        iterations = int(min(max(math.ceil(raw / 100) * 100, ITERATION_BOUNDS[0]), ITERATION_BOUNDS[1]))
        it = Derived(
            iterations,
            f"{num_labeled} labeled + {max(0, num_unlabeled)} unlabeled training cases, {per_iteration} patches "
            "per iteration",
            f"{PASSES} passes over the training cases, rounded up to 100, within {list(ITERATION_BOUNDS)}",
        )
    source = f"iterations = {iterations}"
    return {
        "iterations": it,
        "rampup_iterations": Derived(max(1, round(iterations * 2 / 3)), source, "2/3 of the run (LA: 4000 of 6000)"),
        "lr_step": Derived(max(1, round(iterations * 5 / 12)), source, "5/12 of the run (LA: 2500 of 6000)"),
        "val_interval": Derived(max(1, round(iterations / 6)), source, "1/6 of the run (LA: 1000 of 6000)"),
        "save_interval": Derived(max(1, round(iterations / 12)), source, "1/12 of the run (LA: 500 of 6000)"),
    }


def batch_sizes(
    sample_bytes: float,
    budget_bytes: float,
    num_labeled: int,
    num_unlabeled: int,
    budget_source: str,
) -> tuple[Derived, Derived]:
    """Labeled and unlabeled batch sizes: as many patches as the memory budget holds, half of each, at most
    :data:`MAX_BATCH_EACH` each and at most the number of cases of each kind (the loaders drop incomplete batches).
    """
    fit = int(budget_bytes // sample_bytes) if sample_bytes > 0 else 2 * MAX_BATCH_EACH
    labeled = max(1, min(MAX_BATCH_EACH, (fit + 1) // 2, num_labeled))
    unlabeled = max(1, min(MAX_BATCH_EACH, max(1, fit - labeled), max(1, num_unlabeled)))
    source = (
        f"{budget_source}; {sample_bytes / 2**20:.0f} MiB per patch; {num_labeled} labeled / {num_unlabeled} "
        "unlabeled training cases"
    )
    rule = f"patches that fit the budget, split in half, at most {MAX_BATCH_EACH} each and at most the cases"
    return Derived(labeled, source, rule), Derived(unlabeled, source, rule)


def _scalar(value: Any) -> Any:
    while isinstance(value, (list, tuple)):
        value = max(value) if value and not isinstance(value[0], (list, tuple)) else value[0]
    return value


def _fmt(values: Sequence[float]) -> str:
    return "x".join(f"{v:.4g}" for v in values)
