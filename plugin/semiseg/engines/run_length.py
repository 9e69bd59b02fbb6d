"""The length of a training run, resolved once, and the iteration counts declared against it.

The configs count training in iterations (``iterations``; ramp-ups, learning-rate step and validation interval are
iteration counts, as the literature gives them). A tool may ask for epochs instead: MONAI Label's
``BundleTrainTask`` sets ``train#trainer#max_epochs`` (its "max_epochs" option, 50 by default). The run is then
``max_epochs`` passes over the labeled loader, and every count declared against the configured ``iterations`` keeps
its share of the run (a ramp-up over two thirds of the run stays over two thirds). :class:`RunLength` is that
resolution, done once by ``SemiSupervisedTrainer``; handlers read the result as ``engine.total_iterations``
(:func:`total_iterations`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from monai.handlers import ValidationHandler
from torch.optim.lr_scheduler import StepLR

from semiseg.arguments import check_int

__all__ = ["RunLength", "scale_count", "total_iterations"]

logger = logging.getLogger(__name__)


def scale_count(value: int, iterations: int, total: int) -> int:
    """``value``, an iteration count declared against a run of ``iterations``, fitted to a run of ``total``.

    Returns ``value`` unchanged when the run has the declared length, 0 for 0 (a ramp that starts at once), and
    otherwise ``round(value * total / iterations)``, at least 1.

    Raises:
        ValueError: when ``iterations`` or ``total`` is not a positive integer, or ``value`` a non-negative one.
    """
    iterations = check_int(iterations, "iterations", 1, text=True)
    total = check_int(total, "total iterations", 1, text=True)
    value = check_int(value, "iteration count", 0, text=True)
    if total == iterations or value == 0:
        return value
    return max(1, round(value * total / iterations))


class RunLength:
    """The iterations of one training run: ``iterations``, or ``max_epochs * epoch_length`` when epochs are asked.

    Example::

        run = RunLength(6000, max_epochs=50, epoch_length=4)  # MONAI Label's default request
        run.total, run.fit(4000)  # (200, 133)

    Args:
        iterations: the configured length, which the other iteration counts of the config are declared against.
            None when the run is given in epochs only (nothing is then declared against another length).
        max_epochs: epochs asked for by a tool (MONAI Label's ``train#trainer#max_epochs``); None keeps
            ``iterations``.
        epoch_length: iterations per epoch (labeled batches per pass over the labeled loader).

    Raises:
        ValueError: when neither length is given, a count is not a positive integer, or the epoch is empty.
    """

    def __init__(self, iterations: int | None, max_epochs: int | None = None, epoch_length: int = 1) -> None:
        if iterations is None and max_epochs is None:
            raise ValueError("give the training length as `iterations` (or `max_epochs`).")
        if iterations is not None and check_int(iterations, "iterations", text=True) < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}.")
        if check_int(epoch_length, "epoch_length") < 1:
            raise ValueError("the labeled data loader is empty: no labeled case to train on.")
        self.epoch_length = int(epoch_length)
        self.iterations = None if iterations is None else int(iterations)
        if max_epochs is None:
            self.total = int(iterations)  # type: ignore[arg-type]
            return
        max_epochs = check_int(max_epochs, "train#trainer#max_epochs", 1, text=True)
        self.total = max_epochs * self.epoch_length
        if self.iterations is not None and self.total != self.iterations:
            logger.info(
                "training length: %d epochs of %d labeled batches = %d iterations (instead of iterations=%d); the "
                "ramp-ups, learning-rate step and validation interval keep their share of the run",
                max_epochs, self.epoch_length, self.total, self.iterations,
            )  # fmt: skip

    @property
    def max_epochs(self) -> int:
        """Passes over the labeled loader that hold ``total`` iterations (the last one may stop early)."""
        return -(-self.total // self.epoch_length)

    def fit(self, count: int) -> int:
        """An iteration count declared against ``iterations``, at the same share of this run (:func:`scale_count`)."""
        return count if self.iterations is None else scale_count(count, self.iterations, self.total)

    def fit_components(self, schedules: Iterable[Any], handlers: Iterable[Any]) -> None:
        """Fit the declared counts of ``schedules`` (``length`` and ``start`` of a ramp) and of iteration-level
        ``handlers`` (the ``interval`` of MONAI's ``ValidationHandler``, the ``step_size`` of a ``StepLR`` that a
        handler steps each iteration) to this run, in place; nothing changes when the run has the declared length.
        Call it before the handlers attach."""
        if self.iterations is None or self.total == self.iterations:
            return
        for schedule in {id(s): s for s in schedules}.values():  # a schedule shared by two weights is fitted once
            if hasattr(schedule, "length") and hasattr(schedule, "start"):
                schedule.length, schedule.start = self.fit(schedule.length), self.fit(schedule.start)
        for handler in handlers:
            if getattr(handler, "epoch_level", True):
                continue  # counted in epochs: a run in epochs keeps them
            if isinstance(handler, ValidationHandler):
                handler.interval = self.fit(handler.interval)
            if isinstance(getattr(handler, "lr_scheduler", None), StepLR):
                handler.lr_scheduler.step_size = self.fit(handler.lr_scheduler.step_size)


def total_iterations(engine: Any) -> int:
    """The iterations ``engine`` runs in all: a ``SemiSupervisedTrainer``'s ``total_iterations``, else ignite's
    ``max_epochs * epoch_length``."""
    total = getattr(engine, "total_iterations", None)
    return int(total) if total is not None else int(engine.state.max_epochs * engine.state.epoch_length)
