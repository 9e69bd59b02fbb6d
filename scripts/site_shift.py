"""Phantoms from two "sites": the labeled cases from one, the unlabeled, validation and test cases from both.

Under the label-limited protocol (``la_varied`` phantoms, 2 labeled of 40) the unlabeled volumes add nothing
measurable to the mean Dice over a control that reads none of them, and about +0.10 test Dice on the cases whose
atrium is brighter than the pools around it (target brightness >= 0.9, as :func:`collapse_cases.target_brightness`
measures it; 6 of 96 test cases, 5 of 5 seeds at the bundle's real width, session 35): the cases that the 2 dim
labeled atria do not teach. Those are about 8.5 % of the family, so a mean over its cases hides them.

This dataset keeps the generator and draws its cases from the family's own streams
(:func:`semiseg.data.phantom_case_seed`), keeping a case by its target brightness: the labeled cases from the *dim
site* (brightness below ``threshold``), and the unlabeled, validation and test cases with ``bright_fraction`` of
them from the *bright site*, as when one hospital labels its scans and the cohort holds another's too. The mean
then asks what the unlabeled volumes add where the labeled cases do not reach. The selection reads each case's
image and label once, before any run; the training list starts with the labeled cases, so a bundle's
``num_labeled`` takes them. Written once per folder: a folder whose ``datalist.json`` records the same arguments
and holds every file is reused.

Usage (from the repository root)::

    python scripts/benchmark.py quality --protocol site_shift ...       (the protocol that writes it)
    python scripts/site_shift.py --out_dir output/site_shift/phantoms    (the dataset alone)
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from collapse_cases import target_brightness
from semiseg.arguments import check_int, check_number
from semiseg.data import make_phantom, phantom_case_seed, save_volume, write_datalist

__all__ = ["SITE_SHIFT_VERSION", "split_quota", "draw_split", "write_site_shift_dataset"]

logger = logging.getLogger(__name__)

#: bump when the selection rule changes, so that datasets written by an earlier rule are written again
SITE_SHIFT_VERSION = 2  # 2: test files numbered after the validation ones (1 reused the training numbers)


def split_quota(count: int, bright_fraction: float) -> dict[str, int]:
    """``{"dim": n, "bright": m}`` with ``m = round(count * bright_fraction)`` and ``n + m = count``."""
    bright = int(round(count * bright_fraction))
    return {"dim": count - bright, "bright": bright}


def _draw(kind: str, case_seed: int, shape: tuple[int, int, int] | None) -> tuple:
    image, label, affine = make_phantom(kind, case_seed, shape)
    return case_seed, image, label, affine, target_brightness(image, label)


def _draws(kind: str, case_seeds: list[int], shape: tuple[int, int, int] | None, workers: int) -> Iterator[tuple]:
    """The draws of ``case_seeds`` in order, ``workers`` processes computing a batch of ``4 * workers`` at a time."""
    if workers == 1:
        yield from (_draw(kind, seed, shape) for seed in case_seeds)
        return
    with ProcessPoolExecutor(workers) as pool:
        for start in range(0, len(case_seeds), 4 * workers):
            batch = case_seeds[start : start + 4 * workers]
            yield from pool.map(_draw, [kind] * len(batch), batch, [shape] * len(batch))


def draw_split(
    out_dir: Path,
    split: str,
    stream_seed: int,
    quota: dict[str, int],
    threshold: float,
    kind: str = "la_varied",
    shape: tuple[int, int, int] | None = None,
    max_draws: int = 5000,
    first_number: int = 0,
    workers: int = 1,
) -> list[dict]:
    """Draw the ``split`` stream's cases in order and write those that fill ``quota`` (dim and bright site).

    Args:
        out_dir: the dataset folder; images go to ``imagesTr`` (``imagesTs`` for the test split), labels beside.
        split: ``"train"``, ``"validation"`` or ``"test"``: the stream of :func:`phantom_case_seed`.
        stream_seed: the dataset seed of the stream.
        quota: cases to keep per site, ``{"dim": n, "bright": m}``.
        threshold: target brightness at and above which a case is of the bright site.
        kind: phantom kind.
        shape: volume shape; the kind's default when None.
        max_draws: cases drawn at most before giving up.
        first_number: the number of the first file written (``<kind>_site_NNN.nii.gz``), so that splits sharing a
            folder do not collide.
        workers: processes drawing cases ahead, in batches; the cases kept do not depend on it.

    Returns:
        The datalist entries of the kept cases in stream order, each with ``image``, ``label``, ``site``,
        ``brightness`` and ``case_seed``.

    Raises:
        ValueError: ``max_draws`` cases did not fill the quota.
    """
    folders = ("imagesTs", "labelsTs") if split == "test" else ("imagesTr", "labelsTr")
    left, entries = dict(quota), []
    if not any(left.values()):
        return entries
    draws = _draws(kind, [phantom_case_seed(stream_seed, split, i) for i in range(max_draws)], shape, workers)
    drawn = 0
    for case_seed, image, label, affine, brightness in draws:
        drawn += 1
        site = "bright" if brightness >= threshold else "dim"
        if not left[site]:
            continue
        left[site] -= 1
        name = f"{kind}_site_{first_number + len(entries):03d}.nii.gz"
        save_volume(image, out_dir / folders[0] / name, affine=affine)
        save_volume(label, out_dir / folders[1] / name, affine=affine)
        entries.append({"image": f"{folders[0]}/{name}", "label": f"{folders[1]}/{name}", "site": site,
                        "brightness": round(brightness, 4), "case_seed": case_seed})  # fmt: skip
        if len(entries) % 20 == 0:
            logger.info("%s: %d of %d cases kept, %d drawn", split, len(entries), sum(quota.values()), drawn)
        if not any(left.values()):
            break  # no draw past the last case kept
    draws.close()
    logger.info("%s: %d cases kept of %d drawn", split, len(entries), drawn)
    if any(left.values()):
        raise ValueError(f"{split}: {max_draws} draws left {left} of the quota {quota} unfilled; raise max_draws.")
    return entries


def write_site_shift_dataset(
    out_dir: str | Path,
    num_labeled: int = 2,
    num_unlabeled: int = 38,
    num_validation: int = 24,
    num_test: int = 96,
    bright_fraction: float = 0.5,
    threshold: float = 0.9,
    seed: int = 0,
    test_seed: int = 2,
    kind: str = "la_varied",
    shape: tuple[int, int, int] | None = None,
    workers: int = 1,
) -> Path:
    """Write the two-site dataset and its ``datalist.json`` (training list: the labeled cases first), or reuse it.

    Args:
        out_dir: output folder.
        num_labeled: labeled training cases, all of the dim site (the first of the training list).
        num_unlabeled: further training cases (labels written too, for a fully supervised bound), ``bright_fraction``
            of them of the bright site.
        num_validation: validation cases, ``bright_fraction`` bright.
        num_test: test cases, ``bright_fraction`` bright.
        bright_fraction: share of the bright site in every list but the labeled cases, in [0, 1].
        threshold: target brightness at and above which a case is of the bright site (0.9: session 31's).
        seed: dataset seed of the training and validation streams.
        test_seed: dataset seed of the test stream (2: a stream no protocol has read).
        kind: phantom kind.
        shape: volume shape; the kind's default when None.
        workers: processes drawing cases (one process took about 8 min for the protocol's set on this project's CPU
            machines); the dataset does not depend on it.

    Returns:
        Path of ``datalist.json``.
    """
    for name, value, low in (("num_labeled", num_labeled, 1), ("num_unlabeled", num_unlabeled, 0),
                             ("num_validation", num_validation, 0), ("num_test", num_test, 0), ("seed", seed, 0),
                             ("test_seed", test_seed, 0)):  # fmt: skip
        check_int(value, name, low)
    check_int(workers, "workers", 1)
    check_number(bright_fraction, "bright_fraction", 0.0, 1.0)
    check_number(threshold, "threshold", 0.0, low_open=True)
    out = Path(out_dir)
    arguments = {"version": SITE_SHIFT_VERSION, "num_labeled": num_labeled, "num_unlabeled": num_unlabeled,
                 "num_validation": num_validation, "num_test": num_test, "bright_fraction": bright_fraction,
                 "threshold": threshold, "seed": seed, "test_seed": test_seed, "kind": kind,
                 "shape": list(shape) if shape is not None else None}  # fmt: skip
    datalist_path = out / "datalist.json"
    if datalist_path.is_file():
        previous = json.loads(datalist_path.read_text())
        if "site_shift" not in previous:
            raise ValueError(f"{datalist_path} was not written by write_site_shift_dataset; choose another out_dir.")
        entries = [e for key in ("training", "validation", "test") for e in previous[key]]
        files = [out / e[k] for e in entries for k in ("image", "label")]
        if previous["site_shift"] == arguments and all(f.is_file() for f in files):
            logger.info("site-shift dataset in %s is up to date; nothing to write", out)
            return datalist_path
        for stale in files:  # another selection's cases: none of them may linger beside the new ones
            stale.unlink(missing_ok=True)
    start = time.perf_counter()
    quota = split_quota(num_unlabeled, bright_fraction)
    quota["dim"] += num_labeled
    training = draw_split(out, "train", seed, quota, threshold, kind, shape, workers=workers)
    # the labeled cases: the first num_labeled of the dim site, moved to the front of the list
    first_dim = [i for i, entry in enumerate(training) if entry["site"] == "dim"][:num_labeled]
    training = [training[i] for i in first_dim] + [e for i, e in enumerate(training) if i not in first_dim]
    validation = draw_split(out, "validation", seed, split_quota(num_validation, bright_fraction), threshold, kind,
                            shape, first_number=len(training), workers=workers)  # fmt: skip
    # numbered after the validation cases: every case's name is unique, as the per-case tables key on it
    test = draw_split(out, "test", test_seed, split_quota(num_test, bright_fraction), threshold, kind, shape,
                      first_number=len(training) + len(validation), workers=workers)  # fmt: skip
    pairs = {key: [{"image": e["image"], "label": e["label"]} for e in entries]
             for key, entries in (("training", training), ("validation", validation), ("test", test))}  # fmt: skip
    sites = {e["image"]: {k: e[k] for k in ("site", "brightness", "case_seed")} for e in training + validation + test}
    path = write_datalist(
        out, **pairs, name=f"{kind} site-shift phantoms",
        description="synthetic phantoms of two sites (labeled cases from the dim one), generated, not patient data",
        labels={"0": "background", "1": "left atrium"}, numTraining=num_labeled + num_unlabeled, numTest=num_test,
        site_shift=arguments, sites=sites,
    )  # fmt: skip
    logger.info("wrote the site-shift dataset to %s in %.0f s", out, time.perf_counter() - start)
    return path


if __name__ == "__main__":
    import fire

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    fire.Fire(write_site_shift_dataset)
