"""The command-line arguments that the benchmark commands share: device and threads, patch and counts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from semiseg.arguments import check_int, is_integer

__all__ = [
    "DEFAULT_PATCH",
    "DEFAULT_VOLUME",
    "check_patch",
    "check_positive",
    "device_of",
    "step_arguments",
    "triple",
]

DEFAULT_PATCH = (64, 64, 32)
"""The default of every command: the LA demo overlay's patch until 0.4.12 (48x48x32 since) and the label-limited
protocol's, kept so that the speed figures stay comparable across releases."""

DEFAULT_VOLUME = (80, 80, 48)
"""Size of the phantom that ``inference`` segments by default."""


def triple(value: int | str | Sequence[int], name: str) -> tuple[int, int, int]:
    """``64`` -> (64, 64, 64); ``"64,64,32"`` or (64, 64, 32) -> (64, 64, 32); anything else is a ValueError."""
    if isinstance(value, str):
        parts: Any = [p for p in value.replace("x", ",").split(",") if p.strip()]
    elif is_integer(value):
        parts = [value] * 3
    else:
        parts = list(value)  # type: ignore[arg-type]
    try:
        numbers = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be three positive integers like 64,64,32, got {value!r}.") from None
    if len(numbers) != 3 or min(numbers) < 1:
        raise ValueError(f"{name} must be three positive integers like 64,64,32, got {value!r}.")
    return numbers  # type: ignore[return-value]


def check_positive(**values: int) -> None:
    """Each keyword argument must be a positive integer; the error names it."""
    for name, value in values.items():
        check_int(value, name, 1)


def check_patch(patch: tuple[int, int, int]) -> None:
    """The networks downsample 16x: every axis of the patch must be divisible by 16."""
    if any(p % 16 for p in patch):
        raise ValueError(
            f"patch {list(patch)} must be divisible by 16 on every axis (VNet and ResVNet downsample 16x)."
        )


def device_of(device: str, threads: int | None) -> torch.device:
    """The torch device ``cpu`` or ``cuda[:N]`` (which must be available); sets torch's CPU threads when given."""
    if threads is not None:
        check_int(threads, "threads", 1)
        torch.set_num_threads(threads)
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine.")
    return torch.device(device)


def step_arguments(
    device: str,
    threads: int | None,
    patch: int | str | Sequence[int],
    **counts: int,
) -> tuple[torch.device, tuple[int, int, int]]:
    """Check the arguments of a training-step benchmark; return the device and the patch as a triple.

    ``counts`` (repeats, iterations, n_filters, feature_dim, batch sizes...) must all be positive integers.
    """
    check_positive(**counts)
    dev = device_of(device, threads)
    patch_t = triple(patch, "patch")
    check_patch(patch_t)
    return dev, patch_t
