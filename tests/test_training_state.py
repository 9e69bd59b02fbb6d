from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.handlers import LrScheduleHandler

from semiseg.engines import DualNetworkObjective, SemiSupervisedTrainer
from semiseg.handlers import TrainingStateHandler, find_resume_checkpoint
from semiseg.losses import CrossPseudoSupervisionLoss, EntropyFilteredLoss, PrototypeContrastiveLoss
from semiseg.networks import DualNet, ResVNet, VNet

from conftest import make_batches


def build_run(save_dir, iterations: int, resume: bool, seed: int = 0, n_filters: int = 2, stop_at: int | None = None):
    torch.manual_seed(seed)
    net = DualNet(
        VNet(1, 2, n_filters=n_filters, norm="instance", dropout=0.0),
        ResVNet(1, 2, n_filters=n_filters, norm="instance", dropout=0.0),
        feature_dim=4,
    )
    objective = DualNetworkObjective(
        cross_pseudo=CrossPseudoSupervisionLoss(),
        entropy_filter=EntropyFilteredLoss(),
        contrastive=PrototypeContrastiveLoss(num_classes=2, ema_momentum=0.9),
    )
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    state = TrainingStateHandler(
        str(save_dir),
        {"network": net, "optimizer": optimizer, "lr_scheduler": scheduler, "objective": objective},
        save_interval=2,
        n_saved=2,
        resume=resume,
    )
    trainer = SemiSupervisedTrainer(
        device="cpu",
        train_data_loader=make_batches(2, 2),
        unlabeled_data_loader=make_batches(2, 2, labeled=False, seed=5),
        network=net,
        optimizer=optimizer,
        objective=objective,
        iterations=iterations,
        train_handlers=[LrScheduleHandler(scheduler, epoch_level=False, print_lr=False), state],
    )
    if stop_at is not None:  # stands for a run killed after iteration `stop_at`
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    losses: dict[int, float] = {}
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.__setitem__(e.state.iteration, e.state.output["loss"]))
    return trainer, state, net, losses


def test_resumed_run_continues_the_uninterrupted_one(tmp_path) -> None:
    full, _, full_net, full_losses = build_run(tmp_path / "a", iterations=8, resume=False)
    full.run()

    first, _, _, first_losses = build_run(tmp_path / "b", iterations=8, resume=False, stop_at=4)
    first.run()
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["state_checkpoint_2.pt", "state_checkpoint_4.pt"]

    second, state, second_net, second_losses = build_run(tmp_path / "b", iterations=8, resume=True, seed=99)
    second.run()
    assert state.resumed_from is not None and state.resumed_from.name == "state_checkpoint_4.pt"
    assert sorted(second_losses) == [5, 6, 7, 8]  # started after the checkpoint, stopped at the plan
    for i in range(1, 5):
        assert first_losses[i] == pytest.approx(full_losses[i], rel=1e-6)  # determinism of the first iterations
    for i in range(5, 9):
        assert second_losses[i] == pytest.approx(full_losses[i], rel=1e-4, abs=1e-6)
    for a, b in zip(full_net.state_dict().values(), second_net.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path) -> None:
    run, _, _, _ = build_run(tmp_path, iterations=5, resume=False, stop_at=4)
    run.run()
    newest = tmp_path / "state_checkpoint_4.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # as a kill during a non-atomic copy would leave it
    assert find_resume_checkpoint(tmp_path).name == "state_checkpoint_2.pt"
    resumed, state, _, losses = build_run(tmp_path, iterations=5, resume=True)
    resumed.run()
    assert state.resumed_from.name == "state_checkpoint_2.pt" and sorted(losses) == [3, 4, 5]


def test_a_checkpoint_of_another_network_names_the_mismatch(tmp_path) -> None:
    run, _, _, _ = build_run(tmp_path, iterations=4, resume=False, stop_at=2)
    run.run()
    other, _, _, _ = build_run(tmp_path, iterations=4, resume=True, n_filters=4)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=r"does not fit 'network' of this run: \d+ shape mismatches \(branch_a\.[^;]+: file \(2, 1, 3, 3, 3\) vs model \(4, 1, 3, 3, 3\)"):
        other.run()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_resume_without_checkpoint_starts_from_zero(tmp_path) -> None:
    run, state, _, losses = build_run(tmp_path / "empty", iterations=2, resume=True)
    run.run()
    assert state.resumed_from is None and sorted(losses) == [1, 2]


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="save_interval"):
        TrainingStateHandler(str(tmp_path), {}, save_interval=0)
    with pytest.raises(ValueError, match="no state_dict"):
        TrainingStateHandler(str(tmp_path), {"x": object()})
