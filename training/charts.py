"""The loss curve as server-side SVG: geometry here, markup in ``training/_loss_curve.html``.

No script and no charting library (as ``custody/charts.py``): a ``<polyline>`` and
a few ``<text>`` labels, so it works offline and under a strict CSP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 560
HEIGHT = 220
PAD_LEFT = 56
PAD_RIGHT = 12
PAD_TOP = 12
PAD_BOTTOM = 32


@dataclass(frozen=True)
class Tick:
    label: str
    x: float
    y: float


@dataclass(frozen=True)
class LineChart:
    points: str
    width: int
    height: int
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int
    last_label: str
    description: str

    @property
    def empty(self) -> bool:
        return not self.points


# The loss leaves a job only as means over windows of records, and not at all under DP.
EMPTY = (
    "No loss to show yet. The loss is published as the mean over windows of at least 32 records "
    "(none for a job under differential privacy, or smaller than one window)."
)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def loss_chart(curve: Sequence[Sequence[float]]) -> LineChart:
    """Lay out ``[[step, loss], ...]`` as a polyline with min/max labels on each axis."""
    pts = [(float(s), float(v)) for s, v in curve if v == v]
    left, right, top, bottom = PAD_LEFT, WIDTH - PAD_RIGHT, PAD_TOP, HEIGHT - PAD_BOTTOM
    if not pts:
        return LineChart("", WIDTH, HEIGHT, (), (), left, right, top, bottom, "", EMPTY)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    x_span = (x1 - x0) or 1.0
    y_span = (y1 - y0) or 1.0

    def sx(x: float) -> float:
        return round(left + (x - x0) / x_span * (right - left), 1)

    def sy(y: float) -> float:
        return round(bottom - (y - y0) / y_span * (bottom - top), 1)

    line = " ".join(f"{sx(x)},{sy(y)}" for x, y in pts)
    x_ticks = (Tick(_fmt(x0), left, bottom + 18), Tick(_fmt(x1), right, bottom + 18))
    y_ticks = (Tick(_fmt(y1), left - 6, top + 4), Tick(_fmt(y0), left - 6, bottom))
    description = (
        f"Training loss over {len(pts)} points from step {_fmt(x0)} to {_fmt(x1)}: "
        f"first {_fmt(ys[0])}, last {_fmt(ys[-1])}, lowest {_fmt(y0)}."
    )
    return LineChart(
        line, WIDTH, HEIGHT, x_ticks, y_ticks, left, right, top, bottom, _fmt(ys[-1]), description
    )
