# Copyright (c) monai-semiseg contributors
# Licensed under the Apache License, Version 2.0

"""Two segmentation branches with projection heads, exported as one segmentation network."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from semiseg.arguments import check_int, is_integer

__all__ = ["DualNet"]


class DualNet(nn.Module):
    """Two different segmentation networks trained together, seen from outside as one segmentation network.

    The network of the dual-network method of Lu et al., "Enhancing Dual Network Based Semi-Supervised Medical Image
    Segmentation with Uncertainty-Guided Pseudo-Labeling", Knowledge-Based Systems 2025 (arXiv 2509.13084): branches
    A and B (by default :class:`~semiseg.networks.VNet` and :class:`~semiseg.networks.ResVNet`), each with a
    projection head for the prototype contrastive loss.

    - Training mode: ``forward(x)`` returns a dict with ``"logits_a"``, ``"logits_b"`` ``(B, C, D, H, W)`` and
      ``"features_a"``, ``"features_b"`` ``(B, feature_dim, D, H, W)``: each branch's decoder features passed through
      its head (1x1x1 conv, ReLU, 1x1x1 conv). They are not L2-normalised here: the contrastive loss normalises the
      few voxels it reads, which spares a full-resolution normalisation and its backward (a quarter of a CPU step
      at the demo's size). All trainable work happens inside ``forward``, so ``DistributedDataParallel`` sees every
      parameter used.
    - Eval mode: ``forward(x)`` returns one tensor ``(B, C, D, H, W)``, the log of the mean of the two branches'
      softmax probabilities, computed as ``logaddexp(log_softmax(z_a), log_softmax(z_b)) - log 2`` (finite without a
      clamp). ``Activationsd(softmax=True)`` on it gives the averaged probabilities and its argmax the segmentation,
      so MONAI inferers, MONAI Label and ``ckpt_export`` see an ordinary segmentation network. Overlapping
      sliding windows should be blended as probabilities: MONAI's ``SlidingWindowInferer`` averages these
      log-probabilities (a geometric mean); :class:`~semiseg.inferers.ProbabilitySlidingWindowInferer`, the bundles'
      inferer, averages their softmax and returns its log.
    - TorchScript (``torch.jit.script``) compiles only the eval path: a scripted ``DualNet`` always returns the
      ensemble tensor, whatever its mode. ``torch.jit.trace`` of an eval-mode ``DualNet`` also gives the eval path.

    Args:
        branch_a: first branch, with ``forward_features(x) -> (logits, features)`` and integer attributes
            ``feature_channels`` and ``out_channels`` (e.g. :class:`~semiseg.networks.VNet`, or any MONAI network
            wrapped in :class:`~semiseg.networks.DecoderFeatureAdapter`).
        branch_b: second branch, same requirements and the same ``out_channels``.
        feature_dim: channels of the projected features.

    Raises:
        ValueError: when ``feature_dim < 1``, a branch lacks ``forward_features``, ``feature_channels`` or
            ``out_channels``, or the branches' ``out_channels`` differ.
    """

    def __init__(self, branch_a: nn.Module, branch_b: nn.Module, feature_dim: int = 32) -> None:
        super().__init__()
        check_int(feature_dim, "feature_dim", 1)
        for name, branch in (("branch_a", branch_a), ("branch_b", branch_b)):
            if not isinstance(branch, nn.Module):
                raise ValueError(f"{name} must be a torch.nn.Module, got {type(branch).__name__}.")
            if not callable(getattr(branch, "forward_features", None)):
                raise ValueError(
                    f"{name} ({type(branch).__name__}) has no forward_features(x) -> (logits, features); "
                    "wrap it in semiseg.networks.DecoderFeatureAdapter."
                )
            for attribute in ("feature_channels", "out_channels"):
                value = getattr(branch, attribute, None)
                if not is_integer(value) or value < 1:
                    raise ValueError(
                        f"{name} ({type(branch).__name__}) needs a positive integer {attribute}, got {value!r}."
                    )
        if branch_a.out_channels != branch_b.out_channels:
            raise ValueError(
                f"the branches must have the same out_channels, got {branch_a.out_channels} (branch_a) "
                f"and {branch_b.out_channels} (branch_b)."
            )
        self.branch_a = branch_a
        self.branch_b = branch_b
        self.out_channels = int(branch_a.out_channels)
        self.feature_dim = feature_dim
        self.head_a = self._projection_head(int(branch_a.feature_channels), feature_dim)
        self.head_b = self._projection_head(int(branch_b.feature_channels), feature_dim)

    @staticmethod
    def _projection_head(in_channels: int, feature_dim: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv3d(in_channels, in_channels, kernel_size=1),
            nn.ReLU(),
            nn.Conv3d(in_channels, feature_dim, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Training mode: dict of both branches' logits and projected features; eval mode: ensemble log-probabilities.

        Args:
            x: ``(B, C_in, D, H, W)``.

        Returns:
            Training mode (eager only): ``{"logits_a", "logits_b"}`` ``(B, C, D, H, W)`` and
            ``{"features_a", "features_b"}`` ``(B, feature_dim, D, H, W)``, the projection heads' outputs (not
            normalised).
            Eval mode, or TorchScript: ``log((softmax(z_a) + softmax(z_b)) / 2)``, ``(B, C, D, H, W)``.
        """
        if torch.jit.is_scripting():
            return self._ensemble(x)
        if self.training:
            return self._forward_train(x)
        return self._ensemble(x)

    def forward_branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each branch's logits ``(B, C, D, H, W)``, for evaluating the branches separately."""
        return self.branch_a(x), self.branch_b(x)

    def _ensemble(self, x: torch.Tensor) -> torch.Tensor:
        logits_a, logits_b = self.forward_branches(x)
        log_probs = torch.logaddexp(F.log_softmax(logits_a, dim=1), F.log_softmax(logits_b, dim=1))
        return log_probs - math.log(2.0)

    def _forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits_a, features_a = self.branch_a.forward_features(x)
        logits_b, features_b = self.branch_b.forward_features(x)
        return {
            "logits_a": logits_a,
            "logits_b": logits_b,
            "features_a": self.head_a(features_a),
            "features_b": self.head_b(features_b),
        }
