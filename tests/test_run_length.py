"""Tests of semiseg.engines.run_length: the trainer owns the run length, and a request in epochs (MONAI Label's
``train#trainer#max_epochs``) fits the counts declared against ``iterations`` to the run, once."""

from __future__ import annotations

import pytest
import torch
from monai.handlers import LrScheduleHandler, ValidationHandler

from semiseg.engines import DualNetworkObjective, GaussianRampUp, RunLength, SemiSupervisedTrainer, scale_count
from semiseg.engines import total_iterations
from semiseg.handlers import ProgressBarHandler
from semiseg.losses import CrossPseudoSupervisionLoss

from conftest import make_batches


def test_epochs_request_gives_the_run_length_and_keeps_the_shares() -> None:
    assert RunLength(6000).total == 6000 and RunLength(6000, None, 4).total == 6000
    run = RunLength(6000, 50, 4)  # MONAI Label's default: 50 epochs of 4 labeled batches
    assert (run.total, run.max_epochs) == (200, 50)
    assert run.fit(4000) == 133 and run.fit(2500) == 83 and run.fit(0) == 0 and run.fit(10) == 1
    assert RunLength(7, epoch_length=2).max_epochs == 4 and RunLength(None, 3, 2).fit(5) == 5
    assert scale_count(4000, 6000, 6000) == 4000 and scale_count(10, 6000, 3) == 1
    with pytest.raises(ValueError, match="labeled data loader is empty"):
        RunLength(6000, 5, 0)
    with pytest.raises(ValueError, match="max_epochs must be a positive integer"):
        RunLength(6000, -1, 4)
    with pytest.raises(ValueError, match="iterations must be an integer"):
        RunLength(2.5)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        RunLength(0)
    with pytest.raises(ValueError, match="training length"):
        RunLength(None)


def _trainer(net, **length) -> tuple[SemiSupervisedTrainer, dict]:
    ramp = GaussianRampUp(max_value=0.1, length=4000, start=1500)
    objective = DualNetworkObjective(
        cross_pseudo=CrossPseudoSupervisionLoss(), unlabeled_weight=ramp, contrastive_weight=ramp
    )
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2500)
    validation = ValidationHandler(validator=None, interval=1000, epoch_level=False)
    handlers = [LrScheduleHandler(scheduler, epoch_level=False, print_lr=False), validation]
    trainer = SemiSupervisedTrainer(
        device="cpu", train_data_loader=make_batches(3, 2), unlabeled_data_loader=make_batches(1, 2, labeled=False),
        network=net, optimizer=optimizer, objective=objective, train_handlers=handlers, **length,
    )  # fmt: skip
    return trainer, {"ramp": ramp, "scheduler": scheduler, "validation": validation}


def test_trainer_fits_ramps_lr_step_and_validation_interval_to_a_run_in_epochs(tiny_dual_net) -> None:
    trainer, parts = _trainer(tiny_dual_net, iterations=6000, max_epochs=50)  # 50 epochs of 3 batches: 150
    assert trainer.total_iterations == 150 == total_iterations(trainer) and trainer.state.max_epochs == 50
    assert (parts["ramp"].length, parts["ramp"].start) == (100, 38)  # shared by both weights: fitted once
    assert parts["scheduler"].step_size == 62 and parts["validation"].interval == 25
    per_epoch = ValidationHandler(validator=None, interval=2, epoch_level=True)
    RunLength(6000, 50, 3).fit_components([], [per_epoch])
    assert per_epoch.interval == 2  # counted in epochs: kept


def test_trainer_of_the_configured_length_leaves_every_count_as_declared(tiny_dual_net) -> None:
    trainer, parts = _trainer(tiny_dual_net, iterations=6000)
    assert trainer.total_iterations == 6000 and trainer.state.max_epochs == 2000
    assert (parts["ramp"].length, parts["ramp"].start) == (4000, 1500)
    assert parts["scheduler"].step_size == 2500 and parts["validation"].interval == 1000


def test_handlers_read_the_trainers_total(tiny_dual_net, monkeypatch) -> None:
    trainer, _ = _trainer(tiny_dual_net, iterations=3000, max_epochs=1)
    totals = []
    monkeypatch.setattr("semiseg.handlers.progress.tqdm", lambda total, **kwargs: totals.append(total) or _Bar())
    ProgressBarHandler(disable=True)._open(trainer)
    assert totals == [3]


class _Bar:
    n = 0
