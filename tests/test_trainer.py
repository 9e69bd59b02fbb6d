from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import IterationEvents
from torch.utils.data import DataLoader

from semiseg.engines import STUDENT_VIEW_KEY, DualNetworkObjective, NonFiniteLossError, SemiSupervisedTrainer
from semiseg.losses import (
    CopyPasteSupervision,
    CrossPseudoSupervisionLoss,
    EntropyFilteredLoss,
    PrototypeContrastiveLoss,
)

from conftest import make_batches


def make_trainer(net, labeled, unlabeled, objective=None, **kwargs) -> SemiSupervisedTrainer:
    objective = objective or DualNetworkObjective(
        cross_pseudo=CrossPseudoSupervisionLoss(),
        entropy_filter=EntropyFilteredLoss(),
        contrastive=PrototypeContrastiveLoss(num_classes=2),
    )
    return SemiSupervisedTrainer(
        device="cpu",
        train_data_loader=labeled,
        unlabeled_data_loader=unlabeled,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9),
        objective=objective,
        **kwargs,
    )


def test_runs_exactly_the_planned_iterations_and_logs_every_term(tiny_dual_net) -> None:
    trainer = make_trainer(tiny_dual_net, make_batches(2, 2), make_batches(1, 2, labeled=False), iterations=5)
    before = [p.detach().clone() for p in tiny_dual_net.parameters()]
    fired = {"forward": 0, "model": 0}
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: fired.__setitem__("forward", fired["forward"] + 1))
    trainer.add_event_handler(IterationEvents.MODEL_COMPLETED, lambda e: fired.__setitem__("model", fired["model"] + 1))
    trainer.run()
    assert trainer.state.iteration == 5  # 2 labeled batches per epoch: stops inside the third epoch
    assert trainer.state.max_epochs == 3
    assert fired == {"forward": 5, "model": 5}
    out = trainer.state.output
    for key in ("loss", "sup_a", "sup_b", "cps", "entropy_filter", "contrastive", "weight_unlabeled", "reliable_fraction"):
        assert isinstance(out[key], float) and out["terms"][key] == out[key], key
    changed = [not torch.equal(a, b) for a, b in zip(before, tiny_dual_net.parameters())]
    assert all(changed), "every parameter of both branches and heads should be updated"


def test_unlabeled_stream_cycles_on_its_own(tiny_dual_net) -> None:
    seen = []
    unlabeled = make_batches(2, 2, labeled=False, seed=3)
    trainer = make_trainer(tiny_dual_net, make_batches(3, 2), unlabeled, iterations=5)
    original = trainer.next_unlabeled_batch

    def spy():
        image, view = original()
        assert view is None
        seen.append(next(i for i, b in enumerate(unlabeled) if torch.equal(b["image"], image)))
        return image, view

    trainer.next_unlabeled_batch = spy
    trainer.run()
    assert seen == [0, 1, 0, 1, 0]


def _with_student_view(batches: list[dict], scale: float = 1.7) -> list[dict]:
    return [{**b, STUDENT_VIEW_KEY: b["image"] * scale} for b in batches]


def test_students_see_the_student_view_and_the_teacher_the_clean_crop(tiny_dual_net) -> None:
    labeled, unlabeled = make_batches(1, 2), _with_student_view(make_batches(1, 2, labeled=False, seed=3))
    objective = DualNetworkObjective(cross_pseudo=CrossPseudoSupervisionLoss(), entropy_filter=EntropyFilteredLoss(),
                                     contrastive=PrototypeContrastiveLoss(num_classes=2), pseudo_label_pass="no_dropout")
    trainer = make_trainer(tiny_dual_net, labeled, unlabeled, objective=objective, iterations=1)
    forwards, branches = [], []
    forward, forward_branches = tiny_dual_net.forward, tiny_dual_net.forward_branches
    tiny_dual_net.forward = lambda x: forwards.append(x.clone()) or forward(x)
    tiny_dual_net.forward_branches = lambda x: branches.append(x.clone()) or forward_branches(x)
    before = [p.detach().clone() for p in tiny_dual_net.parameters()]
    trainer.run()
    assert torch.equal(forwards[0][:2], labeled[0]["image"])  # the labeled crops as they are
    assert torch.equal(forwards[0][2:], unlabeled[0][STUDENT_VIEW_KEY])  # the students: the perturbed view
    assert torch.equal(branches[-1], unlabeled[0]["image"])  # the teaching pass: the clean crop
    assert all(not torch.equal(a, b) for a, b in zip(before, tiny_dual_net.parameters()))


def test_student_view_needs_a_separate_teaching_pass(tiny_dual_net) -> None:
    unlabeled = _with_student_view(make_batches(1, 2, labeled=False))
    trainer = make_trainer(tiny_dual_net, make_batches(1, 2), unlabeled, iterations=1)  # pseudo_label_pass="train"
    with pytest.raises(ValueError, match="pseudo_label_pass='no_dropout'"):
        trainer.run()
    bad = [{**unlabeled[0], STUDENT_VIEW_KEY: unlabeled[0]["image"][..., :8]}]
    objective = DualNetworkObjective(cross_pseudo=CrossPseudoSupervisionLoss(), pseudo_label_pass="no_dropout")
    with pytest.raises(ValueError, match="voxel-aligned"):
        make_trainer(tiny_dual_net, make_batches(1, 2), bad, objective=objective, iterations=1).run()


def test_supervised_only_without_unlabeled_data(tiny_dual_net) -> None:
    with pytest.warns(UserWarning, match="no unlabeled data"):
        trainer = make_trainer(tiny_dual_net, make_batches(2, 2), None, iterations=2)
    trainer.run()
    assert "cps" not in trainer.state.output and trainer.state.iteration == 2


def test_supervised_baseline_does_not_draw_the_unlabeled_stream(tiny_dual_net) -> None:
    forwarded = []
    tiny_dual_net.register_forward_hook(lambda module, args, output: forwarded.append(args[0].shape[0]))
    trainer = make_trainer(
        tiny_dual_net, make_batches(2, 2), make_batches(2, 2, labeled=False), DualNetworkObjective(), iterations=3
    )
    trainer.run()
    assert forwarded == [2, 2, 2]  # labeled items only
    assert trainer._unlabeled_batches is None and "weight_unlabeled" not in trainer.state.output


def test_max_epochs_still_works(tiny_dual_net) -> None:
    trainer = make_trainer(tiny_dual_net, make_batches(2, 2), make_batches(1, 2, labeled=False), max_epochs=2)
    trainer.run()
    assert trainer.state.iteration == 4 and trainer.state.epoch == 2


def test_nan_loss_stops_before_the_optimizer_step(tiny_dual_net) -> None:
    bad = make_batches(1, 2)
    bad[0]["image"][0, 0, 0, 0, 0] = float("nan")
    trainer = make_trainer(tiny_dual_net, bad, make_batches(1, 2, labeled=False), iterations=3)
    before = [p.detach().clone() for p in tiny_dual_net.parameters()]
    with pytest.raises(NonFiniteLossError, match=r"iteration 1: .*sup_a=nan"):
        trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_dual_net.parameters()))


def test_bad_arguments(tiny_dual_net) -> None:
    with pytest.raises(ValueError, match="iterations"):
        make_trainer(tiny_dual_net, make_batches(1, 2), None)
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        make_trainer(tiny_dual_net, make_batches(1, 2), None, iterations=0)
    with pytest.raises(ValueError, match="labeled data loader is empty"):
        make_trainer(tiny_dual_net, [], None, iterations=2)


def test_one_labeled_case_short_of_a_batch_is_named(tiny_dual_net) -> None:
    """One labeled case and batches of 2 with drop_last: the error gives both counts and the way out; a sampler
    drawing 2 crops of the case (as the one_labeled protocol does) makes a batch of it."""
    case = [{"image": torch.rand(1, 16, 16, 16), "label": torch.zeros(1, 16, 16, 16)}]
    dropped = DataLoader(case, batch_size=2, drop_last=True)
    with pytest.raises(ValueError, match=r"1 labeled case\(s\) for labeled batches of 2 with drop_last"):
        make_trainer(tiny_dual_net, dropped, None, iterations=2)
    sampler = torch.utils.data.RandomSampler(case, num_samples=2)
    filled = DataLoader(case, batch_size=2, drop_last=True, sampler=sampler)
    assert next(iter(filled))["image"].shape[0] == 2
    unlabeled = make_batches(1, 2, labeled=False)
    assert make_trainer(tiny_dual_net, filled, unlabeled, iterations=2).run_length.epoch_length == 1


def test_stats_handler_logs_every_term(tiny_dual_net, capsys) -> None:
    from monai.handlers import StatsHandler

    stats = StatsHandler(name="semiseg.test.stats", iteration_log=True, epoch_log=False, output_transform=lambda o: o["terms"])
    trainer = make_trainer(
        tiny_dual_net, make_batches(1, 2), make_batches(1, 2, labeled=False), iterations=1, train_handlers=[stats]
    )
    trainer.run()  # MONAI's StatsHandler writes through its own stream handler
    captured = capsys.readouterr()
    logged = captured.out + captured.err
    assert "Iter: 1/1" in logged
    for term in ("loss", "sup_a", "sup_b", "cps", "entropy_filter", "contrastive", "weight_unlabeled", "reliable_fraction"):
        assert f"{term}: " in logged, term


def test_a_checkpoint_without_stream_positions_still_loads_and_says_so(tiny_dual_net) -> None:
    trainer = make_trainer(tiny_dual_net, make_batches(2, 2), make_batches(2, 2, labeled=False), iterations=4)
    saved = trainer.state_dict()
    assert set(saved["streams"]) == {"labeled", "unlabeled", "augmentations"}
    old = {k: v for k, v in saved.items() if k != "streams"}  # written before the streams were saved
    with pytest.warns(UserWarning, match="no data stream positions"):
        trainer.load_state_dict({**old, "iteration": 2})
    assert trainer.state.iteration == 2
    other = {**saved, "streams": {**saved["streams"], "augmentations": [{}]}}
    with pytest.raises(ValueError, match="1 random augmentation states, this run's data has 0"):
        trainer.load_state_dict(other)


@pytest.mark.parametrize("rank", [0, 1])
def test_rank0_handlers_attach_in_the_process_of_rank_0_only(tiny_dual_net, monkeypatch, rank) -> None:
    import ignite.distributed as idist

    calls: dict[str, int] = {"every": 0, "rank0": 0}

    class Count:
        def __init__(self, name: str) -> None:
            self.name = name

        def attach(self, engine) -> None:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.count)

        def count(self, _engine) -> None:
            calls[self.name] += 1

    monkeypatch.setattr(idist, "get_rank", lambda: rank)
    handlers = {"train_handlers": [Count("every")], "rank0_handlers": [Count("rank0")]}
    unlabeled = make_batches(1, 2, labeled=False)
    trainer = make_trainer(tiny_dual_net, make_batches(1, 2), unlabeled, iterations=2, **handlers)
    trainer.run()
    assert calls == {"every": 2, "rank0": 2 if rank == 0 else 0}


def test_copy_paste_mixes_run_in_the_training_forward_after_the_teaching_pass(tiny_dual_net) -> None:
    labeled, unlabeled = make_batches(1, 2), make_batches(1, 2, labeled=False, seed=3)
    objective = DualNetworkObjective(cross_pseudo=CrossPseudoSupervisionLoss(), copy_paste=CopyPasteSupervision(),
                                     pseudo_label_pass="no_dropout")
    trainer = make_trainer(tiny_dual_net, labeled, unlabeled, objective=objective, iterations=1)
    forwards, branches = [], []
    forward, forward_branches = tiny_dual_net.forward, tiny_dual_net.forward_branches
    tiny_dual_net.forward = lambda x: forwards.append(x.clone()) or forward(x)
    tiny_dual_net.forward_branches = lambda x: branches.append((len(forwards), x.clone())) or forward_branches(x)
    branch_params = [*tiny_dual_net.branch_a.parameters(), *tiny_dual_net.branch_b.parameters()]
    before = [p.detach().clone() for p in branch_params]
    trainer.run()
    assert branches[0][0] == 0 and torch.equal(branches[0][1], unlabeled[0]["image"])  # teacher first, clean crops
    assert len(forwards) == 1 and forwards[0].shape[0] == 2 + 2 + 2  # labeled, unlabeled, mixes: one forward
    assert torch.equal(forwards[0][:4], torch.cat([labeled[0]["image"], unlabeled[0]["image"]]))
    mixes = forwards[0][4:]
    from_labeled = (mixes == labeled[0]["image"]) & (mixes != unlabeled[0]["image"])
    assert from_labeled.any() and (~from_labeled).any()  # each mix holds parts of both crops
    out = trainer.state.output
    assert out["copy_paste"] > 0 and "weight_copy_paste" in out
    assert all(not torch.equal(a, b) for a, b in zip(before, branch_params))  # both branches trained



def test_copy_paste_alone_trains_on_the_labeled_crops_and_the_mixes_only(tiny_dual_net) -> None:
    # no term reads the network's output on the unlabeled crops: they reach it through the teaching pass and the mixes
    labeled, unlabeled = make_batches(1, 2), make_batches(1, 2, labeled=False, seed=3)
    objective = DualNetworkObjective(copy_paste=CopyPasteSupervision(), pseudo_label_pass="no_dropout")
    assert objective.uses_unlabeled and not objective.reads_unlabeled_outputs
    trainer = make_trainer(tiny_dual_net, labeled, unlabeled, objective=objective, iterations=1)
    forwards, branches = [], []
    forward, forward_branches = tiny_dual_net.forward, tiny_dual_net.forward_branches
    tiny_dual_net.forward = lambda x: forwards.append(x.clone()) or forward(x)
    tiny_dual_net.forward_branches = lambda x: branches.append(x.clone()) or forward_branches(x)
    branch_params = [*tiny_dual_net.branch_a.parameters(), *tiny_dual_net.branch_b.parameters()]
    before = [p.detach().clone() for p in branch_params]
    trainer.run()
    assert len(branches) == 1 and torch.equal(branches[0], unlabeled[0]["image"])  # the teaching pass
    assert len(forwards) == 1 and forwards[0].shape[0] == 2 + 2  # labeled crops and mixes, no unlabeled crop
    assert torch.equal(forwards[0][:2], labeled[0]["image"])
    mixes = forwards[0][2:]
    assert ((mixes == unlabeled[0]["image"]) & (mixes != labeled[0]["image"])).any()  # unlabeled voxels, mixed in
    assert trainer.state.output["copy_paste"] > 0 and "weight_copy_paste" in trainer.state.output
    assert all(not torch.equal(a, b) for a, b in zip(before, branch_params))  # both branches trained

def test_no_dropout_teaching_pass_with_batch_norm_trains(tiny_dual_net) -> None:
    # the teaching pass restores the batch-norm running statistics in place; it runs before the training forward,
    # so autograd never sees those buffers change after it used them
    from semiseg.networks import DualNet, ResVNet, VNet

    torch.manual_seed(0)
    net = DualNet(VNet(in_channels=1, out_channels=2, n_filters=2, norm="batch", dropout=0.5),
                  ResVNet(in_channels=1, out_channels=2, n_filters=2, norm="batch", dropout=0.5), feature_dim=4)
    objective = DualNetworkObjective(cross_pseudo=CrossPseudoSupervisionLoss(), pseudo_label_pass="no_dropout")
    trainer = make_trainer(net, make_batches(1, 2), make_batches(1, 2, labeled=False, seed=3), objective=objective,
                           iterations=2)
    trainer.run()
    assert trainer.state.iteration == 2 and trainer.state.output["cps"] > 0
