# Copyright (c) monai-semiseg contributors
# Licensed under the Apache License, Version 2.0

"""Expose a decoder feature map of any segmentation network, so it can be a branch of :class:`DualNet`."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from semiseg.arguments import is_integer

__all__ = ["DecoderFeatureAdapter"]

_INTERPOLATION_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}
_DRY_RUN_SIZES = (16, 32, 64)


class DecoderFeatureAdapter(nn.Module):
    """Give any segmentation network the ``forward_features`` interface of :class:`~semiseg.networks.VNet`.

    ``forward(x)`` is ``network(x)`` unchanged (so the adapter scripts and exports like the wrapped network).
    ``forward_features(x)`` also returns the output of the submodule named ``layer``, captured by a forward hook
    that exists only during that call, and resized trilinearly to the logits' spatial size when it is smaller.
    If the submodule runs more than once in a forward pass, its last output is used.

    Which layer to pick (the last decoder map before the output convolution, with more channels than classes):

    - :class:`monai.networks.nets.UNet`: ``layer="model.1"``, the outermost skip connection; it outputs
      ``2 * channels[0]`` channels at half resolution (the final up-sampling ``model.2`` goes straight to
      ``out_channels``), so it is up-sampled to full resolution.
    - :class:`monai.networks.nets.SegResNet`: ``layer="up_layers.<len(blocks_up) - 1>"`` (``"up_layers.2"`` with the
      default ``blocks_up=(1, 1, 1)``), ``init_filters`` channels at full resolution, just before ``conv_final``.

    Args:
        network: a segmentation network ``(B, C_in, *spatial) -> (B, C_out, *spatial)``, e.g. built from a bundle
            config with ``_target_``.
        layer: name of the submodule, as in ``dict(network.named_modules())``.
        feature_channels: channels of that submodule's output; when ``None``, found by a dry run on a zero input
            (batch 1, cubes of side 16, 32 or 64, the first that the network accepts), in eval mode and without
            gradients. ``out_channels`` is read from ``network.out_channels`` or found by the same dry run.

    Raises:
        ValueError: when ``layer`` names no submodule (the message lists some valid names), when
            ``feature_channels`` is not positive, or when the dry run fails.

    Example::

        unet = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2))
        branch = DecoderFeatureAdapter(unet, layer="model.1")
        logits, features = branch.forward_features(torch.rand(2, 1, 64, 64, 48))  # features: (2, 32, 64, 64, 48)
    """

    def __init__(self, network: nn.Module, layer: str, feature_channels: int | None = None) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}.")
        modules = dict(network.named_modules())
        if layer not in modules or layer == "":
            names = [name for name in modules if name]
            shown = names[:8] + (["..."] if len(names) > 12 else []) + names[max(8, len(names) - 4) :]
            raise ValueError(
                f"layer {layer!r} is not a submodule of {type(network).__name__}; "
                f"valid names include: {', '.join(shown)}."
            )
        if feature_channels is not None and (not is_integer(feature_channels) or feature_channels < 1):
            raise ValueError(f"feature_channels must be a positive integer or None, got {feature_channels!r}.")
        self.network = network
        self.layer = layer
        out_channels = getattr(network, "out_channels", None)
        if feature_channels is None or not isinstance(out_channels, int):
            logits, features = self._dry_run()
            feature_channels = feature_channels or int(features.shape[1])
            out_channels = int(logits.shape[1])
        self.feature_channels: int = feature_channels
        self.out_channels: int = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the wrapped network, ``(B, out_channels, *spatial)``."""
        return self.network(x)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the logits and the feature map of ``layer``.

        Args:
            x: input ``(B, C_in, *spatial)`` of the wrapped network.

        Returns:
            ``(logits, features)``: ``(B, out_channels, *spatial)`` and ``(B, feature_channels, *spatial)``.

        Raises:
            ValueError: when the layer did not run, returned something other than a tensor, or returned a map
                larger than the logits.
        """
        logits, features = self._run_with_hook(x)
        if features.shape[2:] != logits.shape[2:]:
            if any(f > s for f, s in zip(features.shape[2:], logits.shape[2:])):
                raise ValueError(
                    f"layer {self.layer!r} output {tuple(features.shape)} is larger than the logits "
                    f"{tuple(logits.shape)}; pick a decoder layer at or below the output resolution."
                )
            mode = _INTERPOLATION_MODES[features.ndim - 2]
            features = F.interpolate(features, size=logits.shape[2:], mode=mode, align_corners=False)
        return logits, features

    def _run_with_hook(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured: list[torch.Tensor] = []

        def keep_output(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            if not isinstance(output, torch.Tensor):
                raise ValueError(
                    f"layer {self.layer!r} returns {type(output).__name__}, not a tensor; pick another layer."
                )
            captured.append(output)

        handle = self.network.get_submodule(self.layer).register_forward_hook(keep_output)
        try:
            logits = self.network(x)
        finally:
            handle.remove()
        if not captured:
            raise ValueError(f"layer {self.layer!r} did not run during the forward pass of the network.")
        return logits, captured[-1]

    def _dry_run(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network once on zeros to find the channels of the logits and of ``layer``."""
        first_conv = next((m for m in self.network.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
        if first_conv is None:
            raise ValueError(
                "cannot infer feature_channels: the network has no convolution to take the input shape from; "
                "pass feature_channels explicitly."
            )
        reference = next(self.network.parameters())
        spatial_dims = len(first_conv.kernel_size)
        was_training = self.network.training
        self.network.eval()
        errors = []
        try:
            with torch.no_grad():
                for size in _DRY_RUN_SIZES:
                    x = reference.new_zeros((1, first_conv.in_channels) + (size,) * spatial_dims)
                    try:
                        return self._run_with_hook(x)
                    except (RuntimeError, ValueError) as error:
                        errors.append(f"{size}: {error}")
        finally:
            self.network.train(was_training)
        raise ValueError(
            f"cannot infer feature_channels: a dry run of {type(self.network).__name__} failed for input sides "
            f"{_DRY_RUN_SIZES} ({'; '.join(errors)}); pass feature_channels explicitly."
        )
