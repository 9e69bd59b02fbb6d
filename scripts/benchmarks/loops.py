"""The two training loops that ``step`` compares (and that ``step_variants`` and ``data`` time): the engine, plain."""

from __future__ import annotations

import functools
import itertools
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Events

from semiseg.engines import SemiSupervisedTrainer

from .builder import TrainingSetup
from .timing import sync, timed

__all__ = ["LOOPS", "engine_iterations", "plain_iterations"]


def engine_iterations(
    setup: TrainingSetup,
    device: torch.device,
    iterations: int,
    trainer_kwargs: dict[str, Any] | None = None,
    carry: dict[str, Any] | None = None,
) -> list[float]:
    """Run ``SemiSupervisedTrainer`` (no handlers) for ``iterations`` iterations; seconds of each iteration.

    An iteration is timed from ITERATION_STARTED to ITERATION_COMPLETED, so engine start-up is not counted.

    Args:
        setup: network, optimizer, objective and the in-memory batches.
        device: the training device.
        iterations: iterations of this run.
        trainer_kwargs: more ``SemiSupervisedTrainer`` arguments, e.g. ``amp``, ``amp_kwargs``, ``to_kwargs``.
        carry: state kept across runs: the trainer's ``GradScaler`` (the first run's is reused by the later ones,
            as in one long training run) under ``"scaler"``, and the loss of every iteration under ``"losses"``.
    """
    trainer = SemiSupervisedTrainer(
        device=device,
        train_data_loader=setup.labeled,
        unlabeled_data_loader=setup.unlabeled,
        network=setup.network,
        optimizer=setup.optimizer,
        objective=setup.objective,
        iterations=iterations,
        epoch_length=len(setup.labeled),
        **(trainer_kwargs or {}),
    )
    losses: list[float] = []
    starts: list[float] = []
    times: list[float] = []

    if carry is not None:
        kept: dict[str, Any] = carry
        losses = kept.setdefault("losses", [])

        def keep_scaler(engine: Any) -> None:  # MONAI's Trainer.run() makes a new GradScaler: keep the first one
            if "scaler" in kept:
                engine.scaler = kept["scaler"]
            else:
                kept["scaler"] = engine.scaler

        trainer.add_event_handler(Events.STARTED, keep_scaler)

    def started(_: Any) -> None:
        sync(device)
        starts.append(time.perf_counter())

    def completed(engine: Any) -> None:
        sync(device)
        times.append(time.perf_counter() - starts[-1])
        if carry is not None:
            losses.append(float(engine.state.output["loss"]))

    trainer.add_event_handler(Events.ITERATION_STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, completed)
    with warnings.catch_warnings():
        # with amp, Trainer.run() makes a ``torch.cuda.amp.GradScaler()``, which warns (deprecated; disabled without
        # CUDA) at every run, i.e. every round
        warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.GradScaler")
        trainer.run()
    return times


def plain_iterations(setup: TrainingSetup, device: torch.device, iterations: int) -> list[float]:
    """The same math as one engine iteration, written as a plain PyTorch loop; seconds of each iteration."""
    labeled, unlabeled = itertools.cycle(setup.labeled), itertools.cycle(setup.unlabeled)

    def step(iteration: int) -> None:  # a function, so that its tensors are freed when it returns
        batch = next(labeled)
        image_l, label = batch["image"].to(device), batch["label"].to(device)
        image_u = next(unlabeled)["image"].to(device)
        setup.network.train()
        setup.optimizer.zero_grad(set_to_none=False)
        outputs = setup.network(torch.cat([image_l, image_u], dim=0))
        terms = setup.objective(outputs, label, iteration)
        terms["loss"].backward()
        setup.optimizer.step()

    times = []
    for iteration in range(1, iterations + 1):
        times.extend(timed(functools.partial(step, iteration), device))
    return times


LOOPS: dict[str, Callable[[TrainingSetup, torch.device, int], list[float]]] = {
    "engine": engine_iterations,
    "plain": plain_iterations,
}
"""The loops by the names ``step`` and ``memory_probe`` use."""
