"""monai-semiseg: semi-supervised 3D medical image segmentation as a MONAI plugin.

Dual-network training with cross pseudo supervision, entropy-filtered pseudo-labels,
KL-divergence uncertainty weighting and prototype contrast, after Lu et al.,
"Enhancing Dual Network Based Semi-Supervised Medical Image Segmentation with
Uncertainty-Guided Pseudo-Labeling", Knowledge-Based Systems 2025 (arXiv 2509.13084).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
