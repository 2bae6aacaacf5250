"""Ids (ULID layout) and wire times, checked against independent references."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from app.ids import new_id
from app.times import MAX_MS, MIN_MS, format_ms

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _time_of(id_: str) -> int:
    """The ULID spec's reading of an id's first ten characters."""
    value = 0
    for char in id_[:10]:
        value = value * 32 + CROCKFORD.index(char)
    return value


@given(st.integers(MIN_MS, MAX_MS))
def test_format_ms_is_rfc3339_utc_with_milliseconds(ms: int) -> None:
    reference = datetime.fromtimestamp(ms // 1000, tz=UTC).replace(
        microsecond=ms % 1000 * 1000).isoformat(timespec="milliseconds")
    assert format_ms(ms) == reference.replace("+00:00", "Z")


def test_format_ms_edges() -> None:
    assert format_ms(None) is None
    assert format_ms(0) == "1970-01-01T00:00:00.000Z"
    assert format_ms(MAX_MS) == "9999-12-31T23:59:59.999Z"
    assert format_ms(1795255200500) == "2026-11-21T10:00:00.500Z"


@given(st.integers(0, 2**48 - 1))
def test_new_id_holds_its_time_in_crockford_base32(at_ms: int) -> None:
    id_ = new_id(at_ms)
    assert len(id_) == 26 and set(id_) <= set(CROCKFORD)
    assert _time_of(id_) == at_ms


@given(st.integers(0, 2**48 - 2), st.integers(1, 10**6))
def test_new_ids_sort_by_time(earlier: int, gap: int) -> None:
    later = min(earlier + gap, 2**48 - 1)
    assert new_id(earlier) < new_id(later)


def test_the_random_part_is_80_bits_of_even_characters() -> None:
    ids = [new_id(1795255200500) for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    counts = Counter("".join(i[10:] for i in ids))
    # 320,000 characters, 10,000 of each expected: a biased mapping (a byte
    # taken modulo a number that does not divide 256) is off by a third or more.
    assert set(counts) == set(CROCKFORD)
    assert all(9_000 < n < 11_000 for n in counts.values()), counts
