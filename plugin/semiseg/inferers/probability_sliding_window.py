"""Sliding-window inference that averages overlapping windows as probabilities, not as log-probabilities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.inferers import SlidingWindowInferer

__all__ = ["ProbabilitySlidingWindowInferer"]


class ProbabilitySlidingWindowInferer(SlidingWindowInferer):
    """``SlidingWindowInferer`` that blends the windows' softmax probabilities and returns their log.

    MONAI's inferer averages whatever the network returns. For a network that returns logits or log-probabilities
    (``DualNet`` in eval mode returns the log of its branches' mean probabilities) that average is a geometric mean
    of the windows' probabilities: a voxel whose three windows give foreground 0.001, 0.8 and 0.8 ends at 0.20 after
    the softmax, where the windows' average is 0.53. This inferer applies the softmax to each window (over dim 1),
    lets MONAI blend those probabilities (``mode="constant"``: their mean; ``"gaussian"``: a weighted mean), and
    returns ``log`` of the blend, clamped to the smallest positive float so that it stays finite. A softmax of the
    result gives the blended probabilities back, so the bundles' ``Activationsd(softmax=True)`` and ``AsDiscreted(
    argmax=True)`` stay as they are. It takes every argument of ``SlidingWindowInferer``.

    The overlapping windows of the sliding-window evaluation of the LA literature (stride 18x18x4 for a 112x112x80
    window, Yu et al., "Uncertainty-aware Self-ensembling Model for Semi-supervised 3D Left Atrium Segmentation",
    MICCAI 2019) are averaged as softmax probabilities there too.
    """

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Log of the blended window probabilities.

        Args:
            inputs: ``(B, C_in, *spatial)``.
            network: a callable returning logits or log-probabilities ``(B, C, *window)`` for one batch of windows.

        Returns:
            ``(B, C, *spatial)``: ``log`` of the blended softmax probabilities.

        Raises:
            ValueError: when the network returns something else than one tensor.
        """

        def probabilities(window: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            out = network(window, *a, **k)
            if not isinstance(out, torch.Tensor):
                raise ValueError(
                    f"ProbabilitySlidingWindowInferer needs a network that returns one tensor of logits or "
                    f"log-probabilities, got {type(out).__name__} (is the network in training mode?)."
                )
            return torch.softmax(out.float(), dim=1)

        blended = super().__call__(inputs, probabilities, *args, **kwargs)
        return torch.log(blended.clamp_min(torch.finfo(blended.dtype).tiny))
