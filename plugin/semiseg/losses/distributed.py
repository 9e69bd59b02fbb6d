"""The global batch of a data-parallel run: the statistics that the loss terms take over the whole batch.

Under ``DistributedDataParallel`` every process holds a shard of the batch and DDP averages the gradients. A term that
is a mean over all voxels then trains as on one device with the whole batch, but a term built from batch
statistics does not: the entropy percentile, the class prototypes, the number of reliable voxels or anchors a mean is
divided by, the choice of the weaker network. Inside :func:`global_batch` (the ``DualNetworkObjective`` opens it on
every call) these statistics are reduced over the processes, so each process computes the shard of what one
process with the whole batch computes. Outside it, or without an initialised process group of several processes,
every helper here returns its input unchanged, so single-process results are bit-identical.

Every process must call the same helpers in the same order (the collectives pair up); the objective does, since the
shards have the same shape. Only detached tensors are reduced, so no gradient crosses processes here (DDP averages
the parameters' gradients as usual).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.distributed as dist

__all__ = ["all_gather_cat", "all_reduce_sum", "global_batch", "global_mean_divisor", "world_size"]

_ENABLED: ContextVar[bool] = ContextVar("semiseg_global_batch", default=False)


@contextmanager
def global_batch(enabled: bool = True) -> Iterator[None]:
    """Within the block, batch statistics of the loss terms are taken over the batches of all processes."""
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def world_size() -> int:
    """The number of processes the batch is shared by: 1 outside :func:`global_batch` or without a process group."""
    if not _ENABLED.get() or not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of a detached tensor over the processes (the tensor itself for one process)."""
    if world_size() == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """The detached tensors of all processes concatenated along dim 0 in rank order; every shape must be equal.

    Args:
        tensor: shape (N, ...), the same on every process.

    Returns:
        shape (world_size * N, ...); the tensor itself for one process.
    """
    size = world_size()
    if size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.detach().contiguous())
    return torch.cat(parts, dim=0)


def global_mean_divisor(count: torch.Tensor) -> torch.Tensor:
    """What a sum over this process's shard is divided by so that DDP's average is the mean over the global batch.

    With ``count`` the local number of items the mean is taken over, the global count divided by the number of
    processes, at least 1 / world size (``count`` clamped to 1 for one process).
    """
    size = world_size()
    if size == 1:
        return count.clamp_min(1)
    return all_reduce_sum(count.float()).clamp_min(1) / size
