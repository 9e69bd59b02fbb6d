"""A progress bar over the whole run (iterations, loss, ETA) for engines whose epochs are short."""

from __future__ import annotations

import logging
import re
from typing import Any

from monai.utils import min_version, optional_import
from tqdm.auto import tqdm

from semiseg.engines.run_length import total_iterations

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")

__all__ = ["ProgressBarHandler", "EpochCompleteFilter"]


class EpochCompleteFilter(logging.Filter):
    """Drops ignite's ``"Epoch[n] Complete. Time taken: ..."`` INFO records; every other record passes."""

    _PATTERN = re.compile(r"^Epoch\[\d+\] Complete\.")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and self._PATTERN.match(str(record.msg)))


class ProgressBarHandler:
    """Show one bar for the whole training run, with the current loss and the ETA.

    ignite's ``ProgressBar`` draws one bar per epoch, which says little when an epoch is a handful of iterations
    (8 labeled cases, batch 2). This handler counts iterations up to the trainer's total (``total_iterations``, see
    ``semiseg.engines.run_length.total_iterations``), and is attached like any MONAI handler. It also stops the
    engine's logger from printing ignite's "Epoch[n] Complete" line after every epoch (every 2 iterations with 4
    labeled cases); the engine's other messages (checkpoints saved, errors) still show.

    Args:
        output_key: the key of ``engine.state.output`` shown beside the bar.
        every: refresh the bar every this many iterations.
        disable: turn the bar off (e.g. in CI logs); None turns it off when the output is not a terminal.
        quiet_epochs: drop the engine logger's per-epoch "Epoch[n] Complete" lines (:class:`EpochCompleteFilter`).
    """

    def __init__(
        self, output_key: str = "loss", every: int = 1, disable: bool | None = False, quiet_epochs: bool = True
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}.")
        self.output_key = output_key
        self.every = every
        self.disable = disable
        self.quiet_epochs = quiet_epochs
        self._bar: tqdm | None = None

    def attach(self, engine: Any) -> None:
        if self.quiet_epochs and not any(isinstance(f, EpochCompleteFilter) for f in engine.logger.filters):
            engine.logger.addFilter(EpochCompleteFilter())
        engine.add_event_handler(Events.STARTED, self._open)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), self._update)
        engine.add_event_handler(Events.COMPLETED, self._close)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._close_on_error)

    def _open(self, engine: Any) -> None:
        total = total_iterations(engine)
        self._bar = tqdm(total=total, initial=engine.state.iteration, desc="train", unit="it", disable=self.disable)

    def _update(self, engine: Any) -> None:
        if self._bar is None:
            return
        self._bar.update(engine.state.iteration - self._bar.n)
        output = engine.state.output
        if isinstance(output, dict) and self.output_key in output:
            self._bar.set_postfix({self.output_key: f"{float(output[self.output_key]):.4f}"}, refresh=False)

    def _close(self, engine: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _close_on_error(self, engine: Any, error: BaseException) -> None:
        self._close(engine)
        raise error
