"""monai-semiseg: semi-supervised 3D medical image segmentation as a MONAI plugin.

Dual-network training with cross pseudo supervision, entropy-filtered pseudo-labels,
KL-divergence uncertainty weighting and prototype contrast, after Lu et al.,
"Enhancing Dual Network Based Semi-Supervised Medical Image Segmentation with
Uncertainty-Guided Pseudo-Labeling", Knowledge-Based Systems 2025 (arXiv 2509.13084).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.1.0"

__all__ = ["__version__"]

_SUBMODULES = (
    "arguments", "auto3dseg", "bundle", "data", "engines", "handlers", "inferers", "losses", "networks", "visualize"
)


def __getattr__(name: str) -> ModuleType:
    """``semiseg.<submodule>`` imported on first use, so that a bundle config's ``$import semiseg`` is enough for its
    expressions (``semiseg.bundle.flag(...)``) while ``import semiseg`` alone stays light."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
