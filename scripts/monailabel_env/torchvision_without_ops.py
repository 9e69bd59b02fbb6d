"""Let torchvision import without its compiled operators (installed into the MONAI Label environment only).

MONAI Label 0.8.5 imports ``torchvision.utils`` at start-up (``monailabel.transform.post``), so torchvision must import.
PyPI's Linux torchvision 0.28.0 (the release for torch 2.13) is a CUDA build: its ``_C`` extension needs
``libtorch_cuda.so`` and does not load beside the CPU torch 2.13.0 wheel. torchvision is meant to work without it
(``torchvision.extension._has_ops()`` guards its operators), except that ``torchvision._meta_registrations`` registers
fake kernels for ``torchvision::nms`` and ``torchvision::qnms`` unconditionally, which fails with
``RuntimeError: operator torchvision::nms does not exist``.

This module, loaded by a ``.pth`` file at interpreter start, waits for that import (a meta-path hook, so nothing is
imported before torchvision is) and, only when the extension did not load, declares the two operator schemas, so the
registration succeeds. Calling ``torchvision.ops.nms`` still fails with torchvision's own "Couldn't load custom C++
ops" error; MONAI Label's bundle app never calls it (it uses ``make_grid`` / ``save_image``).
"""

from __future__ import annotations

import importlib.abc
import sys

__all__ = ["declare_missing_operators"]

_LIBRARIES: list = []  # keeps the torch.library.Library objects (and so the schemas) alive


def declare_missing_operators() -> bool:
    """Declare ``torchvision::nms`` and ``torchvision::qnms`` when torchvision's extension is not loaded.

    Returns:
        True when the schemas were declared, False when the extension is loaded (nothing to do).
    """
    import torch
    import torchvision.extension

    if torchvision.extension._has_ops():
        return False
    library = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        library.define(f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIBRARIES.append(library)
    return True


class _BeforeMetaRegistrations(importlib.abc.MetaPathFinder):
    """Runs :func:`declare_missing_operators` just before ``torchvision._meta_registrations`` is imported."""

    def find_spec(self, fullname, path, target=None):  # noqa: D102
        if fullname == "torchvision._meta_registrations":
            sys.meta_path.remove(self)
            declare_missing_operators()
        return None


if not any(isinstance(finder, _BeforeMetaRegistrations) for finder in sys.meta_path):
    sys.meta_path.insert(0, _BeforeMetaRegistrations())
