"""Times on the wire: RFC 3339 UTC with milliseconds out; RFC 3339, epoch ms or offsets in.

Inside Runyard a time is an ``int`` of UTC epoch milliseconds: exact, cheap to
compare and to bucket in SQL on both dialects.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from functools import lru_cache

# 1970-01-01 to 9999-12-31: anything outside is a typo, not a run.
MIN_MS = 0
MAX_MS = 253402300799999

_RELATIVE = re.compile(r"^-(\d{1,9})(ms|s|m|h|d|w)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def now_ms() -> int:
    """The current time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def format_ms(ms: int | None) -> str | None:
    """Epoch ms to ``2026-11-21T10:00:00.123Z`` (None stays None)."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    return f"{_second(seconds)}{millis:03d}Z"


@lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    # Every row sent out formats three or four times, most of them within the
    # same few seconds: 3.5 us through datetime.strftime, 0.5 us from here.
    t = time.gmtime(seconds)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.")


def parse_time(value: object) -> int:
    """An RFC 3339 string or epoch-millisecond number to epoch ms.

    Raises ValueError naming what is accepted.
    """
    if type(value) is int and MIN_MS <= value <= MAX_MS:
        # The common case first: a bulk import checks millions of these.
        return value
    if isinstance(value, bool):
        raise ValueError("expected an RFC 3339 time or epoch milliseconds")
    if isinstance(value, float) and not math.isfinite(value):
        # int() of these raises OverflowError, which validators do not turn into a 422.
        raise ValueError("time out of range (1970-01-01 to 9999-12-31)")
    if isinstance(value, int | float):
        ms = int(value)
    elif isinstance(value, str):
        text = value.strip()
        ms = int(text) if re.fullmatch(r"\d{1,16}", text) else _parse_rfc3339(text)
    else:
        raise ValueError("expected an RFC 3339 time or epoch milliseconds")
    if not MIN_MS <= ms <= MAX_MS:
        raise ValueError("time out of range (1970-01-01 to 9999-12-31)")
    return ms


def _parse_rfc3339(text: str) -> int:
    candidate = text.replace(" ", "T", 1)
    if candidate.endswith(("z", "Z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(candidate)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use RFC 3339 (2026-11-21T10:00:00Z) or epoch milliseconds"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return round(dt.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{text!r} is out of range") from None


def parse_time_param(value: str, now: int | None = None) -> int:
    """A query parameter time: RFC 3339, epoch ms, or a relative offset like ``-15m``."""
    match = _RELATIVE.fullmatch(value.strip())
    if match:
        base = now_ms() if now is None else now
        return max(MIN_MS, base - int(match.group(1)) * _UNIT_MS[match.group(2)])
    try:
        return parse_time(value)
    except ValueError:
        raise ValueError(
            "use RFC 3339 (2026-11-21T10:00:00Z), epoch milliseconds, "
            "or a relative offset (-15m, -24h, -7d)"
        ) from None
