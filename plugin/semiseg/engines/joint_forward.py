"""The training step's one forward pass: labeled crops, unlabeled crops and copy-paste mixes through the network at once.

One call per step keeps one autograd graph (what ``DistributedDataParallel`` expects) and lets normalisation see the
whole step's batch. ``SemiSupervisedTrainer`` and the gradient-alignment diagnostic (``scripts/term_alignment.py``)
both assemble their step with it, so the diagnostic measures the terms on what training computes.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from semiseg.losses.copy_paste import CopyPasteBatch

__all__ = ["joint_forward"]


def joint_forward(
    network: nn.Module,
    image_l: torch.Tensor,
    image_u: torch.Tensor | None = None,
    mixed: CopyPasteBatch | None = None,
) -> tuple[dict[str, torch.Tensor], tuple[dict[str, torch.Tensor], CopyPasteBatch] | None]:
    """Run ``network`` once on the concatenation of the step's parts and split its outputs again.

    Args:
        network: a ``DualNet`` in training mode (or one wrapped in ``DistributedDataParallel``), returning a dict of
            batch-first tensors (``logits_a``, ``logits_b``, ...).
        image_l: labeled crops, ``(B_l, C_in, *spatial)``.
        image_u: unlabeled crops as the students see them, ``(B_u, C_in, *spatial)``; None when no term reads the
            network's output on them (``DualNetworkObjective.reads_unlabeled_outputs``).
        mixed: the copy-paste term's mixes (``CopyPasteSupervision.mix``), ``mixed.image`` ``(B_m, C_in, *spatial)``;
            None without that term. MONAI ``MetaTensor`` inputs are then passed as plain tensors, since per-item
            transform histories cannot follow the mixes.

    Returns:
        ``(outputs, copy_paste)``: ``outputs`` the network's outputs on the labeled and unlabeled crops, each
        ``(B_l + B_u, ...)``; ``copy_paste`` ``(outputs on the mixes, each (B_m, ...), mixed)``, or None without mixes.
    """
    parts = [image_l, *(() if image_u is None else (image_u,)), *(() if mixed is None else (mixed.image,))]
    if mixed is not None:
        parts = [p.as_subclass(torch.Tensor) for p in parts]
    outputs = network(torch.cat(parts, dim=0) if len(parts) > 1 else image_l)
    if mixed is None:
        return outputs, None
    n = sum(p.shape[0] for p in parts[:-1])
    return {k: v[:n] for k, v in outputs.items()}, ({k: v[n:] for k, v in outputs.items()}, mixed)
