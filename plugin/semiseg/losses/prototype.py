"""Prototype contrastive loss: uncertain voxels are pulled to the prototype of their pseudo-class."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from semiseg.arguments import check_int, check_number, is_number
from semiseg.losses.distributed import all_reduce_sum, global_mean_divisor, world_size
from semiseg.losses.validation import check_reduction

__all__ = ["PrototypeContrastiveLoss"]


class PrototypeContrastiveLoss(_Loss):
    """
    InfoNCE of uncertain voxels' features against class prototypes built from reliable voxels.

    For one network with projected decoder features ``f`` (B, F, *spatial), each voxel's feature L2-normalised before
    use (only the voxels read are normalised, so the network need not normalise the whole map):

    - the prototype of class c is the L2-normalised mean feature of the voxels that are reliable and have
      pseudo-label c, over the whole batch (only the reliable voxels' features are read, gathered by index); prototypes are detached and, with ``ema_momentum`` m, blended with the
      stored ones, ``P <- normalise(m * P_stored + (1 - m) * P_batch)``;
    - at most ``max_samples`` uncertain voxels are drawn uniformly without replacement as anchors (with
      ``torch.randperm``, so reproducible under ``torch.manual_seed``); the cost does not grow with the volume;
    - anchor i of pseudo-class c costs ``-log softmax_k(f_i . P_k / tau)[c]``: pulled to its class prototype and
      pushed from the others.

    Gradient reaches the anchors' features only. A class with no prototype (no reliable voxel in the batch and no
    valid stored prototype) is left out of the softmax and its anchors are skipped; with no anchor left the loss is
    a 0 connected to the graph.

    The prototypes are persistent buffers, ``prototypes`` (num_classes, F) float32 and ``prototype_valid``
    (num_classes,) bool, so a checkpoint of the loss resumes the EMA. ``prototypes`` has 0 columns until the first
    call (or until a state_dict is loaded), since F is known only from the features. The stored prototypes are
    updated only in training mode (as BatchNorm's running statistics); without EMA they hold the last batch's.
    Inside :func:`semiseg.losses.distributed.global_batch` of a data-parallel run (the objective opens it), the
    per-class feature sums and counts are summed over the processes, so every process uses the prototypes of the
    global batch, and the mean divides by the global number of anchors; ``max_samples`` applies per process.

    After Lu et al. (2025), Knowledge-Based Systems (arXiv 2509.13084), which contrast uncertain voxels with
    class prototypes; for prototype/anchor contrast of unreliable pixels see also:

        Wang, Y., Wang, H., Shen, Y., Fei, J., Li, W., Jin, G., Wu, L., Zhao, R., Le, X. (2022) Semi-Supervised
        Semantic Segmentation Using Unreliable Pseudo-Labels. CVPR 2022.
    """

    def __init__(
        self,
        num_classes: int = 2,
        temperature: float = 0.1,
        max_samples: int = 4096,
        ema_momentum: float | None = None,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        """
        Args:
            num_classes: number of classes C of the pseudo-labels, >= 2.
            temperature: tau > 0 of the softmax over the anchor-prototype similarities.
            max_samples: the most uncertain voxels used as anchors per call, >= 1.
            ema_momentum: m in [0, 1) of the exponential moving average of the prototypes across calls, or None to
                use each batch's prototypes alone. With m = 0 the batch prototypes are used, but a class absent from
                the batch keeps its stored prototype.
            reduction: ``"mean"`` (mean over anchors), ``"sum"`` (sum over anchors) or ``"none"`` (the loss of each
                anchor, shape (S,) with S <= ``max_samples`` the number of anchors used, in sampling order).

        Raises:
            ValueError: when an argument is outside the range above or ``reduction`` is not "mean", "sum", "none".
        """
        check_int(num_classes, "num_classes", 2)
        check_number(temperature, "temperature", 0.0, low_open=True)
        check_int(max_samples, "max_samples", 1)
        if ema_momentum is not None and not (is_number(ema_momentum) and 0.0 <= ema_momentum < 1.0):
            raise ValueError(f"ema_momentum must be None or a number in [0, 1), got {ema_momentum!r}.")
        reduction = check_reduction(reduction)
        super().__init__(reduction=reduction)
        self.num_classes = int(num_classes)
        self.temperature = float(temperature)
        self.max_samples = int(max_samples)
        self.ema_momentum = None if ema_momentum is None else float(ema_momentum)
        self.register_buffer("prototypes", torch.zeros(self.num_classes, 0))
        self.register_buffer("prototype_valid", torch.zeros(self.num_classes, dtype=torch.bool))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # the feature size is known only after the first call: size an unused buffer like the stored one
        stored = state_dict.get(prefix + "prototypes")
        if isinstance(stored, torch.Tensor) and stored.ndim == 2 and self.prototypes.shape[1] == 0:
            self.prototypes = torch.zeros(
                self.num_classes, stored.shape[1], dtype=self.prototypes.dtype, device=self.prototypes.device
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self, features: torch.Tensor, pseudo_label: torch.Tensor, reliable: torch.Tensor, uncertain: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            features: projected decoder features of one network, shape (B, F, *spatial); normalised or not, each
                voxel's feature vector is L2-normalised here before use.
            pseudo_label: integer pseudo-labels in [0, num_classes), shape (B, 1, *spatial).
            reliable: bool, voxels whose features build the prototypes, shape (B, 1, *spatial).
            uncertain: bool, voxels that may be sampled as anchors, shape (B, 1, *spatial).

        Returns:
            a 0-dim tensor for ``reduction`` "mean" and "sum"; the per-anchor losses (S,) for "none".

        Raises:
            ValueError: on shapes that do not match (B, 1, *spatial) of the features, masks that are not bool,
                pseudo-labels outside [0, num_classes), or features whose size F differs from the stored prototypes'.
        """
        if features.ndim < 3:
            raise ValueError(f"features must have shape (B, F, *spatial), got {tuple(features.shape)}.")
        expected = (features.shape[0], 1, *features.shape[2:])
        for name, tensor in (("pseudo_label", pseudo_label), ("reliable", reliable), ("uncertain", uncertain)):
            if tuple(tensor.shape) != expected:
                raise ValueError(
                    f"{name} must have shape {expected} to match features of shape {tuple(features.shape)}, "
                    f"got {tuple(tensor.shape)}."
                )
        for name, tensor in (("reliable", reliable), ("uncertain", uncertain)):
            if tensor.dtype != torch.bool:
                raise ValueError(f"{name} must be a bool tensor, got dtype {tensor.dtype}.")
        if pseudo_label.dtype.is_floating_point or pseudo_label.dtype == torch.bool:
            raise ValueError(f"pseudo_label must be an integer tensor, got dtype {pseudo_label.dtype}.")
        num_features = features.shape[1]
        if self.prototypes.shape[1] not in (0, num_features):
            raise ValueError(
                f"features have {num_features} channels but the stored prototypes have {self.prototypes.shape[1]}."
            )
        batch = features.shape[0]
        labels = pseudo_label.reshape(batch, -1).long()  # (B, N)
        if labels.numel() > 0 and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"pseudo_label values must be in [0, {self.num_classes}), got values in "
                f"[{int(labels.min())}, {int(labels.max())}]."
            )

        prototypes, valid = self._prototypes(features, labels, reliable.reshape(batch, -1))

        # anchors: uncertain voxels whose class has a prototype, at most max_samples of them
        candidates = uncertain.reshape(batch, -1) & valid[labels]
        flat_index = candidates.reshape(-1).nonzero().squeeze(1)
        if flat_index.numel() > self.max_samples:
            keep = torch.randperm(flat_index.numel(), device=flat_index.device)[: self.max_samples]
            flat_index = flat_index[keep]
        num_voxels = labels.shape[1]
        anchors = features.flatten(2)[flat_index // num_voxels, :, flat_index % num_voxels]  # (S, F)
        anchors = F.normalize(anchors.float(), dim=1)
        anchor_labels = labels.reshape(-1)[flat_index]

        similarity = anchors @ prototypes.t() / self.temperature  # (S, C)
        similarity = similarity.masked_fill(~valid, float("-inf"))
        loss = -F.log_softmax(similarity, dim=1).gather(1, anchor_labels[:, None]).squeeze(1)  # (S,)
        if self.reduction == LossReduction.NONE.value:
            return loss
        if world_size() > 1 and self.reduction == LossReduction.MEAN.value:
            # every process divides by the global number of anchors (DDP then averages to the global mean)
            anchors = torch.tensor(loss.numel(), device=loss.device)
            return loss.sum() / global_mean_divisor(anchors) + features.sum() * 0.0
        if loss.numel() == 0:
            return features.sum() * 0.0
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        return loss.sum()

    @torch.no_grad()
    def _prototypes(
        self, features: torch.Tensor, labels: torch.Tensor, reliable: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Prototypes of this call (batch prototypes, blended with the stored ones under EMA), and which are valid.

        Args:
            features: (B, F, *spatial) features.
            labels: (B, N) long pseudo-labels.
            reliable: (B, N) bool reliability mask.

        Returns:
            prototypes (C, F) float32, L2-normalised (zero rows where invalid), and valid (C,) bool.
        """
        with torch.autocast(device_type=features.device.type, enabled=False):
            # read only the reliable voxels (R of B * N): their normalised features summed per class
            flat_index = reliable.reshape(-1).nonzero().squeeze(1)  # (R,)
            num_voxels = labels.shape[1]
            picked = features.detach().flatten(2)[flat_index // num_voxels, :, flat_index % num_voxels]  # (R, F)
            picked = F.normalize(picked.float(), dim=1)
            picked_labels = labels.reshape(-1)[flat_index]  # (R,)
            sums = picked.new_zeros(self.num_classes, picked.shape[1]).index_add_(0, picked_labels, picked)
            counts = torch.bincount(picked_labels, minlength=self.num_classes).float()  # (C,)
            if world_size() > 1:  # the prototypes of the global batch: one all-reduce of the sums and counts
                reduced = all_reduce_sum(torch.cat([sums, counts[:, None]], dim=1))
                sums, counts = reduced[:, :-1], reduced[:, -1]
        batch_valid = counts > 0
        batch_prototypes = F.normalize(sums, dim=1)  # zero rows stay zero

        if self.ema_momentum is None:
            prototypes, valid = batch_prototypes, batch_valid
        else:
            stored = self.prototypes.to(batch_prototypes.device)
            stored_valid = self.prototype_valid.to(batch_valid.device)
            if stored.shape[1] == 0:
                stored, stored_valid = torch.zeros_like(batch_prototypes), torch.zeros_like(batch_valid)
            blended = F.normalize(self.ema_momentum * stored + (1.0 - self.ema_momentum) * batch_prototypes, dim=1)
            both = (stored_valid & batch_valid)[:, None]
            prototypes = torch.where(both, blended, torch.where(batch_valid[:, None], batch_prototypes, stored))
            valid = stored_valid | batch_valid
            prototypes = prototypes * valid[:, None]
        if self.training:  # plain tensors (not MONAI MetaTensors), so that a checkpoint loads with weights_only=True
            self.prototypes = prototypes.clone().as_subclass(torch.Tensor)
            self.prototype_valid = valid.clone().as_subclass(torch.Tensor)
        return prototypes, valid
