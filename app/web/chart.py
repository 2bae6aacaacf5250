"""The timeline chart's geometry: stacked bars per bucket, axis ticks, tooltips.

The SVG is laid out in percentages horizontally and pixels vertically, so it
stretches to any width without distorting its text. Every bar's counts come
straight from ``meta.timeline``, whose buckets add up to ``meta.total``: the
chart and the list can never disagree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

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
class Chart:
    svg: Markup                      # the bars: see _bar
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


_STACKED = {status: i for i, status in enumerate(STACK)}
_LISTED = {status: i for i, status in enumerate(STATUSES)}


def _ordered(counts: dict[str, int], rank: dict[str, int]) -> list[str]:
    """The statuses of ``rank`` with a count, in its order (a bucket holds a few
    of them: cheaper than looking up every status in every bucket)."""
    return sorted((s for s, n in counts.items() if n and s in rank), key=rank.__getitem__)


def _title(start: int, width: int, counts: dict[str, int], total: int) -> str:
    fmt = "%Y-%m-%d %H:%M:%S" if width < 60_000 else "%Y-%m-%d %H:%M"
    when = time.strftime(fmt, time.gmtime(start // 1000))
    parts = [f"{status.replace('_', ' ')} {counts[status]:,}"
             for status in _ordered(counts, _LISTED)]
    return f"{when} UTC · {total:,} runs" + (" — " + ", ".join(parts) if parts else "")


def _starts(buckets: list[dict[str, Any]], width: int) -> list[int]:
    """Each bucket's start in epoch ms: ``meta.timeline`` lays them ``width``
    apart, so only the first and last are parsed when that holds."""
    first, last = parse_time(buckets[0]["start"]), parse_time(buckets[-1]["start"])
    if width > 0 and last == first + (len(buckets) - 1) * width:
        return list(range(first, last + 1, width))
    return [parse_time(b["start"]) for b in buckets]


def _bar(x: str, width: str, start: int, total: int, title: str,
         segments: list[tuple[str, float, float]]) -> str:
    """One bucket's bar as SVG (a hover target, then its stacked statuses).

    Written here, not as a template loop: ~100 bars of a few elements cost
    ~1 ms of template calls per chart, a fifth of that as f-strings. The title
    is the one text, escaped; statuses come from ``STACK``, numbers are numbers
    (``x`` and ``width`` already as text: each is written several times).
    """
    stack = "".join(f'<rect class="seg s-{status}" x="{x}%" y="{y}" width="{width}%" '
                    f'height="{height}"></rect>' for status, y, height in segments)
    return (f'    <g class="bar" data-count="{total}" data-start="{start}">'
            f"<title>{escape(title)}</title>\n"
            f'      <rect class="hit" x="{x}%" y="14" width="{width}%" height="78"></rect>\n'
            f"{stack}    </g>\n")


def build(timeline: dict[str, Any] | None) -> Chart | None:
    """The chart for ``meta.timeline``; None when no bucket holds a run."""
    if not timeline or not any(b["counts"] for b in timeline.get("buckets") or []):
        return None
    width = int(timeline["bucket_ms"])
    starts = _starts(timeline["buckets"], width)
    n = len(starts)
    first, end = starts[0], starts[-1] + width
    peak = max(sum(b["counts"].values()) for b in timeline["buckets"]) or 1
    slot = 100 / n
    gap = min(slot * 0.18, 0.35)
    bar_width = str(round(slot - gap, 4))
    bars = []
    total = 0
    for i, (start, bucket) in enumerate(zip(starts, timeline["buckets"], strict=True)):
        counts: dict[str, int] = bucket["counts"]
        runs = sum(counts.values())
        total += runs
        y = PLOT_TOP + PLOT_HEIGHT
        segments = []
        for status in _ordered(counts, _STACKED):
            h = max(PLOT_HEIGHT * counts[status] / peak, 1.0)
            y -= h
            segments.append((status, round(y, 2), round(h, 2)))
        bars.append(_bar(str(round(i * slot + gap / 2, 4)), bar_width, start, runs,
                         _title(start, width, counts, runs), segments))
    step = max(1, -(-n // MAX_TICKS))
    # A label starting in the last tenth would run off the right edge.
    ticks = [(round(i * slot, 4), _fmt(starts[i], width, end - first))
             for i in range(0, n, step) if i == 0 or i * slot <= 90]
    return Chart(Markup("".join(bars)), ticks, peak, first, end, width, total)
