"""Inference of a generated bundle for Auto3DSeg's ensemble (the ``InferClass`` contract of ``scripts/infer.py``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Invertd

from .train import bundle_folder

__all__ = ["InferClass"]


class InferClass:
    """Class probabilities of the trained bundle for one image at a time.

    Args:
        config_file: a config path of the bundle (or Auto3DSeg's list of them); ``configs/inference.json`` and
            ``models/model.pt`` of that bundle are used.
        override: overrides of ``inference.json`` keys it has (others, such as the ensemble's ``rank``, are ignored).
    """

    def __init__(self, config_file: str | Sequence[str] | None = None, **override: Any) -> None:
        root = bundle_folder(config_file if isinstance(config_file, (str, type(None))) else list(config_file))
        parser = ConfigParser()
        parser.read_config(str(root / "configs" / "inference.json"))
        parser["bundle_root"] = str(root)
        parser.update({k: v for k, v in override.items() if k in parser})
        weights = root / "models" / "model.pt"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found: train the bundle {root} first")
        self.device = parser.get_parsed_content("device")
        self.network = parser.get_parsed_content("network")  # on the device, in inference.json's memory layout
        state = torch.load(weights, map_location="cpu", weights_only=True)
        self.network.load_state_dict(state["model"] if "model" in state else state)
        self.network.eval()
        self.preprocessing = parser.get_parsed_content("preprocessing")
        self.inferer = parser.get_parsed_content("inferer")
        self.invert = Invertd(keys="pred", transform=self.preprocessing, orig_keys="image", nearest_interp=False)

    @torch.no_grad()
    def infer(self, item: str | os.PathLike | Mapping[str, Any]) -> MetaTensor:
        """``(C, *spatial)`` probabilities (the two branches' mean softmax) in the image's own space and geometry.

        Args:
            item: an image path or a datalist entry ``{"image": path, ...}``.
        """
        data = {"image": os.fspath(item)} if isinstance(item, (str, os.PathLike)) else {"image": item["image"]}
        data = self.preprocessing(data)
        image = data["image"]
        logits = self.inferer(image.unsqueeze(0).to(self.device), self.network)[0]
        probabilities = torch.softmax(logits.float(), dim=0).cpu()
        data["pred"] = MetaTensor(probabilities.as_tensor() if isinstance(probabilities, MetaTensor) else probabilities,
                                  meta=image.meta, applied_operations=image.applied_operations)  # fmt: skip
        return self.invert(data)["pred"]
