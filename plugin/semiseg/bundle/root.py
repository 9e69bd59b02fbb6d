"""Locate the bundle folder when a config does not say where it is."""

from __future__ import annotations

import ast
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["default_bundle_root"]


def default_bundle_root(argv: Sequence[str] | None = None) -> str:
    """The folder of the bundle being run, so that configs work from the repository root and from the bundle.

    MONAI does not derive ``bundle_root`` from the config file's location (model-zoo configs use ``"."``, the working
    directory). This returns, in order: the parent of the ``configs`` folder holding the first ``--config_file`` on
    the command line; else the working directory when it holds ``configs/``; else the working directory. A
    ``--bundle_root`` override on the command line replaces the value anyway.

    Args:
        argv: the command line to read; default ``sys.argv``.
    """
    argv = list(sys.argv if argv is None else argv)
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value is None:
            continue
        first = _first_config(value)
        parent = Path(first).resolve().parent
        return str(parent.parent if parent.name == "configs" else parent)
    return "."


def _first_config(value: str) -> str:
    value = value.strip()
    if value.startswith("["):
        try:
            files = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            files = [v.strip(" '\"") for v in value.strip("[]").split(",")]
        return str(files[0])
    return value.split(",")[0]
