"""The device of this process, the one fact that train, multi-GPU train and inference configs share about it."""

from __future__ import annotations

import os

import torch

__all__ = ["process_device"]


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
