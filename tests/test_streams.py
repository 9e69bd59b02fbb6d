"""DataStream: a loader read pass after pass whose position a resumed run replays exactly."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, RandFlipd, RandSpatialCropd
from monai.utils import set_determinism
from torch.utils.data import Dataset, DistributedSampler

from semiseg.engines.streams import DataStream, augmentation_random_states, forked_torch_rng


class CountingDataset(Dataset):
    """Items 0..n-1; counts how many were loaded."""

    def __init__(self, n: int) -> None:
        self.n, self.loads = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        self.loads += 1
        return index


def _take(stream: DataStream, iterator, count: int) -> tuple[list[int], object]:
    taken = []
    for _ in range(count):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = stream.open()
            batch = next(iterator)
        taken.extend(batch.tolist())
    return taken, iterator


def test_a_resumed_stream_continues_mid_pass_without_loading_the_skipped_cases() -> None:
    torch.manual_seed(0)
    full = DataStream(DataLoader(CountingDataset(10), batch_size=2, shuffle=True))
    reference, _ = _take(full, full.open(), 12)  # 2.4 passes of 5 batches

    torch.manual_seed(0)
    first = DataStream(DataLoader(CountingDataset(10), batch_size=2, shuffle=True))
    before, _ = _take(first, first.open(), 7)  # killed in the second pass, after 2 of its batches
    state, rng = first.state_dict(), torch.get_rng_state()
    assert (state["passes"], state["taken"]) == (2, 2)

    torch.manual_seed(123)  # whatever the new process starts with: the checkpoint's random state is restored
    dataset = CountingDataset(10)
    resumed = DataStream(DataLoader(dataset, batch_size=2, shuffle=True))
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    after, _ = _take(resumed, resumed.open(), 5)
    assert before + after == reference
    assert dataset.loads == 10  # the 4 skipped cases of the second pass were never loaded: 3 + 5 batches of 2
    assert resumed.passes == 3 and resumed.taken == 2


def test_distributed_sampler_gets_the_pass_as_epoch_and_iterables_skip_by_loading() -> None:
    sampler = DistributedSampler(CountingDataset(8), num_replicas=2, rank=1, shuffle=True, seed=3)
    stream = DataStream(DataLoader(CountingDataset(8), batch_size=1, sampler=sampler), set_sampler_epoch=True)
    iterator = stream.open()
    assert sampler.epoch == 1
    first = [int(next(iterator)) for _ in range(4)]
    second = [int(b) for b in stream.open()]
    assert sampler.epoch == 2 and len(first) == len(second) == 4 and first != second  # another shuffle

    replay = DataStream([["a"], ["b"], ["c"]])
    replay.load_state_dict({"passes": 1, "taken": 2, "pass_rng": torch.empty(0, dtype=torch.uint8)})
    assert list(replay.open()) == [["c"]] and replay.taken == 3


def test_forked_rng_gives_back_the_current_state() -> None:
    torch.manual_seed(1)
    saved = torch.get_rng_state()
    torch.rand(3)
    current = torch.get_rng_state()
    with forked_torch_rng(saved):
        torch.manual_seed(1)
        assert torch.equal(torch.get_rng_state(), saved)
        torch.rand(5)
    assert torch.equal(torch.get_rng_state(), current)


def test_augmentation_states_reach_nested_random_transforms() -> None:
    set_determinism(0)
    transform = Compose([RandSpatialCropd("image", roi_size=(2, 2)), RandFlipd("image", prob=0.5)])
    data = [{"image": np.arange(16, dtype=np.float32).reshape(1, 4, 4) + i} for i in range(3)]
    loader = DataLoader(CacheDataset(data, transform, progress=False), batch_size=1)
    generators = augmentation_random_states(loader, loader)
    # the Compose, the crop, the crop's own cropper, the flip: each once
    assert len(generators) == 4 and len({id(g) for g in generators}) == 4
    states = [g.get_state() for g in generators]
    first = [b["image"].clone() for b in loader]
    for g, s in zip(generators, states):
        g.set_state(s)
    assert all(torch.equal(a, b["image"]) for a, b in zip(first, loader))
    set_determinism(None)
