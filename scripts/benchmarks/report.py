"""The report every benchmark command prints: a table, notes, and one JSON line as the last line of output."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["BenchmarkError", "BenchmarkReport", "CompileError", "Figure", "config_dict"]


class BenchmarkError(RuntimeError):
    """A benchmark cannot give its figures (a variant diverged, a tool is missing); the message is one readable line."""


class CompileError(BenchmarkError):
    """``torch.compile`` is not usable here (no compiler toolchain, unsupported Python, ...)."""


@dataclass
class Figure:
    """One measured number; ``goal`` (e.g. ``"<= 1.05"``) and ``met`` when the project has a target for it."""

    name: str
    value: float
    unit: str
    goal: str | None = None
    met: bool | None = None
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class BenchmarkReport:
    """The figures of one benchmark command, its settings and free-text notes (methods, caveats)."""

    benchmark: str
    figures: list[Figure] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    statistic: str = "median"

    def add(self, name: str, value: float, unit: str, goal: str | None = None, samples: Sequence[float] = ()) -> None:
        """Add a figure; ``goal`` is ``"<= x"`` or ``">= x"``; ``samples`` give its spread (min, max)."""
        met = None
        if goal is not None:
            op, target = goal.split()
            met = bool(value <= float(target)) if op == "<=" else bool(value >= float(target))
        low, high = (min(samples), max(samples)) if len(samples) > 1 else (None, None)
        self.figures.append(Figure(name, float(value), unit, goal, met, low, high))

    def to_json(self) -> str:
        """One line: ``{"benchmark", "figures", "config"}``; the notes, if any, are ``config["notes"]``."""
        config = {**self.config, "notes": self.notes} if self.notes else self.config
        figures = [f.to_dict() for f in self.figures]
        return json.dumps({"benchmark": self.benchmark, "figures": figures, "config": config})

    def print(self) -> dict[str, Any]:
        """Print the table, the notes and, last, the JSON line; return the JSON object."""
        print(f"\n== benchmark: {self.benchmark} ==")
        print("config: " + ", ".join(f"{k}={_short(v)}" for k, v in self.config.items()))
        rows = [("figure", self.statistic, "unit", "range", "goal", "")]
        for f in self.figures:
            spread = f"{_fmt(f.low)} .. {_fmt(f.high)}" if f.low is not None else ""
            status = "" if f.met is None else ("met" if f.met else "NOT MET")
            rows.append((f.name, _fmt(f.value), f.unit, spread, f.goal or "", status))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for i, row in enumerate(rows):
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            if i == 0:
                print("  ".join("-" * w for w in widths))
        for note in self.notes:
            print(f"note: {note}")
        line = self.to_json()
        print(line, flush=True)
        return json.loads(line)


def config_dict(**values: Any) -> dict[str, Any]:
    """The settings of a report as JSON-ready values (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."
