"""A minimal HTTP/1.1 client for load generation: keep-alive connections over
asyncio streams, a bounded pool, whole responses read into memory.

Why not httpx: on this 2-core machine ``httpx.AsyncClient`` costs about
3.5 ms of client CPU per small POST, more than the server spends answering it
(about 3 ms), so 300 requests/s would need a whole core for the client alone
and the figures would measure the client. This reader costs a small fraction
of that (``bench/soak.py`` prints the client's CPU share so it can be
checked). It speaks only what ``runyard serve`` answers: ``Content-Length``
or chunked bodies, ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

HEAD_LIMIT = 1 << 16
# uvicorn closes a keep-alive connection idle for 5 s: never reuse one that
# old, or a request would fail through no fault of the server.
MAX_IDLE_S = 3.0


@dataclass
class Response:
    """A status and a body, plus the raw header block (lower-cased names)."""

    status: int
    head: bytes
    body: bytes

    def header(self, name: str) -> str | None:
        """A response header's value, or None."""
        key = name.lower().encode() + b":"
        for line in self.head.split(b"\r\n")[1:]:
            if line.lower().startswith(key):
                return line[len(key):].strip().decode("latin-1")
        return None


class Pool:
    """Up to ``size`` keep-alive connections to one server; a request waits for
    a free connection when all are busy (the wait counts in its latency)."""

    def __init__(self, host: str, port: int, size: int,
                 headers: dict[str, str] | None = None, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.slots = asyncio.Semaphore(size)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: dict[str, str] | None = None) -> Response:
        """Send one request and read the whole response (``timeout`` covers both,
        and the wait for a connection)."""
        return await asyncio.wait_for(self._request(method, path, body, headers),
                                      self.timeout)

    async def _request(self, method: str, path: str, body: bytes | None,
                       headers: dict[str, str] | None) -> Response:
        async with self.slots:
            reader, writer = await self._connection()
            try:
                extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
                if body is not None:
                    extra += f"Content-Length: {len(body)}\r\n"
                writer.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                             f"{self.fixed}{extra}\r\n".encode() + (body or b""))
                response, keep = await _read_response(reader)
            except BaseException:
                # Cancelled or broken mid-response: the connection's state is unknown.
                writer.close()
                raise
            if keep:
                self.idle.append((reader, writer, time.monotonic()))
            else:
                writer.close()
            return response

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The most recently used idle connection still fit for use, else a new one."""
        while self.idle:
            reader, writer, used = self.idle.pop()
            if not reader.at_eof() and time.monotonic() - used < MAX_IDLE_S:
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port, limit=HEAD_LIMIT)

    def close(self) -> None:
        """Close every idle connection."""
        while self.idle:
            self.idle.pop()[1].close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[Response, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    keep = b"\r\nconnection: close" not in lower
    at = lower.find(b"\r\ncontent-length:")
    if status in (204, 304) or 100 <= status < 200:
        body = b""
    elif at >= 0:
        end = lower.index(b"\r\n", at + 2)
        body = await reader.readexactly(int(lower[at + 17:end]))
    elif b"\r\ntransfer-encoding: chunked" in lower:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append((await reader.readexactly(size + 2))[:-2])
        body = b"".join(parts)
    else:
        body, keep = await reader.read(), False
    return Response(status, head, body), keep
