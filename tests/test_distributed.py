"""Data-parallel training equals one process with the whole batch: the objective's loss, gradients and prototypes
from two gloo processes with half the batch each, against one process with the whole batch."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from semiseg.engines import DualNetworkObjective
from semiseg.losses import (
    CrossPseudoSupervisionLoss,
    CrossReliableSupervisionLoss,
    EntropyFilteredLoss,
    KLUncertaintyLoss,
    PredictionConsistencyLoss,
    PrototypeContrastiveLoss,
    ReliabilityEstimator,
)
from semiseg.losses.distributed import all_gather_cat, all_reduce_sum, global_batch, world_size
from semiseg.networks import DualNet, ResVNet, VNet

from conftest import make_batches

WORLD = 2
PER_RANK = 2


def _setup(teacher_mode: str) -> tuple[torch.nn.Module, DualNetworkObjective, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = DualNet(
        VNet(1, 2, n_filters=2, norm="instance", dropout=0.0), ResVNet(1, 2, n_filters=2, norm="instance", dropout=0.0),
        feature_dim=4,
    )
    objective = DualNetworkObjective(
        cross_pseudo=CrossPseudoSupervisionLoss(),
        entropy_filter=EntropyFilteredLoss(),
        kl_uncertainty=KLUncertaintyLoss(),
        consistency=PredictionConsistencyLoss(),
        contrastive=PrototypeContrastiveLoss(num_classes=2, max_samples=10**6),
        cross_reliable=CrossReliableSupervisionLoss(),
        teacher_mode=teacher_mode,
        reliability=ReliabilityEstimator(percentile=30.0, class_balanced=True),
        unlabeled_weight=0.5,
        contrastive_weight=0.5,
    )
    (labeled,) = make_batches(1, WORLD * PER_RANK, size=32)
    (unlabeled,) = make_batches(1, WORLD * PER_RANK, size=32, labeled=False, seed=3)
    return net, objective, labeled["image"], labeled["label"], unlabeled["image"]


def _loss_and_grads(net, objective, image_l, label_l, image_u) -> dict:
    terms = objective(net(torch.cat([image_l, image_u])), label_l, iteration=50)
    terms["loss"].backward()
    return {
        "terms": {k: v.detach() for k, v in terms.items()},
        "grads": [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in net.parameters()],
        "prototypes": objective.contrastive_a.prototypes.clone(),
    }


def _worker(rank: int, init_file: str, out: str, teacher_mode: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        net, objective, image_l, label_l, image_u = _setup(teacher_mode)
        shard = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        result = _loss_and_grads(net, objective, image_l[shard], label_l[shard], image_u[shard])
        # what DDP does with the gradients (and what the global loss is): the average over the processes
        with global_batch():
            result["grads"] = [all_reduce_sum(g) / WORLD for g in result["grads"]]
            result["terms"] = {k: all_reduce_sum(v) / WORLD for k, v in result["terms"].items()}
        # without the global batch the prototypes would be this shard's own
        with global_batch(False):
            local = PrototypeContrastiveLoss(num_classes=2, max_samples=10**6)
            feats = net(torch.cat([image_l[shard], image_u[shard]]))["features_a"][PER_RANK:].detach()
            ones = torch.ones(PER_RANK, 1, *feats.shape[2:], dtype=torch.bool)
            local(feats, (image_u[shard] > 0.5).long(), ones, ~ones)
        result["local_prototypes"] = local.prototypes
        with global_batch():
            result["gathered"] = all_gather_cat(torch.full((1,), float(rank)))
        result["world_outside"] = world_size()
        torch.save(result, f"{out}_{rank}.pt")
    finally:
        dist.destroy_process_group()


def _compare(tmp_path, teacher_mode: str) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path / "rank"), teacher_mode), nprocs=WORLD, join=True)
    whole = _loss_and_grads(*_setup(teacher_mode))
    ranks = [torch.load(tmp_path / f"rank_{r}.pt", weights_only=True) for r in range(WORLD)]
    for result in ranks:
        assert result["world_outside"] == 1 and result["gathered"].tolist() == [0.0, 1.0]
        assert set(result["terms"]) == set(whole["terms"])
        for name, value in whole["terms"].items():
            if name != "reliable_fraction":  # a statistic of the shard, logged per process
                torch.testing.assert_close(result["terms"][name], value, rtol=1e-4, atol=1e-5, msg=name)
        for got, expected in zip(result["grads"], whole["grads"]):  # convolutions of 2 vs 4 items round differently
            assert (got - expected).norm() <= 1e-3 * expected.norm() + 1e-7
        torch.testing.assert_close(result["prototypes"], whole["prototypes"], rtol=1e-4, atol=1e-6)
    assert whole["terms"]["contrastive"] > 0 and whole["terms"]["entropy_filter"] > 0
    # the shards' own prototypes differ: the all-reduce is what makes the ranks agree
    assert not torch.allclose(ranks[0]["local_prototypes"], ranks[1]["local_prototypes"], atol=1e-3)


@pytest.mark.slow
def test_two_processes_with_half_the_batch_equal_one_with_the_whole_batch(tmp_path) -> None:
    _compare(tmp_path, "symmetric")


@pytest.mark.slow
def test_weaker_branch_is_chosen_on_the_global_batch(tmp_path) -> None:
    _compare(tmp_path, "weaker")


def test_helpers_are_the_identity_in_one_process() -> None:
    x = torch.arange(4.0)
    with global_batch():
        assert world_size() == 1 and all_reduce_sum(x) is x and all_gather_cat(x) is x


def _find_state(rank: int, init_file: str, folders: list[str], out: str) -> None:
    from semiseg.handlers.training_state import _same_on_every_rank, find_resume_checkpoint

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        try:
            found = str(_same_on_every_rank(find_resume_checkpoint(folders[rank])))
        except ValueError as error:
            found = f"error: {error}"
        torch.save({"found": found}, f"{out}_{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_that_see_different_state_files_stop_with_an_error_on_every_rank(tmp_path) -> None:
    shared, other = tmp_path / "shared", tmp_path / "other"
    for folder in (shared, other):
        folder.mkdir()
        torch.save({"trainer": {"iteration": 4}}, folder / "state_checkpoint_4.pt")
    torch.save({"trainer": {"iteration": 8}}, shared / "state_checkpoint_8.pt")  # rank 1 does not see this one
    for name, folders in (("same", [str(shared), str(shared)]), ("differ", [str(shared), str(other)])):
        mp.spawn(_find_state, args=(str(tmp_path / f"init_{name}"), folders, str(tmp_path / name)), nprocs=WORLD)
        found = [torch.load(tmp_path / f"{name}_{r}.pt", weights_only=True)["found"] for r in range(WORLD)]
        if name == "same":
            assert found == [str(shared / "state_checkpoint_8.pt")] * WORLD
        else:
            assert all(f.startswith("error: the ranks found different checkpoints") for f in found)
            assert "rank 0: " + str(shared / "state_checkpoint_8.pt") in found[0]
            assert "rank 1: " + str(other / "state_checkpoint_4.pt") in found[1]
