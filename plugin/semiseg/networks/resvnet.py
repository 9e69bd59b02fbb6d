# Copyright (c) monai-semiseg contributors
# Licensed under the Apache License, Version 2.0

"""A 3D ResNet-34 encoder with the V-Net decoder: the second branch of the dual-network method."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.nets.resnet import ResNetBlock

from semiseg.arguments import check_int
from semiseg.networks.vnet import NORM_KINDS, EncoderDecoderNet, VNetDecoder, norm_spec

__all__ = ["ResVNet"]

_RESNET34_BLOCKS = (3, 4, 6, 3)


class ResVNet(EncoderDecoderNet):
    """A 3D ResNet-34 encoder with a V-Net decoder.

    The second, architecturally different, branch of the dual-network method of Lu et al., "Enhancing Dual Network
    Based Semi-Supervised Medical Image Segmentation with Uncertainty-Guided Pseudo-Labeling", Knowledge-Based
    Systems 2025; pairing a V-Net with a residual V-Net comes from MCF (Wang et al., "MCF: Mutual Correction
    Framework for Semi-Supervised Medical Image Segmentation", CVPR 2023). The encoder follows ResNet-34 (He et al.,
    "Deep Residual Learning for Image Recognition", CVPR 2016) in 3D:

    - stem: one 3x3x3 convolution to ``n`` channels at full resolution, normalisation, ReLU;
    - four stages of 3, 4, 6, 3 basic residual blocks (MONAI's :class:`~monai.networks.nets.resnet.ResNetBlock`)
      of widths ``2n, 4n, 8n, 16n``; the first block of each stage has stride 2 and a 1x1x1 projection shortcut,
      so the bottleneck is at 1/16 of the input size, as in :class:`~semiseg.networks.VNet`;
    - the decoder of :class:`~semiseg.networks.VNet` (:class:`~semiseg.networks.vnet.VNetDecoder`): transposed
      convolutions, additive skips from the stage outputs and the stem, stages of 3, 3, 2, 1 convolutions;
    - ``Dropout3d`` on the bottleneck and on the last decoder stage; a 1x1x1 output convolution.

    Parameters with ``n_filters=16``, ``in_channels=1, out_channels=2``: 17,924,402 with batch, instance or group
    norm; 17,914,978 with ``norm="none"``.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels (classes, background included).
        n_filters: width of the stem and of the last decoder stage.
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"`` (see :func:`~semiseg.networks.vnet.norm_spec`).
        dropout: probability of the two ``Dropout3d`` layers; 0 disables them.

    Shapes:
        input ``(B, in_channels, D, H, W)`` with ``D, H, W`` divisible by 16; logits
        ``(B, out_channels, D, H, W)``; decoder features ``(B, n_filters, D, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        norm: str = "batch",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        for arg_name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("n_filters", n_filters)):
            check_int(value, arg_name, 1)
        if norm not in NORM_KINDS:
            raise ValueError(f"norm must be one of {NORM_KINDS}, got {norm!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.feature_channels = n_filters
        n = n_filters

        self.stem = Convolution(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=n,
            kernel_size=3,
            padding=1,
            act="relu",
            norm=norm_spec(norm, n),
            adn_ordering="NA",
            bias=norm == "none",
        )
        stages = []
        width_in = n
        for width, num_blocks in zip((2 * n, 4 * n, 8 * n, 16 * n), _RESNET34_BLOCKS):
            block_norm = norm_spec(norm, width) or ""  # "" is MONAI's spelling of "no normalisation"
            shortcut = Convolution(
                spatial_dims=3,
                in_channels=width_in,
                out_channels=width,
                strides=2,
                kernel_size=1,
                padding=0,
                act=None,
                norm=norm_spec(norm, width),
                bias=False,
            )
            blocks = [ResNetBlock(width_in, width, spatial_dims=3, stride=2, downsample=shortcut, norm=block_norm)]
            blocks += [ResNetBlock(width, width, spatial_dims=3, norm=block_norm) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            width_in = width
        self.stages = nn.ModuleList(stages)
        self.bottleneck_dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.decoder = VNetDecoder(n, norm, residual=True)
        self.decoder_dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.output_conv = nn.Conv3d(n, out_channels, kernel_size=1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the stem and of each ResNet stage (the last is the bottleneck)."""
        x = self.stem(x)
        skips: list[torch.Tensor] = [x]
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips
