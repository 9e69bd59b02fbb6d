"""Networks of monai-semiseg: the benchmark V-Net, a ResNet-34 V-Net, the dual network and a feature adapter."""

from __future__ import annotations

from semiseg.networks.dual import DualNet
from semiseg.networks.features import DecoderFeatureAdapter
from semiseg.networks.resvnet import ResVNet
from semiseg.networks.vnet import VNet

__all__ = ["VNet", "ResVNet", "DualNet", "DecoderFeatureAdapter"]
