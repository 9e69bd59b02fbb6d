"""Sliding-window inference that averages overlapping windows as probabilities, not as log-probabilities."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
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

    ``mirror_axes`` adds test-time mirroring as nnU-Net does it (Isensee et al., "nnU-Net: a self-configuring method
    for deep learning-based biomedical image segmentation", Nature Methods 2021): each window is also passed flipped
    along every non-empty subset of those spatial axes, each output is flipped back, and the window's probability is
    the mean over the ``2 ** len(mirror_axes)`` passes (that many times the network's cost). Mirror only along axes
    the training augmentation flips (the LA bundle's ``RandFlipd`` on spatial axes 0 and 1), or the extra passes see
    images unlike any the network learned from.

    Args:
        mirror_axes: spatial axes (0 for the first spatial dimension, as ``RandFlipd``'s ``spatial_axis``) to mirror
            along; empty (default) for one pass per window.
        kwargs: every argument of ``SlidingWindowInferer`` (``roi_size``, ``sw_batch_size``, ``overlap``, ``mode``...).

    Raises:
        ValueError: when ``mirror_axes`` repeats an axis or holds a negative one.
    """

    def __init__(self, *args: Any, mirror_axes: Sequence[int] = (), **kwargs: Any) -> None:
        axes = [int(a) for a in mirror_axes]
        if len(set(axes)) != len(axes) or any(a < 0 for a in axes):
            raise ValueError(f"mirror_axes must be distinct non-negative spatial axes, got {list(mirror_axes)}.")
        super().__init__(*args, **kwargs)
        self.mirror_axes = axes

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
            ValueError: when the network returns something else than one tensor, or ``mirror_axes`` names an axis
                the input does not have.
        """
        if any(a >= inputs.ndim - 2 for a in self.mirror_axes):
            raise ValueError(
                f"mirror_axes {self.mirror_axes} name an axis beyond the {inputs.ndim - 2} spatial axes of the input."
            )
        axes = self.mirror_axes
        flips = [tuple(a + 2 for a in subset) for size in range(len(axes) + 1) for subset in combinations(axes, size)]

        def one_pass(window: torch.Tensor, dims: tuple[int, ...], *a: Any, **k: Any) -> torch.Tensor:
            out = network(torch.flip(window, dims) if dims else window, *a, **k)
            if not isinstance(out, torch.Tensor):
                raise ValueError(
                    f"ProbabilitySlidingWindowInferer needs a network that returns one tensor of logits or "
                    f"log-probabilities, got {type(out).__name__} (is the network in training mode?)."
                )
            out = torch.softmax(out.float(), dim=1)
            return torch.flip(out, dims) if dims else out

        def probabilities(window: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            total = one_pass(window, flips[0], *a, **k)
            for dims in flips[1:]:  # a running sum: one probability map held, however many passes
                total = total + one_pass(window, dims, *a, **k)
            return total / len(flips)

        blended = super().__call__(inputs, probabilities, *args, **kwargs)
        return torch.log(blended.clamp_min(torch.finfo(blended.dtype).tiny))
