"""Display formatting for templates: relative times, durations, JSON as text.

Everything here returns plain strings; Jinja escapes them on output, which is
the only place escaping happens (recorded values are never marked safe).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from app.limits.values import PREVIEW_BYTES, is_cut
from app.times import format_ms

CUT_CHARS = 64 * 1024


def utc(ms: int | None) -> str:
    """``2026-11-21 10:00:00.123 UTC`` (empty for None)."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.") + \
        f"{ms % 1000:03d} UTC"


def iso(ms: int | None) -> str:
    """RFC 3339 for ``<time datetime>``."""
    return format_ms(ms) or ""


def clock(ms: int | None) -> str:
    """``10:04:05.123`` UTC: the console's time column."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S.") + f"{ms % 1000:03d}"


def relative(ms: int | None, now: int) -> str:
    """``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``; a date beyond a month."""
    if ms is None:
        return ""
    delta = (now - ms) // 1000
    if delta < 0:
        return "in the future" if delta < -5 else "now"
    for limit, unit, size in ((60, "s", 1), (3600, "m", 60), (86400, "h", 3600),
                              (30 * 86400, "d", 86400)):
        if delta < limit:
            return "now" if unit == "s" and delta < 2 else f"{delta // size}{unit} ago"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def duration(ms: int | None) -> str:
    """``850ms``, ``4.2s``, ``3m 05s``, ``2h 10m``; ``—`` when unknown."""
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s" if ms < 10_000 else f"{ms // 1000}s"
    if ms < 3_600_000:
        return f"{ms // 60_000}m {ms // 1000 % 60:02d}s"
    return f"{ms // 3_600_000}h {ms // 60_000 % 60:02d}m"


def count(n: int | None) -> str:
    """``12,345``."""
    return f"{n or 0:,}"


def json_text(value: Any) -> str:
    """A JSON value pretty-printed (a string stays as it is); a value cut when it
    was stored (``app.limits.values``) says so above its preview."""
    if is_cut(value):
        return (f"cut: {value['bytes']:,} bytes, first {PREVIEW_BYTES // 1024} KB shown\n"
                f"{value['preview']}…")
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def cut(text: str | None, limit: int = CUT_CHARS) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters, and whether anything was cut."""
    if text is None:
        return "", False
    if len(text) <= limit:
        return text, False
    return text[:limit], True


def first_line(text: str | None, width: int = 120) -> str:
    """The first non-empty line, shortened: the list's name for an unnamed run."""
    for line in (text or "").splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= width else line[: width - 1] + "…"
    return ""
