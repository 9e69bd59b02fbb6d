"""glibc's allocator told to keep the memory a training step frees, so that the next step does not fault it in again.

On Linux, glibc returns large freed blocks (a 3D network's activations) to the kernel after every step and maps them
again on the next: about 1e5 page faults per step of the CPU demo, a third of its wall time spent in the kernel. Three
of glibc's ``mallopt`` parameters keep them in the heap. Results are bit-identical (only where memory comes from
changes). The same settings can be given as environment variables before Python starts (:data:`ALLOCATOR_ENV`); a
variable the user has set wins over the value here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

__all__ = ["ALLOCATOR_ENV", "keep_freed_memory"]

logger = logging.getLogger(__name__)

# environment variable -> (mallopt parameter of glibc's malloc.h, value); values fit mallopt's C int
_SETTINGS: dict[str, tuple[int, int]] = {
    "MALLOC_MMAP_THRESHOLD_": (-3, 32 * 1024**2),  # M_MMAP_THRESHOLD: blocks up to 32 MiB (glibc's most) from the heap
    "MALLOC_TRIM_THRESHOLD_": (-1, 1024**3),  # M_TRIM_THRESHOLD: keep up to 1 GiB free at the heap's top
    "MALLOC_TOP_PAD_": (-2, 256 * 1024**2),  # M_TOP_PAD: grow the heap 256 MiB at a time
}

ALLOCATOR_ENV: dict[str, str] = {name: str(value) for name, (_, value) in _SETTINGS.items()}
"""The same settings as environment variables, for a process started by another (``scripts/quality.py``)."""


def keep_freed_memory() -> dict[str, int]:
    """Set glibc's allocator to keep freed blocks of up to 32 MiB (called by the bundles' ``initialize``).

    A setting whose environment variable is set is left to it. Without glibc (macOS, Windows, musl) nothing
    changes.

    Returns:
        the settings applied, ``{environment variable name: value}`` (empty without glibc).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return {}
    applied = {}
    for variable, (parameter, value) in _SETTINGS.items():
        if variable not in os.environ and mallopt(parameter, value) == 1:  # mallopt returns 1 on success
            applied[variable] = value
    logger.debug("glibc allocator settings: %s", applied)
    return applied
