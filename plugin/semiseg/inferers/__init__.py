"""Inferers of the project: MONAI's sliding window, blending windows as probabilities."""

from __future__ import annotations

from .probability_sliding_window import ProbabilitySlidingWindowInferer

__all__ = ["ProbabilitySlidingWindowInferer"]
