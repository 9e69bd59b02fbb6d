# Copyright (c) monai-semiseg contributors
# Licensed under the Apache License, Version 2.0

"""The 3x3x3 V-Net of the semi-supervised segmentation benchmarks (UA-MT, MC-Net, MCF, ...)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

from semiseg.arguments import check_int

__all__ = ["EncoderDecoderNet", "VNet", "VNetStage", "VNetDecoder", "NORM_KINDS", "norm_spec", "check_divisible_input"]

NORM_KINDS = ("batch", "instance", "group", "none")
"""Normalisation kinds accepted by the networks of this package."""

_GROUP_NORM_GROUPS = 8


def norm_spec(norm: str, channels: int) -> tuple | None:
    """Translate a normalisation kind into the ``norm`` argument of MONAI blocks for ``channels`` channels.

    Args:
        norm: one of :data:`NORM_KINDS`. ``"instance"`` uses a learnable affine transform (as nnU-Net does) and is
            built as ``GroupNorm`` with one group per channel: the same statistics (per item and channel, over space),
            the same ``weight``/``bias`` parameters (checkpoints of ``InstanceNorm3d`` load), and on CPU 0.8 times
            the time of ``InstanceNorm3d`` forward and backward (``scripts/benchmark.py norm``); ``"group"`` uses 8
            groups, or the greatest common divisor of 8 and ``channels`` when 8 does not divide ``channels``;
            ``"none"`` means no normalisation.
        channels: number of channels of the layer that is normalised.

    Returns:
        A ``(name, kwargs)`` tuple for :func:`monai.networks.layers.get_norm_layer`, or ``None`` for ``"none"``.

    Raises:
        ValueError: when ``norm`` is not one of :data:`NORM_KINDS`.
    """
    if norm not in NORM_KINDS:
        raise ValueError(f"norm must be one of {NORM_KINDS}, got {norm!r}.")
    if norm == "none":
        return None
    if norm == "instance":
        return ("group", {"num_groups": channels, "affine": True})
    if norm == "group":
        return ("group", {"num_groups": math.gcd(channels, _GROUP_NORM_GROUPS)})
    return ("batch", {})


def check_divisible_input(x: torch.Tensor, in_channels: int, divisor: int, name: str) -> None:
    """Check that ``x`` is a ``(B, in_channels, D, H, W)`` batch whose spatial sizes are divisible by ``divisor``.

    Raises:
        ValueError: naming the network ``name`` and what is wrong with the input.
    """
    if x.ndim != 5:
        raise ValueError(f"{name} expects a 5D input (B, C, D, H, W), got shape {tuple(x.shape)}.")
    if x.shape[1] != in_channels:
        raise ValueError(f"{name} was built with in_channels={in_channels}, but the input has {x.shape[1]} channels.")
    spatial = tuple(int(s) for s in x.shape[2:])
    if any(s % divisor != 0 for s in spatial):
        raise ValueError(
            f"{name} input spatial size {spatial} must be divisible by {divisor} in every dimension "
            f"(four stride-2 down-samplings); pad or crop it, e.g. with monai.transforms.DivisiblePadd(k={divisor})."
        )


class VNetStage(nn.Module):
    """A V-Net stage: ``num_convs`` 3x3x3 convolutions (padding 1), each followed by normalisation and ReLU.

    With ``residual=True`` and equal input and output widths, the stage input is added to the output of the last
    convolution (after its normalisation, before its ReLU), as in Milletari et al. (2016). A stage that changes the
    width has no residual connection, so the option never adds parameters.

    Args:
        in_channels: input channels.
        out_channels: output channels of every convolution.
        num_convs: number of convolutions, at least 1.
        norm: one of :data:`NORM_KINDS`. Convolutions carry a bias only when ``norm="none"`` (a bias followed by a
            normalisation is redundant and gets no gradient).
        residual: whether to add the residual connection when the widths allow it.

    Shapes:
        ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_convs: int, norm: str = "batch", residual: bool = True):
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be at least 1, got {num_convs}.")
        layers = []
        for i in range(num_convs):
            last = i == num_convs - 1
            layers.append(
                Convolution(
                    spatial_dims=3,
                    in_channels=in_channels if i == 0 else out_channels,
                    out_channels=out_channels,
                    kernel_size=3,
                    padding=1,
                    act=None if (last and residual and in_channels == out_channels) else "relu",
                    norm=norm_spec(norm, out_channels),
                    adn_ordering="NA",
                    bias=norm == "none",
                )
            )
        self.convs = nn.Sequential(*layers)
        self.residual = residual and in_channels == out_channels
        self.act = nn.ReLU() if self.residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        if self.residual:
            out = self.act(out + x)
        return out


class _VNetUpLevel(nn.Module):
    """Transposed-conv up-sampling by 2, additive skip connection, then a :class:`VNetStage`."""

    def __init__(self, in_channels: int, out_channels: int, num_convs: int, norm: str, residual: bool):
        super().__init__()
        self.up = Convolution(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            strides=2,
            kernel_size=2,
            padding=0,
            output_padding=0,
            is_transposed=True,
            act="relu",
            norm=norm_spec(norm, out_channels),
            adn_ordering="NA",
            bias=norm == "none",
        )
        self.stage = VNetStage(out_channels, out_channels, num_convs, norm, residual)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.stage(self.up(x) + skip)


class VNetDecoder(nn.Module):
    """The V-Net decoder: four up-sampling levels with additive skips and stages of 3, 3, 2 and 1 convolutions.

    Args:
        n_filters: width at full resolution; the levels have widths ``16n -> 8n -> 4n -> 2n -> n``.
        norm: one of :data:`NORM_KINDS`.
        residual: residual connection inside each stage (see :class:`VNetStage`).

    Shapes:
        ``bottleneck``: ``(B, 16n, D/16, H/16, W/16)``; ``skips``: four maps, coarsest first,
        ``(B, 8n, D/8, ...)``, ``(B, 4n, D/4, ...)``, ``(B, 2n, D/2, ...)``, ``(B, n, D, H, W)``.
        Output: ``(B, n, D, H, W)``.
    """

    def __init__(self, n_filters: int, norm: str = "batch", residual: bool = True):
        super().__init__()
        n = n_filters
        self.levels = nn.ModuleList(
            [
                _VNetUpLevel(16 * n, 8 * n, 3, norm, residual),
                _VNetUpLevel(8 * n, 4 * n, 3, norm, residual),
                _VNetUpLevel(4 * n, 2 * n, 2, norm, residual),
                _VNetUpLevel(2 * n, n, 1, norm, residual),
            ]
        )

    def forward(self, bottleneck: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = bottleneck
        for i, level in enumerate(self.levels):
            x = level(x, skips[i])
        return x


class EncoderDecoderNet(nn.Module):
    """Shared forward pass of the V-Net-style branches: encoder levels, additive-skip decoder, 1x1x1 output conv.

    Subclasses build ``bottleneck_dropout``, ``decoder`` (a :class:`VNetDecoder`), ``decoder_dropout`` and
    ``output_conv``, set ``in_channels``, and implement ``encode(x)``, which returns the feature map of every encoder
    level, full resolution first and bottleneck last.
    """

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the logits and the last decoder stage's feature map.

        Args:
            x: ``(B, in_channels, D, H, W)``, ``D, H, W`` divisible by 16.

        Returns:
            ``(logits, features)``: ``(B, out_channels, D, H, W)`` and ``(B, n_filters, D, H, W)``; the features are
            taken before the decoder dropout.

        Raises:
            ValueError: when the input is not 5D, has the wrong number of channels or a spatial size not divisible
                by 16 (checked in eager mode only, not in TorchScript or tracing).
        """
        if not torch.jit.is_scripting():
            if not torch.jit.is_tracing():
                check_divisible_input(x, self.in_channels, 16, type(self).__name__)
        skips = self.encode(x)
        bottleneck = self.bottleneck_dropout(skips.pop())
        skips.reverse()
        features = self.decoder(bottleneck, skips)
        logits = self.output_conv(self.decoder_dropout(features))
        return logits, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, D, H, W)`` of ``x`` ``(B, in_channels, D, H, W)``."""
        return self.forward_features(x)[0]


class VNet(EncoderDecoderNet):
    """The 3x3x3 V-Net used by the semi-supervised segmentation benchmarks on Left Atrium and Pancreas-CT.

    The architecture of the benchmark family started by UA-MT (Yu et al., "Uncertainty-aware Self-ensembling Model
    for Semi-supervised 3D Left Atrium Segmentation", MICCAI 2019) and used by MC-Net, MCF and Lu et al. (KBS 2025),
    itself a lighter variant of V-Net (Milletari et al., "V-Net: Fully Convolutional Neural Networks for Volumetric
    Medical Image Segmentation", 3DV 2016):

    - encoder stages of 1, 2, 3, 3, 3 convolutions of 3x3x3 (widths ``n, 2n, 4n, 8n, 16n``), separated by stride-2
      2x2x2 convolutions;
    - decoder levels: stride-2 2x2x2 transposed convolution, additive skip connection, stages of 3, 3, 2, 1
      convolutions (widths ``8n, 4n, 2n, n``);
    - ``Dropout3d`` on the bottleneck and on the last decoder stage; a 1x1x1 output convolution.

    Two departures from the benchmark code: every stage whose input and output widths agree has a residual
    connection (all stages but the input stage; ``residual=False`` gives the benchmark's plain stages, with the same
    parameter count), and convolutions followed by a normalisation have no bias (the normalisation would cancel it).

    Parameters with ``n_filters=16``: 9,446,066 for ``in_channels=1, out_channels=2`` and batch, instance or group
    norm (the benchmark's 9,448,866 minus its 2,800 redundant biases); 9,443,266 with ``norm="none"``.

    Args:
        in_channels: number of input channels.
        out_channels: number of output channels (classes, background included).
        n_filters: width of the first stage (16 in the benchmarks).
        norm: ``"batch"`` (the benchmarks' choice), ``"instance"``, ``"group"`` or ``"none"``.
        dropout: probability of the two ``Dropout3d`` layers; 0 disables them.
        residual: residual connection inside each stage.

    Shapes:
        input ``(B, in_channels, D, H, W)`` with ``D, H, W`` divisible by 16; logits
        ``(B, out_channels, D, H, W)``; decoder features ``(B, n_filters, D, H, W)``.

    Example::

        net = VNet(in_channels=1, out_channels=2)
        logits = net(torch.rand(2, 1, 112, 112, 80))
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_filters: int = 16,
        norm: str = "batch",
        dropout: float = 0.5,
        residual: bool = True,
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

        self.input_stage = VNetStage(in_channels, n, 1, norm, residual)
        down_levels = []
        for width, num_convs in ((2 * n, 2), (4 * n, 3), (8 * n, 3), (16 * n, 3)):
            down = Convolution(
                spatial_dims=3,
                in_channels=width // 2,
                out_channels=width,
                strides=2,
                kernel_size=2,
                padding=0,
                act="relu",
                norm=norm_spec(norm, width),
                adn_ordering="NA",
                bias=norm == "none",
            )
            down_levels.append(nn.Sequential(down, VNetStage(width, width, num_convs, norm, residual)))
        self.down_levels = nn.ModuleList(down_levels)
        self.bottleneck_dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.decoder = VNetDecoder(n, norm, residual)
        self.decoder_dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.output_conv = nn.Conv3d(n, out_channels, kernel_size=1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of the input stage and of each down level (the last is the bottleneck)."""
        x = self.input_stage(x)
        skips: list[torch.Tensor] = [x]
        for level in self.down_levels:
            x = level(x)
            skips.append(x)
        return skips
