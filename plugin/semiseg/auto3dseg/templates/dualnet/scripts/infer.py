"""``InferClass(config_file, **override).infer({"image": path})``: this bundle's class probabilities."""

from __future__ import annotations

from semiseg.auto3dseg.infer import InferClass

__all__ = ["InferClass"]
