"""The device of this process, the one fact that train, multi-GPU train and inference configs share about it, and the
layout its 3D convolutions run fastest in."""

from __future__ import annotations

import os

import torch

__all__ = ["conv_memory_format", "process_device"]


def process_device() -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU.

    ``LOCAL_RANK`` is set by ``torchrun`` for each process of a node; a single process (no ``LOCAL_RANK``) gets
    ``cuda:0``, as the model zoo's ``train.json`` files do. The bundle configs call it as
    ``"device": "$semiseg.bundle.process_device()"``, so ``multi_gpu_train.json`` does not override the device.

    Raises:
        ValueError: when ``LOCAL_RANK`` is set but is not a non-negative integer.
    """
    if not torch.cuda.is_available():
        return torch.device("cpu")
    text = os.environ.get("LOCAL_RANK", "0").strip()
    if not text.isdigit():
        raise ValueError(f"LOCAL_RANK must be a non-negative integer (torchrun sets it), got {text!r}.")
    return torch.device(f"cuda:{int(text)}")


def conv_memory_format(device: str | torch.device) -> torch.memory_format:
    """The layout to give a 3D network's weights on ``device``: ``channels_last_3d`` on the CPU, unchanged elsewhere.

    On the CPU, oneDNN runs the 3D convolutions of the bundles' narrow networks faster when the weights are
    channels-last: PyTorch then runs every convolution (and its backward) channels-last, whatever the input's layout.
    Measured on 2 cores, the LA demo's training iteration (4-filter dual network, teaching pass, batch of 6 crops of
    64x64x32 with the copy-paste mixes): 0.71-0.73 s against 0.92 s contiguous.
    The results are those of the contiguous network up to float rounding (the order of the sums changes). On CUDA the
    layout is left as it is (not measured here). The bundle configs call it as
    ``"network": "$@network_def.to(@device, memory_format=semiseg.bundle.conv_memory_format(@device))"``.

    Args:
        device: the device the network runs on.

    Returns:
        ``torch.channels_last_3d`` for a CPU device, else ``torch.preserve_format``.
    """
    return torch.channels_last_3d if torch.device(device).type == "cpu" else torch.preserve_format
