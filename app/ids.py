"""Time-sortable identifiers (ULID layout: 48-bit ms time + 80 random bits, Crockford base32).

Twenty lines do not justify a dependency; the layout is the ULID spec's so other
tools can read the time back out of an id.
"""

from __future__ import annotations

import os

from app.times import now_ms

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# The time part: ten bits (two characters) per lookup.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
# The random part: each random byte's low five bits as one character, through
# bytes.translate (C), so 16 bytes give the 80 random bits. 256 is a multiple
# of 32, so every character stays equally likely. A bulk import makes an id
# for every tool call: this is half the cost of shifting a 128-bit integer.
_RANDOM_CHARS = bytes(ord(_ALPHABET[b & 31]) for b in range(256))


def new_id(at_ms: int | None = None) -> str:
    """A 26-character id that sorts by creation time."""
    t = now_ms() if at_ms is None else at_ms
    p = _PAIRS
    return (p[(t >> 40) & 1023] + p[(t >> 30) & 1023] + p[(t >> 20) & 1023]
            + p[(t >> 10) & 1023] + p[t & 1023]
            + os.urandom(16).translate(_RANDOM_CHARS).decode("ascii"))

