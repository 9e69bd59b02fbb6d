"""The reliability estimator: where the entropy percentile, its schedule and the class balance are configured once.

The dual-network objective hands the estimator both branches' probabilities on the unlabeled items and passes the
resulting :class:`~semiseg.losses.entropy_filter.ReliabilityMasks` to every term that reads them (entropy-filtered
supervision, prototype contrast), and keeps them for diagnostics. See :func:`compute_reliability` for the rule, after

    Lu, Wu, Chaddad, Daqqaq, Kateb (2025) Enhancing Dual Network Based Semi-Supervised Medical Image Segmentation
    with Uncertainty-Guided Pseudo-Labeling. Knowledge-Based Systems (arXiv 2509.13084).

Inside :func:`semiseg.losses.distributed.global_batch` (the objective opens it) the percentiles are taken over the
entropies of all processes' batches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from semiseg.arguments import check_bool, flag
from semiseg.losses.entropy_filter import ReliabilityMasks, _check_fusion, _check_percentile, compute_reliability

__all__ = ["ReliabilityEstimator"]


class ReliabilityEstimator:
    """
    Reliability masks and the fused pseudo-label of two networks' probabilities, with one percentile setting.

    Example::

        estimator = ReliabilityEstimator(percentile=20.0, class_balanced=True)
        masks = estimator(torch.softmax(logits_a, 1), torch.softmax(logits_b, 1), iteration=100)
    """

    def __init__(
        self,
        percentile: float = 20.0,
        class_balanced: bool | str = False,
        schedule: Callable[[int], float] | None = None,
        fusion: str = "confident",
    ) -> None:
        """
        Args:
            percentile: q in (0, 100]: a voxel is reliable for a network when its entropy is at most the q-th
                percentile of that network's entropies over the batch. Used when ``schedule`` is None.
            class_balanced: take the percentile over the voxels of each predicted class separately, so about q %
                of every predicted class is reliable (see :func:`compute_reliability`). Text from the command line
                (``"true"``/``"false"``, as :func:`semiseg.arguments.flag` reads it) is accepted.
            schedule: optional ``iteration -> q``, which then replaces ``percentile``.
            fusion: which voxels' pseudo-labels are trusted, ``"confident"`` (reliable for either network, the
                paper's rule) or ``"agreement"`` (reliable for both, same class); see :func:`compute_reliability`.

        Raises:
            ValueError: when ``percentile`` is outside (0, 100], ``class_balanced`` is neither a bool nor a flag's
                text, ``schedule`` is neither None nor callable, or ``fusion`` is not one of
                :data:`~semiseg.losses.entropy_filter.FUSIONS`.
        """
        self.percentile = _check_percentile(percentile)
        if isinstance(class_balanced, str):
            class_balanced = flag(class_balanced, "class_balanced")
        check_bool(class_balanced, "class_balanced")
        if schedule is not None and not callable(schedule):
            raise ValueError(f"schedule must be None or a callable iteration -> percentile, got {schedule!r}.")
        self.fusion = _check_fusion(fusion)
        self.class_balanced = class_balanced
        self.schedule = schedule

    def percentile_at(self, iteration: int | None = None) -> float:
        """The percentile q in (0, 100] used at ``iteration`` (the fixed ``percentile`` without schedule or iteration).

        Raises:
            ValueError: when the schedule gives a value outside (0, 100].
        """
        if self.schedule is None or iteration is None:
            return self.percentile
        return _check_percentile(float(self.schedule(iteration)))

    def __call__(
        self, probs_a: torch.Tensor, probs_b: torch.Tensor, iteration: int | None = None
    ) -> ReliabilityMasks:
        """
        Args:
            probs_a: class probabilities of network A, shape (B, C, *spatial), C >= 2.
            probs_b: class probabilities of network B, same shape.
            iteration: the trainer's iteration, read by ``schedule``.

        Returns:
            the :class:`ReliabilityMasks` of the batch, every field (B, 1, *spatial), without gradient.
        """
        return compute_reliability(probs_a, probs_b, self.percentile_at(iteration), self.class_balanced, self.fusion)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(percentile={self.percentile}, class_balanced={self.class_balanced}, "
            f"schedule={self.schedule!r}, fusion={self.fusion!r})"
        )
