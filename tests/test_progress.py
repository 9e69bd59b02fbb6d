"""Tests of semiseg.handlers.progress: one bar per run, and no ignite "Epoch[n] Complete" line per epoch."""

from __future__ import annotations

import logging
import uuid

import pytest
from ignite.engine import Engine, Events

from semiseg.handlers import EpochCompleteFilter, ProgressBarHandler


def _engine() -> Engine:
    engine = Engine(lambda e, b: {"loss": 0.5})
    # a fresh logger per engine: logging caches loggers by name, and id() of a collected engine is reused, which once
    # handed the quiet=False case the logger (and filter) of the quiet=True case
    engine.logger = logging.getLogger(f"test_progress.{uuid.uuid4().hex}")
    engine.logger.setLevel(logging.INFO)
    return engine


@pytest.mark.parametrize("quiet", [True, False])
def test_epoch_lines_are_dropped_and_other_messages_kept(caplog, quiet: bool) -> None:
    engine = _engine()
    ProgressBarHandler(disable=True, quiet_epochs=quiet).attach(engine)
    engine.add_event_handler(Events.COMPLETED, lambda e: e.logger.info("saved final checkpoint"))
    with caplog.at_level(logging.INFO, logger=engine.logger.name):
        engine.run([0, 1], max_epochs=3)
    text = caplog.text
    assert ("Epoch[2] Complete" in text) is not quiet
    assert "saved final checkpoint" in text and "Engine run finished" in text


def test_filter_is_added_once_and_passes_warnings() -> None:
    engine = _engine()
    for _ in range(2):
        ProgressBarHandler(disable=True).attach(engine)
    assert sum(isinstance(f, EpochCompleteFilter) for f in engine.logger.filters) == 1
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "Epoch[3] Complete. odd but a warning", None, None)
    assert EpochCompleteFilter().filter(record)


def test_bar_counts_to_the_planned_iterations() -> None:
    engine = _engine()
    engine.iterations = 6
    bar = ProgressBarHandler(disable=True, every=2)
    bar.attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(bar._bar.total if bar._bar else None))
    engine.run([0, 1, 2], max_epochs=2)
    assert seen[-1] == 6 and bar._bar is None
