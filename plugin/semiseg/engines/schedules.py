"""Schedules of loss weights and other hyper-parameters over training iterations.

Every schedule is a callable ``schedule(iteration) -> float`` that the trainer queries once per iteration. The
Gaussian ramp-up is the sigmoid-shaped ramp-up of

    Laine, S., Aila, T. (2017) Temporal Ensembling for Semi-Supervised Learning. ICLR 2017.
"""

from __future__ import annotations

import math

from semiseg.arguments import check_int, check_number

__all__ = ["GaussianRampUp", "LinearRampUp", "ConstantSchedule"]


def _ramp_progress(iteration: int, start: int, length: int) -> float:
    """Fraction of a ramp of ``length`` iterations from ``start`` done at ``iteration``, in [0, 1]."""
    return min(max(check_int(iteration, "iteration", 0) - start, 0), length) / length


class GaussianRampUp:
    """
    Gaussian ramp-up: ``value(t) = max_value * exp(-5 * (1 - t' / length) ** 2)`` with
    ``t' = clip(t - start, 0, length)``.

    The value is ``max_value * exp(-5)`` (about 0.7 % of the maximum) up to iteration ``start``, rises in an
    S-shaped curve and is exactly ``max_value`` from iteration ``start + length`` on.

    After Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017.

    Example::

        weight = GaussianRampUp(max_value=0.1, length=4000)
        weight(0), weight(4000)  # (0.000674, 0.1)
    """

    def __init__(self, max_value: float, length: int, start: int = 0) -> None:
        """
        Args:
            max_value: the value reached at the end of the ramp-up; a finite number.
            length: the number of iterations of the ramp-up, > 0.
            start: the iteration at which the ramp-up begins, >= 0.

        Raises:
            ValueError: when an argument is outside the range above.
        """
        self.max_value = check_number(max_value, "max_value")
        self.length = check_int(length, "length", 1)
        self.start = check_int(start, "start", 0)

    def __call__(self, iteration: int) -> float:
        """
        Args:
            iteration: the training iteration, an integer >= 0.

        Returns:
            the value of the schedule at ``iteration``.
        """
        progress = _ramp_progress(iteration, self.start, self.length)
        return self.max_value * math.exp(-5.0 * (1.0 - progress) ** 2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_value={self.max_value}, length={self.length}, start={self.start})"


class LinearRampUp:
    """
    Linear ramp: ``value(t) = start_value + (end_value - start_value) * t' / length`` with
    ``t' = clip(t - start, 0, length)``; it may rise or fall.

    Example::

        percentile = LinearRampUp(start_value=20.0, end_value=80.0, length=1000)
        percentile(0), percentile(500), percentile(2000)  # (20.0, 50.0, 80.0)
    """

    def __init__(self, start_value: float, end_value: float, length: int, start: int = 0) -> None:
        """
        Args:
            start_value: the value up to iteration ``start``; a finite number.
            end_value: the value from iteration ``start + length`` on; a finite number.
            length: the number of iterations of the ramp, > 0.
            start: the iteration at which the ramp begins, >= 0.

        Raises:
            ValueError: when an argument is outside the range above.
        """
        self.start_value = check_number(start_value, "start_value")
        self.end_value = check_number(end_value, "end_value")
        self.length = check_int(length, "length", 1)
        self.start = check_int(start, "start", 0)

    def __call__(self, iteration: int) -> float:
        """
        Args:
            iteration: the training iteration, an integer >= 0.

        Returns:
            the value of the schedule at ``iteration``.
        """
        progress = _ramp_progress(iteration, self.start, self.length)
        if progress == 1.0:
            return self.end_value
        return self.start_value + (self.end_value - self.start_value) * progress

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(start_value={self.start_value}, end_value={self.end_value}, "
            f"length={self.length}, start={self.start})"
        )


class ConstantSchedule:
    """
    The same value at every iteration, so that a fixed weight and a ramp-up are used alike.

    Example::

        ConstantSchedule(0.5)(1234)  # 0.5
    """

    def __init__(self, value: float) -> None:
        """
        Args:
            value: the value at every iteration; a finite number.

        Raises:
            ValueError: when ``value`` is not a finite number.
        """
        self.value = check_number(value, "value")

    def __call__(self, iteration: int) -> float:
        """
        Args:
            iteration: the training iteration, an integer >= 0.

        Returns:
            ``value``.
        """
        check_int(iteration, "iteration", 0)
        return self.value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(value={self.value})"
