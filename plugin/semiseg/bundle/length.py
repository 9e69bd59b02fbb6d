"""Training length of the bundles when a tool asks for epochs (MONAI Label's ``train#trainer#max_epochs``).

The bundles count training in iterations (``iterations``, ramp-ups, learning-rate steps and validation interval are
iteration counts, as the literature gives them). MONAI Label's ``BundleTrainTask`` sets ``train#trainer#max_epochs``
instead (its "max_epochs" option, 50 by default). :func:`run_iterations` turns such a request into iterations,
``max_epochs`` passes over the labeled loader, and :func:`scale_to_run` keeps every other iteration count at the same
share of the run as in the config (e.g. a ramp-up over two thirds of the run stays over two thirds).
"""

from __future__ import annotations

import logging

from semiseg.arguments import check_int

__all__ = ["run_iterations", "scale_to_run"]

logger = logging.getLogger(__name__)


def run_iterations(iterations: int, max_epochs: int | None = None, epoch_length: int | None = None) -> int:
    """Iterations of this run: ``iterations``, or ``max_epochs * epoch_length`` when epochs are requested.

    Args:
        iterations: the configured number of iterations.
        max_epochs: epochs requested by a tool (MONAI Label); None (the configs' default) keeps ``iterations``.
        epoch_length: iterations per epoch, i.e. labeled batches per pass (``len(train#dataloader)``).

    Raises:
        ValueError: when a count is not a positive integer, or epochs are requested without an epoch length.
    """
    iterations = check_int(iterations, "iterations", 1, text=True)
    if max_epochs is None:
        return iterations
    max_epochs = check_int(max_epochs, "train#trainer#max_epochs", 1, text=True)
    if epoch_length is None or int(epoch_length) < 1:
        raise ValueError(
            f"train#trainer#max_epochs={max_epochs} needs at least one labeled batch per epoch, got an epoch of "
            f"{epoch_length} batches: give more labeled cases than labeled_batch_size (the loader drops the last "
            "incomplete batch)"
        )
    total = max_epochs * int(epoch_length)
    logger.info(
        "training length: %d epochs of %d labeled batches = %d iterations (instead of iterations=%d)",
        max_epochs, int(epoch_length), total, iterations,
    )  # fmt: skip
    return total


def scale_to_run(value: int, iterations: int, run: int) -> int:
    """``value`` (an iteration count of the config) scaled by ``run / iterations``, at least 1.

    Returns ``value`` unchanged when the run has the configured length.
    """
    iterations = check_int(iterations, "iterations", 1, text=True)
    value, run = int(value), check_int(run, "run iterations", 1, text=True)
    if run == iterations:
        return value
    return max(1, round(value * run / iterations))
