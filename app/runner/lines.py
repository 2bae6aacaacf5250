"""Bytes from a pipe to lines, lines to event messages, and progress lines.

The reader never calls ``readline``: asyncio's ``StreamReader`` raises on a
line longer than its 64 KiB limit. Chunks are split here instead, and a line
longer than ``MAX_PIECE`` is cut into pieces of at most that many bytes (at a
UTF-8 character boundary), each one event. A piece is emitted as soon as it
is full, so an endless line without a newline costs bounded memory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MAX_PIECE = 64 * 1024
# A progress line is short; longer lines are output, whatever they start with.
_PROGRESS_MAX = 4096
_PROGRESS = re.compile(r"::progress((?:[ \t]+[A-Za-z_]+=[^ \t]*?)*)[ \t]*::(.*)", re.S)
_STAGE_MAX = 256

Piece = tuple[bytes, bool]   # (bytes, the line continues in the next piece)


def _boundary(buf: bytes | bytearray, limit: int) -> int:
    """The largest cut at or below ``limit`` that does not split a UTF-8 character."""
    cut = limit
    # Continuation bytes are 0b10xxxxxx; a character is at most 4 bytes long.
    while cut > limit - 3 and (buf[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if (buf[cut] & 0xC0) != 0x80 else limit


class LineSplitter:
    """Splits one stream's chunks into lines (without ``\\n`` or ``\\r\\n``)."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[Piece]:
        """The pieces completed by ``data``."""
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        rest = lines.pop()
        out: list[Piece] = []
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) <= MAX_PIECE:
                out.append((line, False))
            else:
                out.extend(self._cut(line, final=True))
        if len(rest) > MAX_PIECE:
            pieces = self._cut(rest, final=False)
            rest = pieces.pop()[0]
            out.extend(pieces)
        self._partial = rest
        return out

    def finish(self) -> list[Piece]:
        """At end of stream: the last line, if it had no terminator."""
        rest, self._partial = self._partial, b""
        if rest[-1:] == b"\r":
            rest = rest[:-1]
        return self._cut(rest, final=True) if rest else []

    @staticmethod
    def _cut(line: bytes, final: bool) -> list[Piece]:
        out: list[Piece] = []
        while len(line) > MAX_PIECE:
            cut = _boundary(line, MAX_PIECE)
            out.append((line[:cut], True))
            line = line[cut:]
        # Not final: the remainder is kept for the next chunk (the caller pops it).
        out.append((line, not final))
        return out


def decode(raw: bytes) -> list[str]:
    """A piece as text: UTF-8 (bad bytes become U+FFFD; NUL too, which PostgreSQL
    cannot store), split again if replacement characters pushed it past
    ``MAX_PIECE`` bytes."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        if len(text.encode("utf-8")) > MAX_PIECE:
            # Each U+FFFD is 3 bytes: a third of the limit in characters always fits.
            step = MAX_PIECE // 3
            return [t.replace("\x00", "\ufffd") for t in
                    (text[i:i + step] for i in range(0, len(text), step))]
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return [text]


@dataclass(frozen=True)
class Progress:
    """A parsed ``::progress pct=N stage=NAME::message`` line."""

    pct: float | None
    stage: str | None
    message: str


def parse_progress(raw: bytes) -> Progress | None:
    """The progress a line reports, or None when it is ordinary output."""
    if not raw.startswith(b"::progress") or len(raw) > _PROGRESS_MAX:
        return None
    match = _PROGRESS.fullmatch(decode(raw)[0])
    if match is None:
        return None
    pct: float | None = None
    stage: str | None = None
    for pair in match.group(1).split():
        key, _, value = pair.partition("=")
        if key == "pct":
            try:
                pct = float(value)
            except ValueError:
                return None
            if not math.isfinite(pct):
                return None
            pct = min(100.0, max(0.0, pct))
        elif key == "stage":
            stage = value[:_STAGE_MAX] or None
    return Progress(pct, stage, match.group(2))
