"""The timeline chart's geometry: stacked bars per bucket, axis ticks, tooltips.

The SVG is laid out in percentages horizontally and pixels vertically, so it
stretches to any width without distorting its text. Every bar's counts come
straight from ``meta.timeline``, whose buckets add up to ``meta.total``: the
chart and the list can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.store.inputs import STATUSES
from app.times import parse_time

# Bottom to top: the common outcome at the base, trouble on top where it shows.
STACK = ("completed", "cancelled", "timed_out", "failed", "waiting_for_interaction",
         "running", "queued", "pending")
PLOT_TOP = 14
PLOT_HEIGHT = 78
AXIS_Y = 108
MAX_TICKS = 7


@dataclass(frozen=True)
class Segment:
    status: str
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    x: float          # percent
    width: float      # percent
    total: int
    segments: list[Segment]
    title: str
    start_ms: int


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    ticks: list[tuple[float, str]]   # x percent, label
    peak: int
    start_ms: int
    end_ms: int
    bucket_ms: int
    total: int


def _fmt(ms: int, width: int, span: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if width >= 86_400_000:
        return dt.strftime("%b %d")
    if span > 86_400_000:
        return dt.strftime("%a %H:%M") if width < 3_600_000 * 6 else dt.strftime("%b %d %H:%M")
    if width < 60_000:
        return dt.strftime("%H:%M:%S")
    return dt.strftime("%H:%M")


def _title(start: int, width: int, counts: dict[str, int]) -> str:
    fmt = "%Y-%m-%d %H:%M:%S" if width < 60_000 else "%Y-%m-%d %H:%M"
    when = datetime.fromtimestamp(start / 1000, tz=UTC).strftime(fmt)
    parts = [f"{status.replace('_', ' ')} {counts[status]:,}"
             for status in STATUSES if counts.get(status)]
    total = sum(counts.values())
    return f"{when} UTC · {total:,} runs" + (" — " + ", ".join(parts) if parts else "")


def build(timeline: dict[str, Any] | None) -> Chart | None:
    """The chart for ``meta.timeline``; None when no bucket holds a run."""
    if not timeline or not any(b["counts"] for b in timeline.get("buckets") or []):
        return None
    width = int(timeline["bucket_ms"])
    starts = [parse_time(b["start"]) for b in timeline["buckets"]]
    n = len(starts)
    first, end = starts[0], starts[-1] + width
    peak = max(sum(b["counts"].values()) for b in timeline["buckets"]) or 1
    slot = 100 / n
    gap = min(slot * 0.18, 0.35)
    bars = []
    for i, (start, bucket) in enumerate(zip(starts, timeline["buckets"], strict=True)):
        counts: dict[str, int] = bucket["counts"]
        y = PLOT_TOP + PLOT_HEIGHT
        segments = []
        for status in STACK:
            value = counts.get(status, 0)
            if not value:
                continue
            h = max(PLOT_HEIGHT * value / peak, 1.0)
            y -= h
            segments.append(Segment(status, round(y, 2), round(h, 2)))
        bars.append(Bar(round(i * slot + gap / 2, 4), round(slot - gap, 4),
                        sum(counts.values()), segments, _title(start, width, counts), start))
    step = max(1, -(-n // MAX_TICKS))
    # A label starting in the last tenth would run off the right edge.
    ticks = [(round(i * slot, 4), _fmt(starts[i], width, end - first))
             for i in range(0, n, step) if i == 0 or i * slot <= 90]
    total = sum(bar.total for bar in bars)
    return Chart(bars, ticks, peak, first, end, width, total)
