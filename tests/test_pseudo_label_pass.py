"""Tests of semiseg.engines.pseudo_label_pass and the pseudo-label passes "no_dropout" and "mean_teacher"."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ignite.handlers import EMAHandler

from semiseg.engines import DualNetworkObjective, SemiSupervisedTrainer, no_dropout_logits
from semiseg.losses import CrossPseudoSupervisionLoss, EntropyFilteredLoss, KLUncertaintyLoss
from semiseg.networks import DualNet, ResVNet, VNet

from conftest import make_batches
from test_objective import UNLABELED_TERMS, fake_outputs, full_objective, labels


def _dual(norm: str) -> DualNet:
    torch.manual_seed(0)
    return DualNet(VNet(n_filters=2, norm=norm, dropout=0.5), ResVNet(n_filters=2, norm=norm, dropout=0.5), 4)


def _teacher(n: int = 2, size: int = 6, seed: int = 7) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(n, 2, size, size, size, generator=gen) * 2 for k in ("logits_a", "logits_b")}


def test_no_dropout_pass_is_deterministic_leaves_no_trace_and_no_graph() -> None:
    net = _dual("batch").train()
    x = torch.randn(2, 1, 32, 32, 32)
    buffers = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}
    first, second = no_dropout_logits(net, x), no_dropout_logits(net, x)
    assert torch.equal(first["logits_a"], second["logits_a"]) and torch.equal(first["logits_b"], second["logits_b"])
    assert not first["logits_a"].requires_grad
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in buffers.items())  # running statistics untouched
    assert net.training and all(m.training for m in net.modules())  # dropout back on
    # with dropout on the training forward differs from call to call
    assert not torch.equal(net.forward_branches(x)[0], net.forward_branches(x)[0])


def test_no_dropout_pass_equals_eval_mode_under_instance_norm() -> None:
    net = _dual("instance").train()
    x = torch.randn(1, 1, 32, 32, 32)
    teacher = no_dropout_logits(torch.nn.parallel.DataParallel(net), x)  # wrappers are unwrapped
    net.eval()
    with torch.no_grad():
        a, b = net.forward_branches(x)
    assert torch.allclose(teacher["logits_a"], a, atol=1e-5) and torch.allclose(teacher["logits_b"], b, atol=1e-5)


def test_cps_learns_the_teacher_argmax() -> None:
    gen = torch.Generator().manual_seed(0)
    u_a, u_b, t_a, t_b = (torch.randn(2, 2, 4, 4, 4, generator=gen) for _ in range(4))
    loss = CrossPseudoSupervisionLoss()(u_a, u_b, teacher_a=t_a, teacher_b=t_b)
    expected = F.cross_entropy(u_a, t_b.argmax(1)) + F.cross_entropy(u_b, t_a.argmax(1))
    assert torch.allclose(loss, expected)
    assert not torch.allclose(loss, CrossPseudoSupervisionLoss()(u_a, u_b))


@pytest.mark.parametrize("term", UNLABELED_TERMS)
def test_no_dropout_teacher_terms_train_the_students_not_the_teacher(term: str) -> None:
    objective = full_objective(pseudo_label_pass="no_dropout")
    outputs, teacher = fake_outputs(), {k: v.requires_grad_() for k, v in _teacher().items()}
    out = objective(outputs, labels(), iteration=0, teacher_logits=teacher)
    out[term].backward()
    keys = ("features_a", "features_b") if term == "contrastive" else ("logits_a", "logits_b")
    for key in keys:
        grad = outputs[key].grad
        assert grad is not None and grad[2:].abs().sum() > 0 and grad[:2].abs().sum() == 0, (term, key)
    assert all(t.grad is None for t in teacher.values()), term


@pytest.mark.parametrize("term", ("cps", "entropy_filter", "kl", "contrastive"))
def test_teacher_logits_change_the_pseudo_label_terms(term: str) -> None:
    outputs = fake_outputs()
    train = full_objective()(outputs, labels(), iteration=0)
    no_dropout = full_objective(pseudo_label_pass="no_dropout")(outputs, labels(), 0, teacher_logits=_teacher())
    assert not torch.allclose(train[term], no_dropout[term]), term
    assert torch.allclose(train["consistency"], no_dropout["consistency"])  # student against student either way


def test_missing_or_misshapen_teacher_is_a_clear_error() -> None:
    objective = full_objective(pseudo_label_pass="no_dropout")
    assert objective.needs_teacher_pass and not full_objective().needs_teacher_pass
    with pytest.raises(ValueError, match="needs teacher_logits"):
        objective(fake_outputs(), labels(), iteration=0)
    with pytest.raises(ValueError, match="shape"):
        objective(fake_outputs(), labels(), iteration=0, teacher_logits=_teacher(n=3))
    with pytest.raises(ValueError, match="pseudo_label_pass"):
        DualNetworkObjective(pseudo_label_pass="eval")


def test_trainer_runs_the_teacher_pass_and_updates_both_branches() -> None:
    net = _dual("instance")
    objective = DualNetworkObjective(
        cross_pseudo=CrossPseudoSupervisionLoss(), entropy_filter=EntropyFilteredLoss(), kl_uncertainty=KLUncertaintyLoss(),
        unlabeled_weight=1.0, pseudo_label_pass="no_dropout",
    )  # fmt: skip
    calls = []
    original = net.forward_branches
    net.forward_branches = lambda x: calls.append(x.shape[0]) or original(x)  # type: ignore[method-assign]
    before = [p.detach().clone() for p in net.parameters()]
    trainer = SemiSupervisedTrainer(
        device="cpu", train_data_loader=make_batches(1, 1), unlabeled_data_loader=make_batches(1, 1, labeled=False),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), objective=objective, iterations=2,
    )  # fmt: skip
    trainer.run()
    assert calls == [1, 1]  # one teacher pass per iteration, on the unlabeled item only
    assert trainer.state.output["cps"] > 0 and "kl" in trainer.state.output
    branches = [n.startswith(("branch_a", "branch_b")) for n, _ in net.named_parameters()]
    changed = [not torch.equal(a, b) for a, b in zip(before, net.parameters())]
    assert all(c for c, is_branch in zip(changed, branches) if is_branch)


def _mean_teacher_objective() -> DualNetworkObjective:
    return DualNetworkObjective(
        cross_pseudo=CrossPseudoSupervisionLoss(), entropy_filter=EntropyFilteredLoss(), kl_uncertainty=KLUncertaintyLoss(),
        unlabeled_weight=1.0, pseudo_label_pass="mean_teacher",
    )  # fmt: skip


def test_mean_teacher_pass_teaches_from_the_averaged_copy_and_trains_only_the_students() -> None:
    net, momentum = _dual("instance"), 0.25
    ema = EMAHandler(net, momentum=momentum)
    teacher = ema.ema_model
    student_calls, teacher_calls = [], []
    for module, calls in ((net, student_calls), (teacher, teacher_calls)):
        original = module.forward_branches
        module.forward_branches = lambda x, f=original, c=calls: c.append(x.shape[0]) or f(x)  # type: ignore
    start = [p.detach().clone() for p in net.parameters()]
    trainer = SemiSupervisedTrainer(
        device="cpu", train_data_loader=make_batches(1, 1), unlabeled_data_loader=make_batches(1, 1, labeled=False),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.05), objective=_mean_teacher_objective(),
        iterations=1, train_handlers=[ema], teacher_network=teacher,
    )  # fmt: skip
    trainer.run()
    assert teacher_calls == [1] and student_calls == []  # one teaching pass, on the unlabeled item, by the teacher
    assert trainer.state.output["cps"] > 0 and trainer.state.output["kl"] > 0
    for p0, p, t in zip(start, net.parameters(), teacher.parameters()):
        assert t.grad is None and not t.requires_grad  # no gradient reaches the teacher
        assert torch.allclose(t, (1 - momentum) * p0 + momentum * p.detach(), atol=1e-6)  # one EMA step
    branches = [n.startswith(("branch_a", "branch_b")) for n, _ in net.named_parameters()]
    moved = [not torch.equal(a, b) for a, b in zip(start, net.parameters())]
    assert all(m for m, is_branch in zip(moved, branches) if is_branch)  # the students learned


def test_mean_teacher_needs_a_teacher_network_and_only_it_takes_one() -> None:
    net = _dual("instance")
    kwargs = dict(device="cpu", train_data_loader=make_batches(1, 1), unlabeled_data_loader=None, network=net,
                  optimizer=torch.optim.SGD(net.parameters(), lr=0.01), iterations=1)  # fmt: skip
    with pytest.raises(ValueError, match="needs teacher_network"):
        SemiSupervisedTrainer(objective=_mean_teacher_objective(), **kwargs)
    objective = DualNetworkObjective(cross_pseudo=CrossPseudoSupervisionLoss(), pseudo_label_pass="no_dropout")
    with pytest.raises(ValueError, match="teaches only with pseudo_label_pass='mean_teacher'"):
        SemiSupervisedTrainer(objective=objective, teacher_network=_dual("instance"), **kwargs)
