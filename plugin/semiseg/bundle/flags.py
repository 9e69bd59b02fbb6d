"""Command-line flags of the bundles: ``--resume true`` arrives as the string ``"true"`` from fire."""

from __future__ import annotations

__all__ = ["flag"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", "none", ""}


def flag(value: bool | int | str | None) -> bool:
    """Read a boolean config value that may come from the command line as text.

    Raises:
        ValueError: for text that is neither true/false, yes/no, on/off nor 1/0.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected a boolean flag (true/false), got {value!r}.")
    return bool(value)
