"""Server-side SVG bar charts: the geometry here, the markup in ``custody/_bar_chart.html``.

No charting library and no script: the page draws plain ``<rect>`` and
``<text>`` elements, so the chart works offline, under a strict
Content-Security-Policy, and without JavaScript.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

ROW_HEIGHT = 28
BAR_GAP = 8
LABEL_WIDTH = 190
VALUE_WIDTH = 100  # room for an amount of money ("€12,345.67")
PLOT_WIDTH = 420
MAX_LABEL_CHARS = 26


@dataclass(frozen=True)
class Bar:
    label: str
    full_label: str
    value: int
    # The value as shown: the number, or what ``bar_chart``'s ``value_text`` made of it (money).
    shown: str
    # Geometry in SVG user units.
    y: int
    bar_y: int
    bar_height: int
    length: float
    text_y: int
    value_x: float


@dataclass(frozen=True)
class BarChart:
    slug: str
    title: str
    description: str
    bars: tuple[Bar, ...]
    total: int
    width: int
    height: int
    label_x: int
    plot_x: int

    @property
    def empty(self) -> bool:
        return not self.bars


def _shorten(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[: MAX_LABEL_CHARS - 1] + "…"


def _rows(counts: Mapping[str, int], limit: int) -> list[tuple[str, int]]:
    """Largest first; what does not fit in ``limit`` rows is summed into one "Other" row."""
    ranked = sorted(
        ((str(k), int(v)) for k, v in counts.items() if int(v) > 0), key=lambda kv: (-kv[1], kv[0])
    )
    if len(ranked) <= limit:
        return ranked
    kept, rest = ranked[: limit - 1], ranked[limit - 1 :]
    return [*kept, (f"Other ({len(rest)} more)", sum(v for _, v in rest))]


def bar_chart(
    *,
    slug: str,
    title: str,
    counts: Mapping[str, int],
    labels: Mapping[str, str] | None = None,
    limit: int = 12,
    value_text: Callable[[str, int], str] | None = None,
) -> BarChart:
    """Lay out a horizontal bar chart of ``counts`` (zero counts are left out).

    ``labels`` renames keys for display (``{"en": "English"}``); ``value_text(label, value)``
    writes a value for people (amounts of money: ``format_money``), else the number is shown.
    """
    named = {(labels or {}).get(key, key): value for key, value in counts.items()}
    rows = _rows(named, limit)
    peak = max((v for _, v in rows), default=0)
    bars = []
    for index, (label, value) in enumerate(rows):
        y = index * ROW_HEIGHT
        length = round(PLOT_WIDTH * value / peak, 1) if peak else 0.0
        bars.append(
            Bar(
                label=_shorten(label),
                full_label=label,
                value=value,
                shown=value_text(label, value) if value_text else str(value),
                y=y,
                bar_y=y + BAR_GAP // 2,
                bar_height=ROW_HEIGHT - BAR_GAP,
                length=max(length, 2.0),
                text_y=y + ROW_HEIGHT // 2 + 5,
                value_x=LABEL_WIDTH + max(length, 2.0) + 6,
            )
        )
    total = sum(v for _, v in rows)
    summary = ", ".join(f"{b.full_label}: {b.shown}" for b in bars) or "nothing found"
    return BarChart(
        slug=slug,
        title=title,
        description=f"{title}. {summary}.",
        bars=tuple(bars),
        total=total,
        width=LABEL_WIDTH + PLOT_WIDTH + VALUE_WIDTH,
        height=max(len(bars), 1) * ROW_HEIGHT,
        label_x=LABEL_WIDTH - 8,
        plot_x=LABEL_WIDTH,
    )


def totals_by_key(nested: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """``{"text": {"PERSON": 3, "EMAIL_ADDRESS": 1}}`` -> ``{"text": 4}``."""
    return {key: sum(int(v) for v in inner.values()) for key, inner in nested.items()}
