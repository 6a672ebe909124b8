"""The loss curve as server-side SVG: geometry here, markup in ``training/_loss_curve.html``.

No script and no charting library (as ``custody/charts.py``): a ``<polyline>``, a dot per
logged point and a few ``<text>`` labels, so it works offline and under a strict CSP.

Every logged point is drawn (the launcher keeps at most ``TRAINING_LOSS_CURVE_POINTS``). The
y-axis starts at 0 and ends at a round value above the highest loss, so a drop from 10.2 to
10.0 looks as small as it is; the x-axis runs from step 0 to the job's planned steps, so a
short curve shows how far training has gone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 560
HEIGHT = 240
PAD_LEFT = 60
PAD_RIGHT = 16
PAD_TOP = 12
PAD_BOTTOM = 48


# Coordinates are strings with a dot for a decimal point: a template would localise a float
# ("12,5" under a German locale), which SVG cannot read.
@dataclass(frozen=True)
class Tick:
    label: str
    x: str
    y: str
    # The gridline's other end (for y ticks: across the plot; x ticks: up the plot).
    x2: str
    y2: str


@dataclass(frozen=True)
class Dot:
    x: str
    y: str
    label: str


@dataclass(frozen=True)
class LineChart:
    points: str
    dots: tuple[Dot, ...]
    width: int
    height: int
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int
    count: int
    first: str
    last: str
    description: str

    @property
    def empty(self) -> bool:
        return not self.dots

    @property
    def x_label(self) -> tuple[str, str]:
        """Where the x-axis title sits (centred under the plot)."""
        return _n((self.plot_left + self.plot_right) / 2), _n(self.height - 6)

    @property
    def y_label(self) -> tuple[str, str]:
        """Where the y-axis title sits (centred beside the plot, drawn rotated)."""
        return "14", _n((self.plot_top + self.plot_bottom) / 2)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _n(value: float) -> str:
    return f"{value:.1f}"


def nice_step(span: float, ticks: int = 5) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) that cuts ``span`` into about ``ticks``."""
    if span <= 0:
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _axis(top: float, ticks: int) -> tuple[float, list[float]]:
    """The axis' end (a multiple of a round step at or above ``top``) and its tick values from 0."""
    step = nice_step(top, ticks)
    end = step * math.ceil(top / step) if top > 0 else step
    count = round(end / step)
    return end, [step * i for i in range(count + 1)]


def loss_chart(curve: Sequence[Sequence[float]], *, total_steps: int | None = None) -> LineChart:
    """Lay out ``[[step, loss], ...]``: every point, y from 0, x from step 0 to the planned steps."""
    pts = [(float(s), float(v)) for s, v in curve if v == v and v is not None]
    left, right, top, bottom = PAD_LEFT, WIDTH - PAD_RIGHT, PAD_TOP, HEIGHT - PAD_BOTTOM
    if not pts:
        return LineChart("", (), WIDTH, HEIGHT, (), (), left, right, top, bottom, 0, "", "", "")
    x_end, x_values = _axis(max(max(p[0] for p in pts), float(total_steps or 0), 1.0), 5)
    y_end, y_values = _axis(max(max(p[1] for p in pts), 0.0), 5)

    def sx(x: float) -> float:
        return round(left + x / x_end * (right - left), 1)

    def sy(y: float) -> float:
        return round(bottom - max(y, 0.0) / y_end * (bottom - top), 1)

    dots = tuple(Dot(_n(sx(x)), _n(sy(y)), f"step {_fmt(x)}: loss {_fmt(y)}") for x, y in pts)
    line = " ".join(f"{d.x},{d.y}" for d in dots) if len(dots) > 1 else ""
    x_ticks = tuple(Tick(_fmt(v), _n(sx(v)), _n(bottom + 16), _n(sx(v)), _n(top)) for v in x_values)
    y_ticks = tuple(Tick(_fmt(v), _n(left - 6), _n(sy(v) + 4), _n(right), _n(sy(v))) for v in y_values)
    first, last = pts[0][1], pts[-1][1]
    description = (
        f"Training loss, {len(pts)} logged point{'s' if len(pts) != 1 else ''} from step "
        f"{_fmt(pts[0][0])} to {_fmt(pts[-1][0])}: first {_fmt(first)}, last {_fmt(last)}, "
        f"lowest {_fmt(min(p[1] for p in pts))}."
    )
    return LineChart(
        line,
        dots,
        WIDTH,
        HEIGHT,
        x_ticks,
        y_ticks,
        left,
        right,
        top,
        bottom,
        len(pts),
        _fmt(first),
        _fmt(last),
        description,
    )
