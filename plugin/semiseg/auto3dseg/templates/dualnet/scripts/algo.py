"""The template's algorithm class (Auto3DSeg imports ``<name>.scripts.algo``): the one of the installed package."""

from __future__ import annotations

from semiseg.auto3dseg.algo import DualnetAlgo

__all__ = ["DualnetAlgo"]
