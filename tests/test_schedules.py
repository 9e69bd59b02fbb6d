from __future__ import annotations

import math

import pytest

from semiseg.engines.schedules import ConstantSchedule, GaussianRampUp, LinearRampUp


def test_gaussian_ramp_up_values():
    schedule = GaussianRampUp(max_value=0.1, length=100)
    assert schedule(0) == pytest.approx(0.1 * math.exp(-5))
    assert schedule(50) == pytest.approx(0.1 * math.exp(-5 * 0.25))
    assert schedule(100) == 0.1
    assert schedule(10_000) == 0.1
    values = [schedule(t) for t in range(0, 101, 10)]
    assert values == sorted(values)


def test_gaussian_ramp_up_with_start():
    schedule = GaussianRampUp(max_value=2.0, length=40, start=20)
    assert schedule(0) == schedule(20) == pytest.approx(2.0 * math.exp(-5))
    assert schedule(40) == pytest.approx(2.0 * math.exp(-5 * 0.25))
    assert schedule(60) == 2.0


def test_linear_ramp_values():
    schedule = LinearRampUp(start_value=20.0, end_value=80.0, length=1000)
    assert (schedule(0), schedule(250), schedule(500), schedule(1000), schedule(5000)) == (20.0, 35.0, 50.0, 80.0, 80.0)
    falling = LinearRampUp(start_value=1.0, end_value=0.0, length=10, start=5)
    assert (falling(0), falling(5), falling(10), falling(15)) == (1.0, 1.0, 0.5, 0.0)


def test_constant_schedule():
    schedule = ConstantSchedule(0.5)
    assert schedule(0) == schedule(123_456) == 0.5
    assert isinstance(ConstantSchedule(3)(1), float)


def test_errors():
    with pytest.raises(ValueError, match=r"length must be a positive integer, got 0"):
        GaussianRampUp(max_value=1.0, length=0)
    with pytest.raises(ValueError, match=r"start must be a non-negative integer, got -1"):
        GaussianRampUp(max_value=1.0, length=10, start=-1)
    with pytest.raises(ValueError, match=r"length must be a positive integer, got 2.5"):
        LinearRampUp(0.0, 1.0, length=2.5)
    with pytest.raises(ValueError, match=r"max_value must be a finite number, got nan"):
        GaussianRampUp(max_value=float("nan"), length=10)
    with pytest.raises(ValueError, match=r"end_value must be a finite number, got inf"):
        LinearRampUp(0.0, float("inf"), length=10)
    with pytest.raises(ValueError, match=r"value must be a finite number, got '1'"):
        ConstantSchedule("1")
    for schedule in (GaussianRampUp(1.0, 10), LinearRampUp(0.0, 1.0, 10), ConstantSchedule(1.0)):
        with pytest.raises(ValueError, match=r"iteration must be a non-negative integer, got -1"):
            schedule(-1)


def test_repr_names_the_arguments():
    assert repr(GaussianRampUp(0.1, 40, start=5)) == "GaussianRampUp(max_value=0.1, length=40, start=5)"
    assert repr(ConstantSchedule(2)) == "ConstantSchedule(value=2.0)"
