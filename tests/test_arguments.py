"""Tests of the shared argument checks (semiseg.arguments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semiseg.arguments import check_bool, check_int, check_number, flag, is_integer, is_number


def test_predicates_refuse_booleans_and_accept_numpy_scalars() -> None:
    assert is_integer(3) and is_integer(np.int64(3)) and not is_integer(True) and not is_integer(3.0)
    assert not is_integer(np.bool_(True)) and not is_integer("3")
    assert is_number(2.5) and is_number(np.float32(2.5)) and is_number(4) and not is_number(False)
    assert not is_number("2.5") and not is_number(None)


def test_check_int_returns_an_int_and_names_the_argument() -> None:
    assert check_int(np.int32(5), "n", 1) == 5 and type(check_int(np.int32(5), "n", 1)) is int
    assert check_int(-4, "offset") == -4
    for value, minimum, message in [
        (0, 1, "n must be a positive integer, got 0."),
        (True, 1, "n must be a positive integer, got True."),
        (-1, 0, "n must be a non-negative integer, got -1."),
        (1, 2, "n must be an integer >= 2, got 1."),
        (2.5, None, "n must be an integer, got 2.5."),
        ("7", 1, "n must be a positive integer, got '7'."),
    ]:
        with pytest.raises(ValueError) as error:
            check_int(value, "n", minimum)
        assert str(error.value) == message


def test_check_int_reads_command_line_text_only_when_asked() -> None:
    assert check_int("50", "max_epochs", 1, text=True) == 50 and check_int(50.0, "max_epochs", 1, text=True) == 50
    for bad in ("5.5", "fifty", 2.5, True, None, "0"):
        with pytest.raises(ValueError, match="max_epochs must be a positive integer"):
            check_int(bad, "max_epochs", 1, text=True)


def test_check_number_bounds_and_messages() -> None:
    assert check_number(np.float32(0.5), "t", 0.0, 1.0, low_open=True, high_open=True) == 0.5
    assert check_number(0, "q", 0, 100) == 0.0 and check_number(100, "q", 0, 100) == 100.0
    assert check_number(math.inf, "temperature", 0.0, low_open=True) == math.inf
    for kwargs, value, phrase in [
        ({"low": 0.0, "high": 1.0, "low_open": True, "high_open": True}, 1.0, "a number in (0, 1)"),
        ({"low": 0.0, "high": 100.0}, 100.5, "a number in [0, 100]"),
        ({"low": 0.0, "low_open": True}, 0.0, "a number > 0"),
        ({"low": 0.0}, -1, "a number >= 0"),
        ({"high": 1.0, "high_open": True}, 1.0, "a number < 1"),
        ({}, math.nan, "a finite number"),
        ({}, math.inf, "a finite number"),
        ({}, "1", "a finite number"),
        ({"low": 0.0}, math.nan, "a number >= 0"),
        ({"low": 0.0}, True, "a number >= 0"),
    ]:
        with pytest.raises(ValueError) as error:
            check_number(value, "x", **kwargs)
        assert str(error.value) == f"x must be {phrase}, got {value!r}."


def test_check_bool_is_strict_and_flag_reads_text() -> None:
    assert check_bool(False, "amp") is False and check_bool(True, "amp") is True
    for bad in (1, "yes", None, np.bool_(True)):
        with pytest.raises(ValueError, match="amp must be True or False, got"):
            check_bool(bad, "amp")
    assert flag(" ON ") and flag("Yes") and flag(1) and flag(True)
    assert not flag("off") and not flag("No") and not flag("") and not flag(0) and not flag(None)
    with pytest.raises(ValueError, match=r"expected a boolean flag \(true/false\) for resume, got 'maybe'."):
        flag("maybe", "resume")
