"""A data loader read pass after pass, with a position that a checkpoint saves and a resumed run replays exactly."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable, Transform
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.data.dataloader import _SingleProcessDataLoaderIter

__all__ = [
    "DataStream",
    "augmentation_random_states",
    "forked_torch_rng",
    "load_numpy_random_state",
    "numpy_random_state_dict",
]

logger = logging.getLogger(__name__)


class DataStream:
    """One data loader read pass after pass, and where the run is in it.

    The position is the number of passes started, the batches taken in the current pass, and the torch (CPU) random
    state just before the current pass's iterator was made: that state decides the pass's shuffling (a
    ``RandomSampler`` draws its seed from it) and its worker seeds. A :class:`DistributedSampler` is given the pass
    number as its epoch when ``set_sampler_epoch`` is True.

    After :meth:`load_state_dict`, the next :meth:`open` replays the saved pass: it re-makes the iterator from the
    saved random state (restoring the current one afterwards) and skips the batches already taken. With a torch
    ``DataLoader`` without workers the skip advances the sampler only, so no skipped case is loaded or transformed;
    with workers (or any other iterable) the skipped batches are loaded and dropped, at most one pass of loading.
    The random augmentations are not replayed by the skip: their state is saved separately
    (:func:`augmentation_random_states`).

    Args:
        loader: the data loader (or any re-iterable of batches).
        set_sampler_epoch: call ``sampler.set_epoch(pass)`` on a ``DistributedSampler`` before each pass.
    """

    def __init__(self, loader: Iterable, set_sampler_epoch: bool = False) -> None:
        self.loader = loader
        self.set_sampler_epoch = set_sampler_epoch
        self.passes = 0
        self.taken = 0
        self._pass_rng = torch.empty(0, dtype=torch.uint8)
        self._replay = False

    def open(self) -> Iterator:
        """The iterator of the next pass, or of the saved pass (less the batches taken) right after a resume."""
        if self._replay:
            self._replay = False
            if self.taken > 0:
                return self._counted(self._replayed(), start=self.taken)
        self.passes += 1
        self._set_epoch()
        self._pass_rng = torch.get_rng_state()
        return self._counted(iter(self.loader), start=0)

    def state_dict(self) -> dict[str, Any]:
        return {"passes": self.passes, "taken": self.taken, "pass_rng": self._pass_rng.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.passes, self.taken = int(state["passes"]), int(state["taken"])
        self._pass_rng = state["pass_rng"]
        self._replay = True

    def _set_epoch(self) -> None:
        sampler = getattr(self.loader, "sampler", None)
        if self.set_sampler_epoch and isinstance(sampler, DistributedSampler):
            sampler.set_epoch(self.passes)

    def _replayed(self) -> Iterator:
        self._set_epoch()
        with forked_torch_rng(self._pass_rng):
            iterator = iter(self.loader)
            if isinstance(iterator, _SingleProcessDataLoaderIter) and isinstance(self.loader, DataLoader):
                for _ in range(self.taken):  # the sampler alone: nothing is loaded
                    try:
                        iterator._next_index()
                    except StopIteration:
                        break
                    iterator._num_yielded += 1
            else:
                for _ in range(self.taken):
                    if next(iterator, None) is None:
                        break
        return iterator

    def _counted(self, iterator: Iterator, start: int) -> Iterator:
        self.taken = start
        return _Counting(iterator, self)


class _Counting:
    """An iterator that counts the batches it hands out in its stream's ``taken``."""

    def __init__(self, iterator: Iterator, stream: DataStream) -> None:
        self.iterator, self.stream = iterator, stream

    def __iter__(self) -> _Counting:
        return self

    def __next__(self) -> Any:
        batch = next(self.iterator)
        self.stream.taken += 1
        return batch


@contextmanager
def forked_torch_rng(state: torch.Tensor) -> Iterator[None]:
    """Run the block with the torch CPU generator in ``state`` and give it back its current state afterwards."""
    current = torch.get_rng_state()
    if state.numel() > 0:
        torch.set_rng_state(state)
    try:
        yield
    finally:
        torch.set_rng_state(current)


def augmentation_random_states(*loaders: Any) -> list[np.random.RandomState]:
    """The random generators of the MONAI random transforms of the loaders' datasets, each once, in a stable order.

    These decide the random crops, flips and rotations of the batches made in this process (``num_workers=0``; a
    worker has its own copies, seeded from the loader's worker seed). They are seeded by ``set_determinism`` and the
    MONAI ``DataLoader`` and advance with every case transformed, so an exact resume restores them.
    """
    found: dict[int, np.random.RandomState] = {}
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if isinstance(obj, (list, tuple)):
            for item in obj:
                visit(item)
            return
        if not isinstance(obj, (Transform, Randomizable)) or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(getattr(obj, "R", None), np.random.RandomState):
            found.setdefault(id(obj.R), obj.R)
        for value in vars(obj).values():  # nested transforms too, e.g. the cropper inside RandSpatialCropd
            visit(value)

    for loader in loaders:
        visit(getattr(getattr(loader, "dataset", None), "transform", None))
    return list(found.values())


def numpy_random_state_dict(generator: np.random.RandomState) -> dict[str, Any]:
    """The state of a numpy ``RandomState`` as tensors and numbers, loadable with ``torch.load(weights_only=True)``."""
    name, keys, pos, has_gauss, cached = generator.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": (has_gauss, cached)}


def load_numpy_random_state(generator: np.random.RandomState, state: dict[str, Any]) -> None:
    """Put a state made by :func:`numpy_random_state_dict` back into ``generator``."""
    generator.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], *state["gauss"]))
