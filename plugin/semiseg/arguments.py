"""Argument checks shared by the plugin, the bundles and the scripts (one place for each rule).

Python counts ``True`` as the integer 1, so a plain ``isinstance(x, int)`` lets ``n_filters=True`` through; the
predicates here refuse booleans where a count or a number is meant, and the checks raise a ``ValueError`` that names
the argument and the bad value. :func:`flag` is the one place where a boolean given as text on the command line
(``--amp false`` arrives from fire as the string ``"false"``) is read.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_bool", "check_int", "check_number", "flag", "is_integer", "is_number"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", "none", ""}


def is_integer(value: object) -> bool:
    """Whether ``value`` is an integer (``int`` or a NumPy integer) and not a boolean."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether ``value`` is a real number (``int``, ``float`` or a NumPy scalar) and not a boolean."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(value: object, name: str, minimum: int | None = None, text: bool = False) -> int:
    """``value`` as an ``int``, or a ``ValueError`` naming ``name`` and the value.

    Args:
        value: the argument.
        name: its name in the message, e.g. ``"n_filters"`` or ``"train#trainer#max_epochs"``.
        minimum: smallest value allowed; the message then reads "a positive integer" (1), "a non-negative integer"
            (0) or "an integer >= minimum".
        text: also accept what a command line gives: decimal text (``"50"``) and whole floats (``50.0``).

    Raises:
        ValueError: ``"<name> must be a positive integer, got 0."`` and the like.
    """
    number = _as_int(value, text)
    if number is None or (minimum is not None and number < minimum):
        raise ValueError(f"{name} must be {_integer_phrase(minimum)}, got {value!r}.")
    return number


def check_number(
    value: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a ``float`` inside the given bounds, or a ``ValueError`` naming ``name`` and the value.

    Without bounds the number must be finite; with bounds, NaN fails them.

    Args:
        value: the argument.
        name: its name in the message.
        low: lower bound, or None.
        high: upper bound, or None.
        low_open: exclude ``low`` itself (``(low, ...``); default includes it.
        high_open: exclude ``high`` itself (``..., high)``); default includes it.

    Raises:
        ValueError: e.g. ``"threshold must be a number in (0, 1), got 1.5."``.
    """
    ok = is_number(value)
    if ok and low is None and high is None:
        ok = math.isfinite(value)  # type: ignore[arg-type]
    if ok and low is not None:
        ok = value > low if low_open else value >= low  # type: ignore[operator]
    if ok and high is not None:
        ok = value < high if high_open else value <= high  # type: ignore[operator]
    if not ok:
        raise ValueError(f"{name} must be {_number_phrase(low, high, low_open, high_open)}, got {value!r}.")
    return float(value)  # type: ignore[arg-type]


def check_bool(value: object, name: str) -> bool:
    """``value`` when it is ``True`` or ``False``; a ``ValueError`` naming ``name`` for anything else (1, "yes").

    Use :func:`flag` instead where the value may come from the command line as text.
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return value


def flag(value: bool | int | str | None, name: str | None = None) -> bool:
    """A boolean that may come from the command line as text: true/false, yes/no, on/off, 1/0 (any case).

    ``None`` and the empty text are False; other non-text values are read with ``bool``. The bundle configs call
    it as ``semiseg.bundle.flag(@amp)``.

    Raises:
        ValueError: for other text, e.g. ``"expected a boolean flag (true/false) for amp, got 'maybe'."``.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        where = f" for {name}" if name else ""
        raise ValueError(f"expected a boolean flag (true/false){where}, got {value!r}.")
    return bool(value)


def _as_int(value: object, text: bool) -> int | None:
    if is_integer(value):
        return int(value)  # type: ignore[call-overload]
    if text and isinstance(value, float) and value.is_integer():
        return int(value)
    if text and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    return None


def _integer_phrase(minimum: int | None) -> str:
    return {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
        minimum, f"an integer >= {minimum}"
    )


def _number_phrase(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"a number {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"a number {'<' if high_open else '<='} {high:g}"
    return "a finite number"
