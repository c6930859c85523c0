"""Geometry of the server-side SVG charts. Functions return numbers and labels; the
templates draw them (``_macros.html``), so every label is escaped like any other text."""
from __future__ import annotations

import dataclasses

from .data.tools import HISTOGRAM_EDGES_MS

__all__ = ["BarChart", "bar_chart", "latency_labels"]


@dataclasses.dataclass
class Bar:
    x: float
    y: float
    w: float
    h: float
    count: int
    label: str


@dataclasses.dataclass
class BarChart:
    width: int
    height: int
    bars: list[Bar]
    max_count: int
    base: float
    """y of the axis line."""
    title: str


def bar_chart(counts: list[int], labels: list[str], *, title: str, width: int = 520, height: int = 170,
              label_every: int = 1) -> BarChart:
    """Bars for ``counts`` (one per label), scaled to the largest. Labels under every
    ``label_every``-th bar are kept (the others are ''), so dense axes stay legible."""
    top, bottom, left = (14, 30, 6) if height >= 100 else (2, 3, 2)
    base = height - bottom
    peak = max(counts) if counts and max(counts) > 0 else 1
    step = (width - left * 2) / max(len(counts), 1)
    bars = [Bar(left + i * step + 1, base - (base - top) * c / peak, max(step - 2, 1), (base - top) * c / peak, c,
                labels[i] if i % label_every == 0 else "") for i, c in enumerate(counts)]
    return BarChart(width, height, bars, peak, base, title)


def latency_labels() -> list[str]:
    """Axis labels of the latency histogram bins (their upper edge; ``>60s`` last)."""
    def fmt(ms: float) -> str:
        return f"{ms / 1000:g}s" if ms >= 1000 else f"{ms:g}ms"

    return [f"≤{fmt(e)}" for e in HISTOGRAM_EDGES_MS] + [f">{fmt(HISTOGRAM_EDGES_MS[-1])}"]
