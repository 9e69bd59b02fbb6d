from __future__ import annotations

import errno
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.data import CacheDataset, DataLoader
from monai.handlers import LrScheduleHandler
from monai.transforms import Compose, RandFlipd, RandSpatialCropd
from monai.utils import set_determinism

from semiseg.engines import DualNetworkObjective, SemiSupervisedTrainer
from semiseg.handlers import TrainingStateHandler, find_resume_checkpoint
from semiseg.handlers.training_state import CheckpointWriteError
from semiseg.losses import CrossPseudoSupervisionLoss, EntropyFilteredLoss, PrototypeContrastiveLoss
from semiseg.networks import DualNet, ResVNet, VNet

from conftest import make_batches


def random_loaders(seed: int) -> tuple[DataLoader, DataLoader]:
    """Shuffled loaders of 3 labeled and 3 unlabeled volumes with random crops and flips, batch 1, no workers."""
    set_determinism(seed)
    gen = torch.Generator().manual_seed(7)
    volumes = [torch.rand(1, 36, 36, 36, generator=gen) for _ in range(6)]
    labeled = [{"image": v, "label": (v > 0.5).float()} for v in volumes[:3]]
    unlabeled = [{"image": v} for v in volumes[3:]]
    keys = ["image", "label"]
    transform = Compose([
        RandSpatialCropd(keys, roi_size=(32, 32, 32), random_size=False, allow_missing_keys=True),
        RandFlipd(keys, prob=0.5, spatial_axis=0, allow_missing_keys=True),
    ])  # fmt: skip
    make = lambda data: DataLoader(CacheDataset(data, transform, progress=False), batch_size=1, shuffle=True)  # noqa: E731
    return make(labeled), make(unlabeled)


def build_run(
    save_dir, iterations: int, resume: bool, seed: int = 0, n_filters: int = 2, stop_at: int | None = None,
    random_data: bool = False,
):  # fmt: skip
    labeled, unlabeled = random_loaders(seed) if random_data else (make_batches(2, 2), make_batches(2, 2, labeled=False, seed=5))
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
        train_data_loader=labeled,
        unlabeled_data_loader=unlabeled,
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
        assert second_losses[i] == full_losses[i]
    for a, b in zip(full_net.state_dict().values(), second_net.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_resume_in_the_middle_of_shuffled_passes_with_random_crops_is_bit_identical(tmp_path) -> None:
    """3 batches per pass, state every 2 iterations, killed after 4: both streams are resumed in mid-pass. The batches
    are MONAI MetaTensors, so this also checks that the state file stays loadable with ``weights_only=True``."""
    full, _, full_net, full_losses = build_run(tmp_path / "a", iterations=6, resume=False, random_data=True)
    full.run()
    first, _, _, _ = build_run(tmp_path / "b", iterations=6, resume=False, stop_at=4, random_data=True)
    first.run()
    # the new process starts from other seeds: the checkpoint decides everything
    second, state, second_net, second_losses = build_run(tmp_path / "b", iterations=6, resume=True, seed=99, random_data=True)
    second.run()
    assert state.resumed_from.name == "state_checkpoint_4.pt"
    saved = torch.load(state.resumed_from, weights_only=True)["trainer"]["streams"]
    assert (saved["labeled"]["passes"], saved["labeled"]["taken"]) == (2, 1)
    assert (saved["unlabeled"]["passes"], saved["unlabeled"]["taken"]) == (2, 1)
    assert sorted(second_losses) == [5, 6] and [second_losses[i] for i in (5, 6)] == [full_losses[i] for i in (5, 6)]
    assert all(torch.equal(a, b) for a, b in zip(full_net.state_dict().values(), second_net.state_dict().values()))


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
    with pytest.raises(ValueError, match="boolean flag.*resume"):
        TrainingStateHandler(str(tmp_path), {}, resume="maybe")


def test_resume_given_as_text_on_the_command_line(tmp_path) -> None:
    assert TrainingStateHandler(str(tmp_path), {}, resume="true").resume is True
    assert TrainingStateHandler(str(tmp_path), {}, resume="false").resume is False
    assert TrainingStateHandler(str(tmp_path), {}, resume=True).resume is True


def test_a_full_disk_stops_training_with_a_clear_error_and_keeps_the_earlier_state(tmp_path, monkeypatch) -> None:
    save = torch.save
    calls = []

    def save_until_the_disk_is_full(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            f.write(b"partial")  # the first bytes land, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    run, _, _, losses = build_run(tmp_path, iterations=6, resume=False)
    with pytest.raises(CheckpointWriteError, match=r"state_checkpoint_4\.pt in .*: the disk is full\..*--resume true") as info:
        run.run()
    assert info.value.errno == errno.ENOSPC and sorted(losses) == [1, 2, 3]  # stopped at iteration 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state_checkpoint_2.pt"]  # no partial file left behind
    monkeypatch.setattr(torch, "save", save)
    resumed, state, _, losses = build_run(tmp_path, iterations=6, resume=True)
    resumed.run()
    assert state.resumed_from.name == "state_checkpoint_2.pt" and sorted(losses) == [3, 4, 5, 6]


KILLED_WHILE_WRITING = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from test_training_state import build_run
save = torch.save
def save_then_die(obj, f, *args, **kwargs):
    if obj["trainer"]["iteration"] == 4:
        f.write(b"half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return save(obj, f, *args, **kwargs)
torch.save = save_then_die
build_run({save_dir!r}, iterations=6, resume=False)[0].run()
"""


@pytest.mark.slow
def test_a_kill_while_a_state_file_is_written_leaves_the_previous_one_to_resume_from(tmp_path) -> None:
    script = KILLED_WHILE_WRITING.format(tests=str(Path(__file__).parent), save_dir=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "state_checkpoint_2.pt" in names and "state_checkpoint_4.pt" not in names and len(names) == 2  # + a temp file
    assert find_resume_checkpoint(tmp_path).name == "state_checkpoint_2.pt"
    resumed, state, _, losses = build_run(tmp_path, iterations=6, resume=True)
    resumed.run()
    assert state.resumed_from.name == "state_checkpoint_2.pt" and sorted(losses) == [3, 4, 5, 6]
