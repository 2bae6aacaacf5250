"""Pipe bytes to lines and events: splitting, long lines, progress, batching, the cap."""

from __future__ import annotations

import asyncio

from app.runner.lines import MAX_PIECE, LineSplitter, decode, parse_progress
from app.runner.output import FLUSH_LINES, OutputBuffer


def _feed(chunks: list[bytes]) -> list[tuple[bytes, bool]]:
    splitter = LineSplitter()
    out = [p for c in chunks for p in splitter.feed(c)]
    return out + splitter.finish()


def test_lines_split_across_chunks_and_crlf() -> None:
    assert _feed([b"a\r\nb", b"c\n", b"\n", b"tail"]) == [
        (b"a", False), (b"bc", False), (b"", False), (b"tail", False)]


def test_a_long_line_is_cut_at_character_boundaries_as_it_arrives() -> None:
    line = ("é" * 100_000).encode()          # 200,000 bytes of 2-byte characters
    splitter = LineSplitter()
    early = splitter.feed(line[:150_000])
    assert [c for _, c in early] == [True, True]   # emitted before the line ends
    pieces = early + splitter.feed(line[150_000:] + b"\n")
    assert all(len(p) <= MAX_PIECE for p, _ in pieces)
    assert [c for _, c in pieces][-1] is False
    assert "".join(decode(p)[0] for p, _ in pieces) == "é" * 100_000


def test_decode_replaces_bad_bytes_and_nul_and_keeps_pieces_under_64_kb() -> None:
    assert decode(b"a\xffb\x00c") == ["a\ufffdb\ufffdc"]
    pieces = decode(b"\xff" * MAX_PIECE)
    assert "".join(pieces) == "\ufffd" * MAX_PIECE
    assert all(len(p.encode()) <= MAX_PIECE for p in pieces)


def test_progress_lines() -> None:
    p = parse_progress(b"::progress pct=40 stage=loading::reading rows")
    assert (p.pct, p.stage, p.message) == (40.0, "loading", "reading rows")
    p = parse_progress(b"::progress stage=a::b::c")
    assert (p.pct, p.stage, p.message) == (None, "a", "b::c")
    assert parse_progress(b"::progress pct=-5::").pct == 0.0  # type: ignore[union-attr]
    for line in (b"::progress pct=x::m", b"::progress pct=inf::m", b"::progressive::m",
                 b"progress pct=1::m", b"::progress pct=1"):
        assert parse_progress(line) is None


def test_a_batch_is_due_at_100_lines_or_after_100_ms() -> None:
    async def main() -> None:
        buffer = OutputBuffer(10**9)
        buffer.add("stdout", [(b"x", False)] * (FLUSH_LINES - 1), 1)
        waiter = asyncio.create_task(buffer.wait_due())
        await asyncio.sleep(0.02)
        assert not waiter.done()
        buffer.add("stdout", [(b"x", False)], 1)
        await asyncio.wait_for(waiter, 1)
        assert len(buffer.take().events) == FLUSH_LINES
        buffer.add("stderr", [(b"one line", False)], 1)
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(buffer.wait_due(), 1)
        assert 0.08 <= asyncio.get_running_loop().time() - started < 0.5
        assert [e[:2] for e in buffer.take().events] == [("stderr", "one line")]

    asyncio.run(main())


def test_the_cap_keeps_the_first_part_and_counts_the_rest() -> None:
    async def main() -> None:
        buffer = OutputBuffer(cap_bytes=10)
        buffer.add("stdout", [(b"12345", False), (b"67890", False), (b"abc", False)], 1)
        buffer.add("stderr", [(b"err", False)], 1)
        out = buffer.final()
        lines = [e[1] for e in out.events if e[0] in ("stdout", "stderr")]
        assert lines == ["12345", "67890"]
        assert (buffer.dropped_bytes, buffer.dropped_lines) == (6, 2)
        assert out.events[-1][2] == "warn"
        assert buffer.error_tail() == "err"   # the stderr tail is kept past the cap

    asyncio.run(main())
