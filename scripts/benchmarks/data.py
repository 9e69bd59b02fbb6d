"""``data``: batches per second of the LA bundle's training data pipeline vs training iterations per second."""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from semiseg.arguments import check_int

from .builder import TrainingSetup, batch_to, bundle_parser
from .loops import engine_iterations
from .options import check_patch, check_positive, device_of, triple
from .report import BenchmarkReport
from .timing import median, precision_of, run_config, run_interleaved, sync

__all__ = ["run_data"]


def _cycle(loader: Any) -> Iterator[Any]:
    """Batches of ``loader`` for ever, restarting it when it ends (as the trainer does)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the data loader gives no batch (fewer cases than the batch size with drop_last?).")


def run_data(
    device: str = "cpu",
    repeats: int = 5,
    batches: int = 8,
    num_workers: int | None = None,
    n_filters: int | None = None,
    patch: int | str | Sequence[int] | None = None,
    overrides: dict | str | None = None,
    output_dir: str | None = None,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Batches per second of the LA bundle's training data pipeline vs training iterations per second.

    Builds ``train#dataloader`` and ``train#unlabeled_dataloader`` (and ``network``, ``objective``, ``optimizer``)
    with ``monai.bundle.ConfigParser`` from ``bundles/la/configs/train.json`` + ``demo.json``; the demo overlay
    writes its phantoms under ``output_dir`` (default: a temporary folder, removed afterwards). One "batch" is what
    one iteration consumes: a labeled and an unlabeled batch. Variants, interleaved: drawing ``batches`` batches
    from the loaders, and ``batches`` iterations of ``SemiSupervisedTrainer`` (no handlers) on batches drawn from
    the same loaders beforehand, so training is timed without data loading. Goal: data rate >= 3x training rate.

    Args:
        num_workers, n_filters, patch: override the demo's values (0, 4, 48x48x32; 64x64x32 before LA 0.4.12).
        overrides: more config overrides, ``{"id": value}``, e.g. ``{"num_labeled": 8}``.
        output_dir: bundle output folder (phantoms are written to ``<output_dir>/phantoms``, reused when present).

    Returns:
        the JSON object printed last.
    """
    check_positive(repeats=repeats)
    dev = device_of(device, threads)
    check_positive(batches=batches)
    extra = json.loads(overrides) if isinstance(overrides, str) else dict(overrides or {})
    if num_workers is not None:
        check_int(num_workers, "num_workers", 0)
        extra["num_workers"] = num_workers
    if n_filters is not None:
        check_positive(n_filters=n_filters)
        extra["n_filters"] = n_filters
    if patch is not None:
        patch_t = triple(patch, "patch")
        check_patch(patch_t)
        extra["patch_size"] = list(patch_t)
    with tempfile.TemporaryDirectory(prefix="semiseg_bench_") as scratch:
        run = {"output_dir": output_dir or scratch, "device": f"$torch.device('{dev}')"}
        parser = bundle_parser({**run, **extra})
        parser.parse()
        torch.manual_seed(seed)
        start = time.perf_counter()
        labeled_loader = parser.get_parsed_content("train#dataloader")
        unlabeled_loader = parser.get_parsed_content("train#unlabeled_dataloader")
        setup_seconds = time.perf_counter() - start
        if unlabeled_loader is None:
            raise ValueError("the bundle config gives no unlabeled data loader (num_labeled >= the training cases?).")
        network = parser.get_parsed_content("network")
        objective = parser.get_parsed_content("objective")
        optimizer = parser.get_parsed_content("optimizer")
        labeled_stream, unlabeled_stream = _cycle(labeled_loader), _cycle(unlabeled_loader)
        to = functools.partial(batch_to, device=dev)
        setup = TrainingSetup(
            network,
            optimizer,
            objective,
            labeled=[to(next(labeled_stream)) for _ in range(batches)],
            unlabeled=[{"image": next(unlabeled_stream)["image"].to(dev)} for _ in range(batches)],
        )

        def draw() -> list[float]:
            times = []
            for _ in range(batches):
                start = time.perf_counter()
                to(next(labeled_stream))
                next(unlabeled_stream)["image"].to(dev)
                sync(dev)
                times.append(time.perf_counter() - start)
            return times

        samples = run_interleaved(
            {"data": draw, "train": functools.partial(engine_iterations, setup, dev, batches)}, repeats
        )
        settings = {
            key: parser.get_parsed_content(key)
            for key in ("patch_size", "n_filters", "norm", "feature_dim", "num_workers", "num_labeled", "cache_rate")
        }
        settings.update(
            labeled_batch=parser.get_parsed_content("labeled_batch_size"),
            unlabeled_batch=parser.get_parsed_content("unlabeled_batch_size"),
            train_cases=parser.get_parsed_content("phantom_train_cases"),
            amp=parser.get_parsed_content("amp"),
            precision=precision_of(dev),
        )
        labeled_stream = unlabeled_stream = None  # drops the loaders' iterators, which ends their worker processes

    data_rate = 1.0 / median(samples["data"])
    train_rate = 1.0 / median(samples["train"])
    report = BenchmarkReport("data")
    report.add("data_batches_per_second", data_rate, "1/s", samples=[1.0 / s for s in samples["data"]])
    report.add("train_iterations_per_second", train_rate, "1/s", samples=[1.0 / s for s in samples["train"]])
    report.add("data_to_train_ratio", data_rate / train_rate, "x", goal=">= 3")
    report.add("data_setup_time", setup_seconds, "s")
    report.config = run_config(
        dev,
        repeats,
        1,
        batches_per_run=batches,
        bundle="bundles/la/configs/train.json + demo.json",
        overrides=extra,
        **settings,
        seed=seed,
    )
    report.notes = [
        "one data batch = a labeled + an unlabeled batch (what one iteration consumes), moved to the device; "
        "training iterations run on batches drawn beforehand (no data loading inside); data_setup_time is the "
        "phantom writing (skipped when present) and the CacheDataset caching, once.",
    ]
    return report.print()
