"""Small bar charts as geometry for inline SVG (drawn by the template, no library, no CDN)."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT = 320, 160
AXIS_PX = 20  # room under the bars for the labels
GAP_RATIO = 0.25


@dataclass(frozen=True)
class Bar:
    """One bar: label, value and its rectangle in the chart's viewBox."""

    label: str
    value: float
    x: float
    y: float
    width: float
    height: float


def bars(points: list[tuple[str, float]]) -> list[Bar]:
    """Bars scaled to the tallest value; zero values stay on the axis."""
    if not points:
        return []
    top = max(v for _, v in points) or 1
    slot = WIDTH / len(points)
    width = slot * (1 - GAP_RATIO)
    room = HEIGHT - AXIS_PX
    out = []
    for i, (label, value) in enumerate(points):
        height = room * value / top
        out.append(Bar(label, value, round(i * slot + (slot - width) / 2, 1),
                       round(room - height, 1), round(width, 1), round(height, 1)))
    return out
