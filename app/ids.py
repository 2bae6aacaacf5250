"""Time-sortable identifiers (ULID layout: 48-bit ms time + 80 random bits, Crockford base32).

Twenty lines do not justify a dependency; the layout is the ULID spec's so other
tools can read the time back out of an id.
"""

from __future__ import annotations

import os

from app.times import now_ms

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Ten bits (two characters) per lookup: a bulk import makes an id for every
# tool call, and this halves the cost of the character-at-a-time loop.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = range(120, -1, -10)


def new_id(at_ms: int | None = None) -> str:
    """A 26-character id that sorts by creation time."""
    value = ((now_ms() if at_ms is None else at_ms) << 80) | int.from_bytes(os.urandom(10), "big")
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])
