"""The teaching pass of the pseudo-label terms: both branches' logits without dropout, without gradient.

The pass ``"mean_teacher"`` runs it on an exponential moving average of the network's weights instead of the network
itself (Tarvainen and Valpola, "Mean teachers are better role models", NeurIPS 2017; Yu et al., "Uncertainty-aware
Self-ensembling Model for Semi-supervised 3D Left Atrium Segmentation", MICCAI 2019).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.dropout import _DropoutNd

__all__ = ["PSEUDO_LABEL_PASSES", "no_dropout_logits"]

#: where pseudo-labels, reliability masks and teacher distributions come from: ``"train"`` the training forward
#: itself (dropout active, as in the released recipe); ``"no_dropout"`` a second, gradient-free forward of both
#: branches with their dropout layers off (see :func:`no_dropout_logits`); ``"mean_teacher"`` the same pass of a copy of
#: the network whose weights are the exponential moving average of the trained ones (the trainer's
#: ``teacher_network``, e.g. the ``ema_model`` of ignite's ``EMAHandler``), so each branch learns from the average
#: of its partner's recent weights
PSEUDO_LABEL_PASSES = ("train", "no_dropout", "mean_teacher")


@torch.no_grad()
def no_dropout_logits(network: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Both branches' logits on ``x`` with every dropout layer off and everything else as in training.

    With the demo's 4-filter branches, ``Dropout3d(0.5)`` over the last feature map drops all channels of an item
    about 1 time in 16, and that branch then predicts a constant over the patch, which the training-mode forward
    would teach its partner. This pass teaches from the same weights without that noise. Normalisation layers stay
    in training mode (batch statistics, so the teacher sees what the student sees) and their running statistics are
    restored afterwards, so the extra forward changes no buffer. Runs under ``torch.no_grad``: no gradient flows
    through the teacher.

    Args:
        network: a ``DualNet`` (or one wrapped in ``DistributedDataParallel`` / ``DataParallel``) with
            ``forward_branches(x) -> (logits_a, logits_b)``.
        x: ``(B, C_in, *spatial)``.

    Returns:
        ``{"logits_a", "logits_b"}``, each ``(B, C, *spatial)``, detached.

    Raises:
        ValueError: when the network has no ``forward_branches``.
    """
    module = network.module if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else network
    if not callable(getattr(module, "forward_branches", None)):
        raise ValueError(f"{type(module).__name__} has no forward_branches(x); a DualNet is needed for this pass.")
    dropouts = [m for m in module.modules() if isinstance(m, _DropoutNd) and m.training]
    norms = [m for m in module.modules() if isinstance(m, _NormBase) and m.training and m.track_running_stats]
    saved = [(m, {name: b.clone() for name, b in m.named_buffers(recurse=False) if b is not None}) for m in norms]
    try:
        for m in dropouts:
            m.eval()
        logits_a, logits_b = module.forward_branches(x)
    finally:
        for m in dropouts:
            m.train()
        for m, buffers in saved:
            for name, value in buffers.items():
                getattr(m, name).copy_(value)
    return {"logits_a": logits_a, "logits_b": logits_b}
