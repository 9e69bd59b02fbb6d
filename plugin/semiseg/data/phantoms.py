"""Synthetic phantom volumes with ground truth: the embedded default dataset of the demo bundles.

The phantoms exist so that the method can be run, and measured, without data or a GPU. They are built to be hard
in the way the real tasks are hard, so that labels alone do not saturate and unlabeled data has room to help:
the labeled structure is surrounded by unlabeled look-alikes of similar brightness that touch or nearly touch it,
contrast varies between cases, a smooth multiplicative bias field, partial-volume blur and noise corrupt the
intensities, and size, position and orientation vary. A global threshold does not separate the target; its shape
and its context do.

Three kinds mimic the benchmark datasets of the bundles:

- ``"la"``: late gadolinium-enhanced MRI of the left atrium (2018 Atrial Segmentation Challenge; Xiong et al.,
  "A global benchmark of algorithms for segmenting the left atrium from late gadolinium-enhanced cardiac magnetic
  resonance imaging", Medical Image Analysis 2021). Label: the atrial blood pool with 2-4 pulmonary vein trunks.
  Unlabeled look-alikes: the left ventricle (joined to the atrium across the mitral plane), the aortic arch wrapping
  over the atrium (ascending in front, descending behind) and the pulmonary artery running over the atrial roof;
  also patchy enhancement of the atrial wall, bright fat and dark lungs. Anisotropic voxels (1.25 x 1.25 x 2.5 mm).
- ``"pancreas"``: contrast-enhanced abdominal CT (NIH Pancreas-CT; Roth et al., MICCAI 2015). Label: a lobulated,
  elongated pancreas. Unlabeled look-alikes: the duodenum around the head, bowel loops and the stomach of similar
  density, the splenic and superior mesenteric veins along it. Intensity: CT numbers in a soft-tissue window mapped
  to [0, 1]; 1 mm voxels.
- ``"brats"``: FLAIR MRI of a glioma (BraTS 2019; Menze et al., IEEE TMI 2015). Label: the whole tumour, an
  irregular bright lesion. Unlabeled look-alikes: periventricular hyperintensities capping the ventricles, a bright
  rim along part of the brain surface and small punctate white-matter hyperintensities. Intensity z-scored over the
  brain, zero outside it (skull-stripped); 1 mm voxels.

Arrays are indexed (X, Y, Z) like nibabel's, the affine maps voxel indices to millimetres (RAS) with the volume
centred on the origin. All randomness comes from ``numpy.random.default_rng(seed)``: the same arguments give the
same volume on every machine with the same numpy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from semiseg.arguments import check_int, is_integer, is_number

from .release import save_volume, write_datalist, write_text_atomically

__all__ = ["PHANTOM_KINDS", "default_phantom_geometry", "make_phantom", "phantom_case_seed", "write_phantom_dataset"]

logger = logging.getLogger(__name__)

PHANTOM_KINDS: tuple[str, ...] = ("la", "pancreas", "brats", "la_varied")
"""Kinds of phantom that :func:`make_phantom` builds."""

_DEFAULT_SHAPE: dict[str, tuple[int, int, int]] = {
    "la": (80, 80, 48),
    "pancreas": (80, 80, 48),
    "brats": (80, 80, 48),
    "la_varied": (80, 80, 48),
}
_DEFAULT_SPACING: dict[str, tuple[float, float, float]] = {
    "la": (1.25, 1.25, 2.5),
    "pancreas": (1.0, 1.0, 1.0),
    "brats": (1.0, 1.0, 1.0),
    "la_varied": (1.25, 1.25, 2.5),
}
# kinds whose voxel spacing is drawn per case when no spacing is given (the default above is then the middle)
_PER_CASE_SPACING: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {"la_varied": ((1.1, 1.4), (2.0, 3.0))}
# in-plane field of view (mm) at which each kind's anatomy has its nominal size; other fields of view scale it
_REFERENCE_FOV_MM: dict[str, float] = {"la": 100.0, "pancreas": 80.0, "brats": 80.0, "la_varied": 100.0}
_CT_WINDOW_HU: tuple[float, float] = (-125.0, 275.0)
_MANIFEST = "phantoms.json"
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])  # a frame whose columns are the patient's left, posterior, superior
_FAR_MM = 12.0  # signed distances are only computed exactly up to about this far from a tube


def default_phantom_geometry(kind: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Default volume shape (X, Y, Z) in voxels and voxel spacing in mm of a phantom kind."""
    _check_kind(kind)
    return _DEFAULT_SHAPE[kind], _DEFAULT_SPACING[kind]


_SPLIT_STREAMS = {"train": 0, "test": 1, "validation": 2}


def phantom_case_seed(seed: int, split: str, index: int) -> int:
    """Seed of case ``index`` of a split (``"train"``, ``"test"`` or ``"validation"``) of the dataset of ``seed``.

    Train and test cases come from separate streams, so changing ``num_train`` does not change the test cases.
    """
    if split not in _SPLIT_STREAMS:
        raise ValueError(f"split must be one of {tuple(_SPLIT_STREAMS)}, got {split!r}")
    stream = _SPLIT_STREAMS[split]
    return int(np.random.SeedSequence([int(seed), stream, int(index)]).generate_state(1)[0])


def make_phantom(
    kind: str = "la",
    seed: int = 0,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate one synthetic volume with its segmentation.

    Args:
        kind: ``"la"`` (LGE-MRI left atrium), ``"pancreas"`` (CT pancreas), ``"brats"`` (FLAIR whole tumour) or
            ``"la_varied"`` (the left atrium with cohort-like variation between cases, see :func:`_left_atrium_varied`).
        seed: random seed; the same arguments always give the same volume.
        shape: volume size (X, Y, Z) in voxels, each at least 16; default 80 x 80 x 48.
        spacing: voxel size (X, Y, Z) in mm; default 1.25 x 1.25 x 2.5 for ``"la"``, 1 mm isotropic for
            ``"pancreas"`` and ``"brats"``, and for ``"la_varied"`` drawn per case (in-plane 1.1-1.4 mm, 2.0-3.0 mm
            between slices) from the seed.
            The anatomy scales with the in-plane field of view (shape x spacing), so it spans about half of it.

    Returns:
        image: float32 array shaped (X, Y, Z).
        label: uint8 array shaped (X, Y, Z), 1 on the structure, 0 elsewhere.
        affine: 4x4 float64 voxel-to-world (RAS, mm) matrix, volume centred on the origin.

    Raises:
        ValueError: for an unknown kind, a shape that is not three integers >= 16 or a spacing that is not three
            positive numbers.
    """
    _check_kind(kind)
    shape_t = _check_shape(shape if shape is not None else _DEFAULT_SHAPE[kind])
    check_int(seed, "seed", 0)
    spacing_t = _check_spacing(spacing if spacing is not None else _case_spacing(kind, int(seed)))
    rng = np.random.default_rng(int(seed))
    canvas = _Canvas(shape_t, spacing_t)
    builder = {"la": _left_atrium, "pancreas": _pancreas, "brats": _brain_tumour, "la_varied": _left_atrium_varied}[kind]
    image, label = builder(rng, canvas)
    return image.astype(np.float32), label.astype(np.uint8), canvas.affine


def write_phantom_dataset(
    out_dir: str | Path,
    num_train: int = 40,
    num_test: int = 10,
    kind: str = "la",
    seed: int = 0,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    num_validation: int = 0,
    test_seed: int | None = None,
) -> Path:
    """Write a phantom dataset as NIfTI files with an MSD-style ``datalist.json``, or reuse one already written.

    Layout under ``out_dir``: ``imagesTr/``, ``labelsTr/``, ``imagesTs/``, ``labelsTs/`` holding
    ``<kind>_phantom_NNN.nii.gz``; ``datalist.json`` with a ``"training"`` list (every case has image and label;
    the bundle decides how many keep their labels) and a ``"test"`` list, paths relative to ``out_dir``; and a
    manifest ``phantoms.json`` with the arguments. When the manifest records the same arguments and generator
    version and every file is present, nothing is written, so a demo may call this on every run for free. Files of
    an earlier, different dataset in the same folder are replaced. Training case ``i`` equals
    ``make_phantom(kind, phantom_case_seed(seed, "train", i), shape, spacing)``; test cases use the ``"test"`` stream
    and validation cases (a ``"validation"`` list, files in ``imagesTr/`` numbered after the test cases) the
    ``"validation"`` stream, so the three sets are disjoint and each is unchanged when another one's size changes.
    ``test_seed`` draws the test cases from another dataset seed's test stream: a fresh test set for a benchmark
    whose design has already seen the test cases of ``seed``, with the training and validation cases unchanged.

    Args:
        out_dir: output folder, created if needed.
        num_train: number of training cases (>= 1).
        num_test: number of test cases (>= 0).
        kind: phantom kind, see :func:`make_phantom`.
        seed: dataset seed.
        shape: volume shape (X, Y, Z); default per kind.
        spacing: voxel size in mm; default per kind (per case for ``"la_varied"``).
        num_validation: number of validation cases (>= 0).
        test_seed: dataset seed of the test cases; default ``seed``.

    Returns:
        Path of ``datalist.json``.
    """
    _check_kind(kind)
    check_int(num_train, "num_train", 1)
    check_int(num_test, "num_test", 0)
    check_int(num_validation, "num_validation", 0)
    check_int(seed, "seed", 0)
    if test_seed is not None:
        check_int(test_seed, "test_seed", 0)
    shape_t = _check_shape(shape if shape is not None else _DEFAULT_SHAPE[kind])
    per_case_spacing = spacing is None and kind in _PER_CASE_SPACING
    spacing_t = None if per_case_spacing else _check_spacing(spacing if spacing is not None else _DEFAULT_SPACING[kind])
    out = Path(out_dir)
    arguments = {
        "kind": kind,
        "num_train": int(num_train),
        "num_test": int(num_test),
        "seed": int(seed),
        "shape": list(shape_t),
        "spacing": "per case" if spacing_t is None else list(spacing_t),
        "generator": _generator_version(),
    }
    if num_validation:
        arguments["num_validation"] = int(num_validation)
    if test_seed is not None:
        arguments["test_seed"] = int(test_seed)
    split_seeds = {"train": int(seed), "validation": int(seed), "test": int(seed if test_seed is None else test_seed)}
    datalist_path = out / "datalist.json"
    previous = _read_manifest(out)
    if previous is None and datalist_path.exists():
        raise ValueError(
            f"{out} already holds a datalist.json that write_phantom_dataset did not write (no {_MANIFEST}); "
            f"choose an empty or phantom-only folder for out_dir"
        )
    if previous is not None and previous.get("arguments") == arguments and datalist_path.is_file():
        if all((out / f).is_file() for f in previous.get("files", [])):
            logger.info("phantom dataset in %s is up to date (%s); nothing to write", out, _describe(arguments))
            return datalist_path
    if previous is not None:
        for stale in previous.get("files", []):
            (out / stale).unlink(missing_ok=True)
        (out / _MANIFEST).unlink(missing_ok=True)

    logger.info("writing phantom dataset to %s (%s)", out, _describe(arguments))
    start = time.perf_counter()
    entries: dict[str, list[dict[str, str]]] = {"train": [], "test": [], "validation": []}
    folders = {"train": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs"), "validation": ("imagesTr", "labelsTr")}
    counts = {"train": int(num_train), "test": int(num_test), "validation": int(num_validation)}
    offsets = {"train": 0, "test": counts["train"], "validation": counts["train"] + counts["test"]}
    total = sum(counts.values())
    done = 0
    for split in ("train", "test", "validation"):
        image_dir, label_dir = folders[split]
        offset = offsets[split]
        for index in range(counts[split]):
            case_seed = phantom_case_seed(split_seeds[split], split, index)
            image, label, affine = make_phantom(kind, case_seed, shape_t, spacing_t)
            name = f"{kind}_phantom_{offset + index:03d}.nii.gz"
            save_volume(image, out / image_dir / name, affine=affine)
            save_volume(label, out / label_dir / name, affine=affine)
            entries[split].append({"image": f"{image_dir}/{name}", "label": f"{label_dir}/{name}"})
            done += 1
            logger.debug("phantom %d/%d (%s, seed %d): %d label voxels", done, total, split, case_seed, label.sum())
    datalist_path = write_datalist(
        out,
        training=entries["train"],
        test=entries["test"],
        validation=entries["validation"],
        name=f"{kind} phantoms",
        description=f"synthetic {kind} phantoms from semiseg.data.phantoms (generated, not patient data)",
        labels={"0": "background", "1": _LABEL_NAMES[kind]},
        numTraining=counts["train"],
        numTest=counts["test"],
        phantom_arguments=arguments,
    )
    files = [e[k] for split in ("train", "test", "validation") for e in entries[split] for k in ("image", "label")]
    manifest = {"arguments": arguments, "files": files}
    write_text_atomically(out / _MANIFEST, json.dumps(manifest, indent=2) + "\n")
    logger.info("wrote %d phantom cases to %s in %.1f s", total, out, time.perf_counter() - start)
    return datalist_path


_LABEL_NAMES = {"la": "left atrium", "pancreas": "pancreas", "brats": "whole tumour", "la_varied": "left atrium"}


# ---------------------------------------------------------------------------------------------------------------------
# argument checks and the manifest


def _check_kind(kind: str) -> None:
    if kind not in PHANTOM_KINDS:
        raise ValueError(f"kind must be one of {PHANTOM_KINDS}, got {kind!r}")


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(shape) if isinstance(shape, (list, tuple)) else ()
    if len(values) != 3 or any(not is_integer(v) or v < 16 for v in values):
        raise ValueError(f"shape must be three integers >= 16 (X, Y, Z voxels), got {shape!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(spacing) if isinstance(spacing, (list, tuple)) else ()
    if len(values) != 3 or any(not is_number(v) or not v > 0 for v in values):
        raise ValueError(f"spacing must be three positive numbers (X, Y, Z mm), got {spacing!r}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def _case_spacing(kind: str, seed: int) -> tuple[float, float, float]:
    """The kind's default spacing, or for kinds with per-case spacing one drawn from its own stream of ``seed``."""
    if kind not in _PER_CASE_SPACING:
        return _DEFAULT_SPACING[kind]
    (in_lo, in_hi), (z_lo, z_hi) = _PER_CASE_SPACING[kind]
    rng = np.random.default_rng([int(seed), 0x5CA1E])  # not the anatomy's stream: spacing and anatomy independent
    in_plane, between = round(float(rng.uniform(in_lo, in_hi)), 3), round(float(rng.uniform(z_lo, z_hi)), 3)
    return (in_plane, in_plane, between)


def _generator_version() -> str:
    """Digest of this module's source: any change to the generator invalidates datasets written before it."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _read_manifest(out: Path) -> dict | None:
    path = out / _MANIFEST
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _describe(arguments: dict) -> str:
    return (
        f"kind={arguments['kind']}, {arguments['num_train']} train + {arguments['num_test']} test, "
        f"seed={arguments['seed']}, shape={arguments['shape']}, spacing={arguments['spacing']}"
    )


# ---------------------------------------------------------------------------------------------------------------------
# geometry


class _Canvas:
    """The voxel grid: world coordinates (mm) of every voxel centre, the volume centred on the origin.

    Point arrays in this module are component-first, shaped (3, ...), so that each coordinate is contiguous.
    """

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
        self.shape = shape
        self.spacing = np.asarray(spacing, dtype=np.float64)
        self.origin = -(np.asarray(shape, dtype=np.float64) - 1) / 2 * self.spacing
        axes = [(np.arange(n, dtype=np.float32) * s + o) for n, s, o in zip(shape, self.spacing, self.origin)]
        self.points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0).astype(np.float32)  # (3, X, Y, Z)
        self.extent = np.asarray(shape, dtype=np.float64) * self.spacing

    @property
    def affine(self) -> np.ndarray:
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine

    def scale(self, kind: str) -> float:
        """Factor that scales the nominal anatomy (mm) of ``kind`` to this field of view."""
        return float(min(self.extent[0], self.extent[1]) / _REFERENCE_FOV_MM[kind])

    def box(self, low: np.ndarray, high: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices of the voxels whose centres lie in the world box [low, high], or None when it is empty."""
        first = np.ceil((low - self.origin) / self.spacing).astype(int)
        last = np.floor((high - self.origin) / self.spacing).astype(int)
        first = np.clip(first, 0, np.asarray(self.shape))
        last = np.clip(last + 1, 0, np.asarray(self.shape))
        if np.any(last <= first):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(first, last))  # type: ignore[return-value]

    def noise_texture(self, rng: np.random.Generator, sigma_mm: float) -> np.ndarray:
        """Smooth random texture with zero mean and unit standard deviation (Gaussian-filtered white noise)."""
        field = ndimage.gaussian_filter(rng.standard_normal(self.shape).astype(np.float32), sigma_mm / self.spacing)
        return ((field - field.mean()) / (field.std() + 1e-8)).astype(np.float32)


def _unit(vector: Sequence[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float64)
    return v / np.linalg.norm(v)


def _random_rotation(rng: np.random.Generator, max_degrees: float) -> np.ndarray:
    """Rotation matrix made of three random rotations about X, Y and Z of at most ``max_degrees`` each."""
    ax, ay, az = np.deg2rad(rng.uniform(-max_degrees, max_degrees, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _sphere_field(rng: np.random.Generator, amplitude: float, terms: int = 6) -> Callable[[np.ndarray], np.ndarray]:
    """Smooth random function on unit directions (3, ...), of about ``amplitude`` peak size: radial deformation."""
    directions = rng.normal(size=(terms, 3))
    frequencies = directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.uniform(1.0, 2.6, (terms, 1))
    phases = rng.uniform(0, 2 * np.pi, terms)
    weights = rng.uniform(0.4, 1.0, terms)
    weights *= amplitude / weights.sum() * 2.0

    def field(u: np.ndarray) -> np.ndarray:
        result = np.zeros(u.shape[1:], dtype=np.float32)
        for frequency, phase, weight in zip(frequencies, phases, weights):
            result += np.float32(weight) * np.cos(_dot(u, frequency) + np.float32(phase))
        return result

    return field


def _dot(points: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Dot product of component-first ``points`` (3, ...) with a 3-vector."""
    v = np.asarray(vector, dtype=np.float32)
    return points[0] * v[0] + points[1] * v[1] + points[2] * v[2]


def _shift(points: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``points`` (3, ...) minus the 3-vector ``offset``."""
    return points - np.asarray(offset, dtype=np.float32).reshape((3,) + (1,) * (points.ndim - 1))


def _smooth_field(rng: np.random.Generator, points: np.ndarray, wavelength_mm: tuple[float, float]) -> np.ndarray:
    """Low-frequency random field over ``points`` (3, ...) with zero mean and unit standard deviation (bias fields)."""
    field = np.zeros(points.shape[1:], dtype=np.float32)
    for _ in range(5):
        direction = _unit(rng.normal(size=3))
        wave = 2 * np.pi / rng.uniform(*wavelength_mm)
        field += np.cos(_dot(points, direction * wave) + np.float32(rng.uniform(0, 2 * np.pi)))
    return ((field - field.mean()) / (field.std() + 1e-8)).astype(np.float32)


class _Ellipsoid:
    """A randomly deformed ellipsoid: inside where |R^T (x - c) / a| < 1 + deform(direction)."""

    def __init__(
        self,
        center: np.ndarray,
        semi_axes: np.ndarray,
        rotation: np.ndarray,
        deform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.center = np.asarray(center, dtype=np.float64)
        self.semi_axes = np.asarray(semi_axes, dtype=np.float64)
        self.rotation = np.asarray(rotation, dtype=np.float64)
        self.deform = deform

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Approximate signed distance in mm (negative inside) at ``points`` (3, ...): first order near the surface."""
        relative = _shift(points, self.center)
        q = np.stack([_dot(relative, self.rotation[:, k] / self.semi_axes[k]) for k in range(3)])
        rho = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2]) + np.float32(1e-6)
        bound = 1.0 if self.deform is None else 1.0 + self.deform(q / rho)
        a = self.semi_axes.astype(np.float32)
        gradient = np.sqrt((q[0] / a[0]) ** 2 + (q[1] / a[1]) ** 2 + (q[2] / a[2]) ** 2) / rho
        return ((rho - bound) / gradient).astype(np.float32)

    def surface_point(self, direction: np.ndarray) -> np.ndarray:
        """The surface point seen from the centre in world ``direction``."""
        direction = _unit(direction)
        q = (self.rotation.T @ direction) / self.semi_axes
        norm = np.linalg.norm(q)
        bound = 1.0 if self.deform is None else 1.0 + float(self.deform((q / norm).astype(np.float32)[:, None])[0])
        return self.center + direction * bound / norm


class _Tube:
    """A tube of varying radius around a smooth centreline (Catmull-Rom spline through control points)."""

    def __init__(self, control_points: Sequence[np.ndarray], control_radii: Sequence[float], samples: int = 4) -> None:
        points = np.asarray(control_points, dtype=np.float64)
        radii = np.asarray(control_radii, dtype=np.float64)
        self.centreline, self.radii = _catmull_rom(points, radii, samples)

    def shifted(self, offset: np.ndarray) -> _Tube:
        tube = _Tube.__new__(_Tube)
        tube.centreline, tube.radii = self.centreline + offset, self.radii
        return tube

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance in mm (negative inside) at ``points`` (3, ...)."""
        result = np.full(points.shape[1:], np.inf, dtype=np.float32)
        for a, b, ra, rb in zip(self.centreline[:-1], self.centreline[1:], self.radii[:-1], self.radii[1:]):
            ab = b - a
            length2 = float(ab @ ab) + 1e-9
            rx, ry, rz = points[0] - np.float32(a[0]), points[1] - np.float32(a[1]), points[2] - np.float32(a[2])
            along = rx * np.float32(ab[0]) + ry * np.float32(ab[1]) + rz * np.float32(ab[2])
            t = np.clip(along * np.float32(1.0 / length2), 0.0, 1.0)
            squared = rx * rx + ry * ry + rz * rz - t * (2 * along - t * np.float32(length2))
            distance = np.sqrt(np.maximum(squared, 0.0)) - (np.float32(ra) + t * np.float32(rb - ra))
            np.minimum(result, distance, out=result)
        return result

    def signed_distance_on(self, canvas: _Canvas) -> np.ndarray:
        """Signed distance on the whole canvas, computed inside the tube's bounding box; ``_FAR_MM`` outside it."""
        result = np.full(canvas.shape, _FAR_MM, dtype=np.float32)
        reach = float(self.radii.max()) + _FAR_MM
        region = canvas.box(self.centreline.min(0) - reach, self.centreline.max(0) + reach)
        if region is not None:
            result[region] = np.minimum(self.signed_distance(canvas.points[(slice(None), *region)]), _FAR_MM)
        return result


def _catmull_rom(points: np.ndarray, radii: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample a Catmull-Rom spline through ``points`` (N, 3) with ``samples`` steps per span; radii linearly."""
    padded = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    t = np.linspace(0.0, 1.0, samples, endpoint=False)[:, None]
    curve, widths = [], []
    for i in range(1, len(padded) - 2):
        p0, p1, p2, p3 = padded[i - 1 : i + 3]
        curve.append(
            0.5
            * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3)
        )
        widths.append(radii[i - 1] + (radii[i] - radii[i - 1]) * t[:, 0])
    curve.append(points[-1:])
    widths.append(radii[-1:])
    return np.concatenate(curve), np.concatenate(widths)


def _occupancy(signed_distance: np.ndarray, edge_mm: float = 1.0) -> np.ndarray:
    """Fraction of a voxel inside a surface, a linear ramp of width ``edge_mm`` across it (partial volume)."""
    return np.clip(0.5 - signed_distance / edge_mm, 0.0, 1.0).astype(np.float32)


def _paint(image: np.ndarray, occupancy: np.ndarray, value: float | np.ndarray) -> None:
    """Composite a layer of intensity ``value`` over ``image`` in place, weighted by ``occupancy``."""
    image += occupancy * (value - image)


def _push_apart(
    signed_distance: Callable[[np.ndarray], np.ndarray],
    target_points: np.ndarray,
    direction: np.ndarray,
    gap: float,
    iterations: int = 4,
) -> np.ndarray:
    """Offset along ``direction`` that moves an object so that its nearest point is ``gap`` mm from the target.

    ``signed_distance(p)`` is the object's signed distance at points ``p`` (3, N); the object moved by ``offset`` has
    signed distance ``signed_distance(p - offset)``. Returns the offset (3,).
    """
    direction = _unit(direction)
    offset = np.zeros(3)
    if target_points.shape[1] == 0:
        return offset
    for _ in range(iterations):
        nearest = float(signed_distance(_shift(target_points, offset)).min())
        if abs(nearest - gap) < 0.25:
            break
        offset = offset + direction * (gap - nearest)
    return offset


def _blur(image: np.ndarray, spacing: np.ndarray, sigma_mm: float) -> np.ndarray:
    """Partial-volume blur: a Gaussian of at least ``sigma_mm``, and at least 0.5 voxel, along each axis."""
    sigma = np.maximum(sigma_mm / spacing, 0.5)
    return ndimage.gaussian_filter(image, sigma).astype(np.float32)


def _rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude MRI noise: |image + complex Gaussian noise of standard deviation ``sigma`` per channel|."""
    real = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# LGE-MRI left atrium


@dataclass(frozen=True)
class _LAStyle:
    """Ranges of the per-case draws of the left atrium phantom, and the fixed values that ``"la_varied"`` varies.

    The defaults are the ``"la"`` kind's (its draws, in the same order, so its volumes are unchanged); ranges are
    ``(low, high)`` of ``rng.uniform`` (of ``rng.integers`` for ``num_veins``); the last three fields are values,
    neutral by default.
    """

    size: tuple[float, float] = (0.85, 1.15)
    position_mm: tuple[float, float, float] = (7.0, 7.0, 6.0)
    vein_radius_mm: tuple[float, float] = (3.5, 5.0)
    vein_length_mm: tuple[float, float] = (18.0, 28.0)
    blood: tuple[float, float] = (0.55, 0.9)
    tissue: tuple[float, float] = (0.15, 0.32)
    lookalike: tuple[float, float] = (0.85, 1.12)
    bias: tuple[float, float] = (0.1, 0.3)
    noise: tuple[float, float] = (0.03, 0.08)
    num_veins: tuple[int, int] = (2, 5)  # rng.integers(low, high): 2-4 veins
    elongation: float = 1.0  # the atrium's long axis times this, the other two divided by its square root
    gamma: float = 1.0  # intensity response: image ** gamma (relative to the blood pool's level)
    lookalike_spread: float = 0.0  # extra contrast of each look-alike pool: x exp(+-spread), drawn per pool
    lookalike_darker: float = 0.0  # probability that a look-alike pool is darker than the atrium (1 / its contrast)


_LA_STYLE = _LAStyle()


def _left_atrium_varied(rng: np.random.Generator, canvas: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    """The left atrium phantom with the variation of a real cohort between cases (``kind="la_varied"``).

    Drawn per case, wider than ``"la"``: chamber size (0.8-1.2) and elongation (0.8-1.3 along the long axis),
    position (+-14 mm in-plane, +-9 mm through-plane), pulmonary vein calibre (2-6.5 mm radius) and length; the
    blood pool and tissue levels (blood at least 1.8 times tissue, so the atrium stays visible), the contrast between
    the atrium and the unlabeled look-alike pools that touch it (ventricle, aorta, pulmonary artery: each pool on its
    own 1.15-1.45 times brighter or, with probability 1/2, as much darker, so that their boundary has an edge),
    bias field strength (0.05-0.5), noise (2-10 % of the blood level) and a non-linear intensity response (gamma
    0.6-1.6).
    Voxel spacing varies too (see :func:`make_phantom`). Made so that a few labeled cases do not cover the family
    while many unlabeled ones do: the label-limited benchmark of ``scripts/quality.py --protocol label_limited``.
    """
    style = _LAStyle(
        size=(0.8, 1.2),
        position_mm=(14.0, 14.0, 9.0),
        vein_radius_mm=(2.0, 6.5),
        vein_length_mm=(12.0, 32.0),
        blood=(0.5, 0.9),
        tissue=(0.1, 0.28),
        lookalike=(1.15, 1.45),
        bias=(0.05, 0.5),
        noise=(0.02, 0.1),
        elongation=float(rng.uniform(0.8, 1.3)),
        gamma=float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))),
        lookalike_darker=0.5,
    )
    return _left_atrium(rng, canvas, style)


def _left_atrium(rng: np.random.Generator, canvas: _Canvas, style: _LAStyle = _LA_STYLE) -> tuple[np.ndarray, np.ndarray]:
    """LGE-MRI-like left atrium with pulmonary veins (label) among unlabeled bright blood pools.

    Heart frame: columns of ``frame`` are the patient's left, posterior and superior directions (-X, -Y, +Z in RAS
    before a random rotation). Gaps between the atrium and its neighbours are drawn from about -1.5 to 2 mm: negative
    means they overlap, and the overlap belongs to the neighbour (the label is cut there, no edge in the image).
    ``style`` gives the ranges of the per-case draws (the ``"la"`` kind's by default).
    """
    s = canvas.scale("la")
    pts = canvas.points
    frame = _RAS_TO_LPS @ _random_rotation(rng, 20.0)
    left, posterior, superior = frame.T

    def heart(x: float, y: float, z: float) -> np.ndarray:
        return frame @ _unit([x, y, z])

    size = rng.uniform(*style.size)
    px, py, pz = style.position_mm
    center = np.array([rng.uniform(-px, px), rng.uniform(-py, py), rng.uniform(-pz, pz)]) * s
    stretch = np.array([style.elongation, 1.0 / np.sqrt(style.elongation), 1.0 / np.sqrt(style.elongation)])
    atrium = _Ellipsoid(
        center,
        np.array([rng.uniform(20, 25), rng.uniform(14, 18), rng.uniform(15, 19)]) * s * size * stretch,
        frame @ _random_rotation(rng, 15.0),
        _sphere_field(rng, rng.uniform(0.1, 0.2)),
    )

    # pulmonary veins: 2-4 trunks leaving the posterior wall to the left and right, labeled with the atrium
    num_veins = int(rng.integers(*style.num_veins))
    sides = [1.0, -1.0] + ([1.0, -1.0] if num_veins == 4 else [float(rng.choice([1.0, -1.0]))] * (num_veins - 2))
    heights = {1.0: [1.0, -1.0], -1.0: [1.0, -1.0]}
    veins = []
    for side in sides:
        height = heights[side].pop(int(rng.integers(len(heights[side])))) if num_veins > 2 else rng.choice([1.0, -1.0])
        direction = heart(side * rng.uniform(0.55, 0.95), rng.uniform(0.45, 0.9), height * rng.uniform(0.1, 0.5))
        ostium = atrium.surface_point(direction)
        inner = center + (ostium - center) * 0.6
        length = rng.uniform(*style.vein_length_mm) * s
        bend = np.cross(direction, rng.normal(size=3))
        bend = bend / np.linalg.norm(bend) * rng.uniform(2, 6) * s
        radius = rng.uniform(*style.vein_radius_mm) * s
        veins.append(
            _Tube(
                [inner, ostium, ostium + direction * length * 0.5 + bend * 0.4, ostium + direction * length + bend],
                [radius * 1.5, radius * 1.2, radius, radius * rng.uniform(0.6, 0.85)],
            )
        )
    if rng.random() < 0.8:  # left atrial appendage: a curled finger to the front, left and up, labeled too
        direction = heart(rng.uniform(0.5, 0.9), -rng.uniform(0.5, 0.9), rng.uniform(0.2, 0.6))
        base = atrium.surface_point(direction)
        length = rng.uniform(12, 20) * s
        curl = np.cross(direction, superior)
        curl = curl / (np.linalg.norm(curl) + 1e-9) * rng.uniform(3, 7) * s
        width = rng.uniform(4.5, 6.5) * s
        veins.append(
            _Tube(
                [
                    center + (base - center) * 0.7,
                    base,
                    base + direction * length * 0.6 + curl * 0.5,
                    base + direction * length + curl,
                ],
                [width * 1.3, width, width * 0.8, width * 0.45],
            )
        )
    target_sd = atrium.signed_distance(pts)
    for vein in veins:
        target_sd = np.minimum(target_sd, vein.signed_distance_on(canvas))
    target_points = pts[:, target_sd < 0]

    # left ventricle: a large blood pool below, in front and to the left, across the (invisible) mitral plane
    lv_direction = heart(rng.uniform(0.1, 0.6), -rng.uniform(0.6, 1.0), -rng.uniform(0.5, 0.9))
    lv_axes = np.array([rng.uniform(20, 26), rng.uniform(18, 24), rng.uniform(26, 34)]) * s * size
    ventricle = _Ellipsoid(
        atrium.surface_point(lv_direction) + lv_direction * lv_axes.mean(),
        lv_axes,
        frame @ _random_rotation(rng, 25.0),
        _sphere_field(rng, 0.06),
    )
    ventricle.center = ventricle.center + _push_apart(
        ventricle.signed_distance, target_points, lv_direction, rng.uniform(-1.5, 1.0) * s
    )
    lv_sd = ventricle.signed_distance(pts)

    # aortic arch: ascending in front of the atrium, over its roof, descending behind it on the left
    r_ascending, r_descending = rng.uniform(11, 14) * s, rng.uniform(9, 12) * s
    arch_height = rng.uniform(12, 24) * s
    gap_front, gap_back = rng.uniform(-1.0, 2.0) * s, rng.uniform(-1.0, 2.0) * s
    arch_points, arch_radii = [], []
    for angle in np.deg2rad([-70, -35, 0, 40, 90, 140, 180, 215, 250]):
        weight = (angle + np.deg2rad(70)) / np.deg2rad(320)
        radius = r_ascending + (r_descending - r_ascending) * weight
        lateral = -0.35 + 0.8 * weight
        direction = frame @ _unit([lateral, -np.cos(angle), np.sin(angle)])
        clearance = (gap_front + (gap_back - gap_front) * weight) + radius + arch_height * max(np.sin(angle), 0.0) ** 2
        arch_points.append(atrium.surface_point(direction) + direction * clearance)
        arch_radii.append(radius)
    arch_points[0] = arch_points[0] - superior * 10 * s
    arch_points.append(arch_points[-1] - superior * 45 * s)
    arch_radii.append(r_descending)
    aorta = _Tube(arch_points, arch_radii)

    # pulmonary artery: trunk in front on the left, right branch running over the atrial roof under the arch
    r_trunk, r_branch = rng.uniform(10, 13) * s, rng.uniform(7, 9) * s
    gap_roof = rng.uniform(-1.0, 2.0) * s
    trunk_direction = heart(0.55, -1.0, rng.uniform(0.0, 0.5))
    roof_direction = heart(rng.uniform(-0.2, 0.2), rng.uniform(-0.3, 0.1), 1.0)
    right_direction = heart(-1.0, rng.uniform(-0.1, 0.4), rng.uniform(0.3, 0.6))
    trunk = atrium.surface_point(trunk_direction) + trunk_direction * (r_trunk + rng.uniform(4, 12) * s)
    roof = atrium.surface_point(roof_direction) + roof_direction * (r_branch + gap_roof)
    right = atrium.surface_point(right_direction) + right_direction * (r_branch + gap_roof + 2 * s)
    pa_points = [trunk - superior * 15 * s, trunk, roof, right, right - left * 30 * s + posterior * 8 * s]
    pulmonary_artery = _Tube(pa_points, [r_trunk, r_trunk, r_branch, r_branch, r_branch * 0.8])
    lookalike_sd = np.minimum(
        lv_sd, np.minimum(aorta.signed_distance_on(canvas), pulmonary_artery.signed_distance_on(canvas))
    )

    # intensities: variable contrast between cases, similar brightness for every blood pool
    blood = rng.uniform(*style.blood)
    tissue = rng.uniform(*style.tissue)
    image = (tissue * (1.0 + 0.15 * canvas.noise_texture(rng, 3.0))).astype(np.float32)
    for side in (1.0, -1.0):  # dark lungs on both sides, behind
        lung = _Ellipsoid(
            center + frame @ np.array([side * rng.uniform(52, 62), rng.uniform(10, 20), 0.0]) * s,
            np.array([rng.uniform(28, 34), rng.uniform(40, 50), 70]) * s,
            frame @ _random_rotation(rng, 10.0),
        )
        _paint(image, _occupancy(lung.signed_distance(pts), 3.0), rng.uniform(0.02, 0.07))
    for _ in range(int(rng.integers(3, 7))):  # bright fat
        fat = _Ellipsoid(
            rng.uniform(-0.4, 0.4, 3) * canvas.extent,
            rng.uniform(3, 8, 3) * s,
            _random_rotation(rng, 90.0),
        )
        _paint(image, _occupancy(fat.signed_distance(pts)) * (target_sd > 3 * s), blood * rng.uniform(0.6, 0.95))
    myocardium_thickness = rng.uniform(7, 11) * s
    away_from_atrium = np.clip((target_sd - 2 * s) / (4 * s), 0.0, 1.0)
    myocardium = _occupancy(lv_sd - myocardium_thickness) * away_from_atrium
    _paint(image, myocardium, rng.uniform(0.06, 0.18))
    if rng.random() < 0.7:  # patchy enhancement of the atrial wall (fibrosis), outside the label
        wall = _occupancy(target_sd - 2.2 * s) * (1.0 - _occupancy(target_sd - 0.3 * s))
        patches = (canvas.noise_texture(rng, 4.0) > rng.uniform(0.0, 0.8)).astype(np.float32)
        _paint(image, wall * patches, blood * rng.uniform(0.6, 1.0))
    flow = 1.0 + 0.06 * canvas.noise_texture(rng, 6.0)
    _paint(image, _occupancy(target_sd), blood * rng.uniform(0.95, 1.05) * flow)
    for lookalike in (lv_sd, aorta.signed_distance_on(canvas), pulmonary_artery.signed_distance_on(canvas)):
        contrast = rng.uniform(*style.lookalike)
        if style.lookalike_spread:
            contrast *= np.exp(rng.uniform(-style.lookalike_spread, style.lookalike_spread))
        if style.lookalike_darker and rng.random() < style.lookalike_darker:
            contrast = 1.0 / contrast
        _paint(image, _occupancy(lookalike), blood * contrast * flow)

    image = _blur(image, canvas.spacing, 0.6)
    if style.gamma != 1.0:  # non-linear intensity response, relative to the blood level (which stays put)
        image = (blood * np.power(np.maximum(image, 0.0) / blood, style.gamma)).astype(np.float32)
    image *= np.exp(rng.uniform(*style.bias) * _smooth_field(rng, pts, (150.0, 400.0)))
    image = _rician(rng, image, blood * rng.uniform(*style.noise))
    image *= rng.uniform(0.8, 1.25)
    label = (target_sd < 0) & (lookalike_sd >= 0)
    return image, label


# ---------------------------------------------------------------------------------------------------------------------
# CT pancreas


def _pancreas(rng: np.random.Generator, canvas: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    """CT-like pancreas (label) between bowel, stomach and veins of similar density, in a soft-tissue window.

    Frame: columns of ``frame`` are the patient's left, posterior and superior directions (-X, -Y, +Z in RAS before
    a random rotation).
    """
    s = canvas.scale("pancreas")
    pts = canvas.points
    frame = _RAS_TO_LPS @ _random_rotation(rng, 15.0)
    left, posterior, superior = frame.T
    center = rng.uniform(-5, 5, 3) * s
    size = rng.uniform(0.85, 1.15)

    # the organ: head on the right, neck, body and tail rising to the left; lobulated surface
    nominal = np.array([[-20, 0, -6], [-8, -6, 0], [6, -3, 4], [20, 5, 9]], dtype=np.float64)
    control = [center + frame @ ((p + rng.uniform(-4, 4, 3)) * s * size) for p in nominal]
    radii = np.array([rng.uniform(8, 11), rng.uniform(4.5, 6.5), rng.uniform(5.5, 7.5), rng.uniform(4, 6)]) * s * size
    organ = _Tube(control, radii)
    lobulation = canvas.noise_texture(rng, 2.0)
    organ_sd = organ.signed_distance_on(canvas) - rng.uniform(1.0, 2.0) * s * lobulation
    components, count = ndimage.label(organ_sd < 0)
    if count > 1:  # lobulation can split off islands: keep the organ in one piece
        largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones_like(organ_sd), components, range(1, count + 1))))
        organ_sd = np.where((components > 0) & (components != largest), np.float32(0.5), organ_sd)
    organ_points = pts[:, organ_sd < 0]

    hu = {
        "fat": rng.uniform(-110, -80),
        "pancreas": rng.uniform(30, 70),
        "vein": rng.uniform(110, 180),
        "artery": rng.uniform(160, 260),
        "kidney": rng.uniform(140, 220),
    }
    image = (hu["fat"] + 15.0 * canvas.noise_texture(rng, 3.0)).astype(np.float32)

    # context: aorta and inferior vena cava behind, left kidney behind the tail
    for x, r, vessel in (
        (rng.uniform(0, 6), rng.uniform(8, 10), "artery"),
        (rng.uniform(-22, -16), rng.uniform(8, 11), "vein"),
    ):
        base = center + frame @ (np.array([x, rng.uniform(18, 24), 0.0]) * s)
        tube = _Tube([base - superior * 60 * s, base, base + superior * 60 * s], [r * s] * 3)
        _paint(image, _occupancy(tube.signed_distance_on(canvas)), hu[vessel])
    kidney = _Ellipsoid(
        control[-1] + frame @ (np.array([rng.uniform(5, 12), rng.uniform(16, 22), rng.uniform(-12, -4)]) * s),
        np.array([11, 9, 20]) * s * size,
        frame @ _random_rotation(rng, 20.0),
    )
    _paint(image, _occupancy(kidney.signed_distance(pts)), hu["kidney"])

    lookalikes = []  # (signed distance, CT number)
    # duodenum: a C-loop hugging the head
    head = control[0]
    duodenum_radius = rng.uniform(6, 9) * s
    loop = []
    for angle in np.deg2rad([80, 130, 180, 230, 280]):
        direction = frame @ _unit([np.cos(angle) * 0.9 + 0.1, rng.uniform(-0.2, 0.2), np.sin(angle)])
        loop.append(head + direction * (radii[0] + duodenum_radius + rng.uniform(0.0, 2.5) * s))
    duodenum = _Tube(loop, [duodenum_radius] * len(loop))
    duodenum = duodenum.shifted(
        _push_apart(duodenum.signed_distance, organ_points, frame @ _unit([-1, 0, 0]), rng.uniform(0.0, 2.0) * s)
    )
    lookalikes.append((duodenum.signed_distance_on(canvas), hu["pancreas"] + rng.uniform(-20, 15)))
    # stomach: a large pouch in front of the body
    stomach = _Ellipsoid(
        center + frame @ (np.array([12, -30, 10]) * s),
        np.array([rng.uniform(22, 28), rng.uniform(12, 16), rng.uniform(16, 22)]) * s,
        frame @ _random_rotation(rng, 20.0),
        _sphere_field(rng, 0.1),
    )
    stomach.center = stomach.center + _push_apart(
        stomach.signed_distance, organ_points, -posterior, rng.uniform(0.5, 4.0) * s
    )
    lookalikes.append((stomach.signed_distance(pts), hu["pancreas"] + rng.uniform(-25, 5)))
    # bowel loops: winding tubes of similar density, some against the organ
    for _ in range(int(rng.integers(3, 6))):
        start = center + rng.uniform(-0.45, 0.45, 3) * canvas.extent
        steps = rng.normal(size=(4, 3))
        steps = steps / np.linalg.norm(steps, axis=1, keepdims=True) * 16 * s
        points = [start]
        for step in steps:
            points.append(points[-1] + step)
        bowel = _Tube(points, [rng.uniform(5, 9) * s] * len(points))
        away = np.mean(points, axis=0) - organ_points.mean(1) if organ_points.shape[1] else rng.normal(size=3)
        bowel = bowel.shifted(_push_apart(bowel.signed_distance, organ_points, away, rng.uniform(0.0, 4.0) * s))
        lookalikes.append((bowel.signed_distance_on(canvas), hu["pancreas"] + rng.uniform(-25, 25)))
    # splenic vein along the back of body and tail, superior mesenteric vein down from the neck
    vein_radius = rng.uniform(3, 4.5) * s
    splenic = _Tube(
        [p + posterior * (r + vein_radius + 0.5 * s) for p, r in zip(control[1:], radii[1:])], [vein_radius] * 3
    )
    neck_back = control[1] + posterior * (radii[1] + vein_radius)
    mesenteric = _Tube(
        [neck_back, neck_back - superior * 30 * s, neck_back - superior * 60 * s], [vein_radius * 1.2] * 3
    )
    for vein in (splenic, mesenteric):
        lookalikes.append((vein.signed_distance_on(canvas), hu["vein"]))

    for sd, value in lookalikes:
        _paint(image, _occupancy(sd), value + 10.0 * canvas.noise_texture(rng, 2.0))
    texture = canvas.noise_texture(rng, 1.5)
    fatty = np.clip(texture - rng.uniform(0.8, 1.6), 0.0, 1.0)  # fat between the lobules
    organ_value = hu["pancreas"] + 12.0 * texture + fatty * (hu["fat"] - hu["pancreas"])
    lookalike_sd = np.min(np.stack([sd for sd, _ in lookalikes]), axis=0)
    _paint(image, _occupancy(organ_sd) * (lookalike_sd > 0), organ_value)

    image = _blur(image, canvas.spacing, 0.6)
    image += rng.normal(0.0, rng.uniform(8, 20), image.shape).astype(np.float32)
    low, high = _CT_WINDOW_HU
    image = np.clip((image - low) / (high - low), 0.0, 1.0)
    label = (organ_sd < 0) & (lookalike_sd >= 0)
    return image, label


# ---------------------------------------------------------------------------------------------------------------------
# FLAIR brain tumour


def _brain_tumour(rng: np.random.Generator, canvas: _Canvas) -> tuple[np.ndarray, np.ndarray]:
    """FLAIR-like brain with a bright irregular lesion (whole tumour label) and unlabeled hyperintensities."""
    s = canvas.scale("brats")
    pts = canvas.points
    rotation = _random_rotation(rng, 10.0)
    brain = _Ellipsoid(
        rng.uniform(-2, 2, 3) * s,
        np.array([rng.uniform(29, 33), rng.uniform(34, 37), rng.uniform(28, 32)]) * s,
        rotation,
        _sphere_field(rng, 0.05),
    )
    brain_sd = brain.signed_distance(pts)
    inside = brain_sd < 0

    # tissue: white matter, a cortical ribbon with dark sulci, deep grey matter
    white, grey, csf = 1.0, rng.uniform(1.1, 1.25), rng.uniform(0.2, 0.35)
    image = np.zeros(canvas.shape, dtype=np.float32)
    _paint(image, _occupancy(brain_sd), white * (1.0 + 0.04 * canvas.noise_texture(rng, 2.0)))
    cortex = _occupancy(brain_sd + rng.uniform(3, 4.5) * s)
    _paint(image, _occupancy(brain_sd) * (1.0 - cortex), grey)
    sulci = np.clip(np.abs(canvas.noise_texture(rng, 2.5)) * -4.0 + 1.0, 0.0, 1.0)
    _paint(image, _occupancy(brain_sd) * (1.0 - cortex) * sulci, csf)
    for side in (1.0, -1.0):
        nucleus = _Ellipsoid(
            brain.center + rotation @ (np.array([side * 9, 2, -3]) * s), np.array([5, 8, 6]) * s, rotation
        )
        _paint(image, _occupancy(nucleus.signed_distance(pts)), grey * 0.97)

    # lateral ventricles: curved tubes either side of the midline, dark CSF
    ventricle_sd = np.full(canvas.shape, _FAR_MM, dtype=np.float32)
    for side in (1.0, -1.0):
        x = side * rng.uniform(4, 6)
        path = [[x, -20, 2], [x * 1.3, -8, 8], [x * 1.4, 6, 8], [x * 2.0, 16, 2], [x * 2.6, 18, -6]]
        tube = _Tube(
            [brain.center + rotation @ (np.array(p) * s) for p in path],
            np.array([rng.uniform(3, 4.5), 4, 3.5, 3, 2]) * s,
        )
        ventricle_sd = np.minimum(ventricle_sd, tube.signed_distance_on(canvas))

    # lesion: an irregular blob away from the brain surface
    lesion_axes = rng.uniform(7, 14, 3) * s
    lesion_center = brain.center + rotation @ (rng.uniform(-0.5, 0.5, 3) * brain.semi_axes)
    lesion = _Ellipsoid(
        lesion_center, lesion_axes, _random_rotation(rng, 90.0), _sphere_field(rng, rng.uniform(0.15, 0.3))
    )
    lesion_sd = lesion.signed_distance(pts) - 1.5 * s * canvas.noise_texture(rng, 2.0)
    lesion_sd = np.maximum(lesion_sd, brain_sd + 3 * s)  # keep the lesion inside the brain
    core = _Ellipsoid(lesion_center, lesion_axes * rng.uniform(0.3, 0.6), lesion.rotation, _sphere_field(rng, 0.25))

    # unlabeled look-alikes: caps at the ventricular horns, a bright rim on part of the surface, punctate spots
    hyper = rng.uniform(1.5, 1.9)
    horns = np.abs(_dot(_shift(pts, brain.center), rotation[:, 1])) > 10 * s
    caps = _occupancy(ventricle_sd - rng.uniform(2.5, 4.5) * s) * horns
    _paint(image, caps, hyper * rng.uniform(0.95, 1.2))
    _paint(image, _occupancy(ventricle_sd), csf)
    rim = _occupancy(brain_sd) * (1.0 - _occupancy(brain_sd + rng.uniform(1.5, 3.0) * s, 1.5))
    rim *= _smooth_field(rng, pts, (40.0, 90.0)) > rng.uniform(-0.2, 0.6)
    _paint(image, rim, hyper * rng.uniform(0.95, 1.25))
    for _ in range(int(rng.integers(2, 7))):
        spot_center = brain.center + rotation @ (rng.uniform(-0.6, 0.6, 3) * brain.semi_axes)
        spot = _Ellipsoid(spot_center, rng.uniform(1.5, 3.0, 3) * s, _random_rotation(rng, 90.0))
        _paint(image, _occupancy(spot.signed_distance(pts)) * (lesion_sd > 2 * s), hyper * rng.uniform(0.95, 1.25))

    edema = hyper * rng.uniform(0.9, 1.1) * (1.0 + 0.08 * canvas.noise_texture(rng, 2.0))
    _paint(image, _occupancy(lesion_sd), edema)
    _paint(image, _occupancy(core.signed_distance(pts)) * _occupancy(lesion_sd), edema * rng.uniform(0.6, 1.15))

    image = _blur(image, canvas.spacing, 0.6)
    image *= np.exp(rng.uniform(0.08, 0.2) * _smooth_field(rng, pts, (120.0, 300.0)))
    image = _rician(rng, image, rng.uniform(0.03, 0.07))
    brain_voxels = image[inside]
    image = np.where(inside, (image - brain_voxels.mean()) / (brain_voxels.std() + 1e-8), 0.0).astype(np.float32)
    label = (lesion_sd < 0) & inside
    return image, label
