"""Admission control: at most ``max_in_flight`` requests of a kind in the app
at once; one more waits its turn for up to half a second, and is then
answered 503 ``overloaded`` with ``Retry-After``.

Why: a server sent more work than it can do otherwise accepts it all and works
on every request together. Each then takes longer, clients time out and give
up, and the server goes on working, in order, on answers nobody reads (the
soak of issue 7 saw ~9,000 requests in flight and one in ten answered in time).
With a cap, what is admitted is answered about as fast as the server can, and
the rest learn within half a second, before their body is read, to come back
later. The short wait absorbs bursts and pauses (a checkpoint, a collection)
that a healthy server catches up on, so they cost no refusals. The default cap
is small: the database works on only a few requests at once (one SQLite
writer, eight readers), so more in the app adds waiting, not throughput.
uvicorn's ``--limit-concurrency`` counts connections, SSE streams and
idle keep-alive ones included, so it cannot tell a busy server from a watched one.

Kinds are the role a request needs (``app.auth.policy``): ``write`` (recording
runs: the JSON API and OTLP), ``read`` (the page and the read API) and
``exec`` (jobs and their approvals). Each has its own cap, so an exporter
that floods the server with spans does not shut the operator out of the page
or stop them cancelling a job. Not counted: SSE streams (they stay open for as
long as someone watches; their number has its own limit), and the public
paths (``/healthz``, ``/static/``, sign-in), which cost little.

Answers: JSON on the API's paths, a ``google.rpc.Status`` (UNAVAILABLE) in the
request's encoding on OTLP's, as exporters expect, and the page's own error
on the page's. Per process, like the other limits. One warning line per
``LOG_EVERY_S`` says how many were refused, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import refusal
from app.api.otlp import unavailable
from app.auth.policy import PUBLIC, role_of
from app.limits.streams import is_stream

log = logging.getLogger("runyard.limits")

RETRY_AFTER_S = 1
# How long a request over the cap waits for a slot before it is refused.
WAIT_S = 0.5
LOG_EVERY_S = 10.0


class AdmissionMiddleware:
    """Counts the requests of each kind in the app; one over the cap waits its
    turn for up to ``wait_s``, then is refused."""

    def __init__(self, app: ASGIApp, max_in_flight: int, wait_s: float = WAIT_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.wait_s = wait_s
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self.slots: dict[str, asyncio.Semaphore] = {}
        self.in_flight: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()   # since the last warning
        self._logged = float("-inf")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.max_in_flight <= 0 or scope["type"] != "http" or is_stream(scope):
            await self.app(scope, receive, send)
            return
        kind = role_of(scope)
        if kind == PUBLIC:
            await self.app(scope, receive, send)
            return
        if not await self._enter(kind):
            self._note_refusal(kind)
            await self._refusal(scope, kind)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            # However the request ends: answered, failed, or the client gone
            # (a disconnect arrives as cancellation).
            self._leave(kind)

    async def _enter(self, kind: str) -> bool:
        """Take a slot of ``kind``, waiting up to ``wait_s`` for one: whether it did."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A semaphore belongs to the loop it first waited on. One server
            # has one loop; an app served again (tests) starts afresh.
            self._loop, self.slots, self.in_flight = loop, {}, Counter()
        slots = self.slots.get(kind)
        if slots is None:
            slots = self.slots[kind] = asyncio.Semaphore(self.max_in_flight)
        if not slots.locked():
            await slots.acquire()   # at once: no timer for the usual case
        else:
            try:
                # First come, first served; a wait cut short by the timeout (or
                # the client going away) gives back a slot handed over meanwhile.
                async with asyncio.timeout(self.wait_s):
                    await slots.acquire()
            except TimeoutError:
                return False
        self.in_flight[kind] += 1
        return True

    def _leave(self, kind: str) -> None:
        self.in_flight[kind] -= 1
        self.slots[kind].release()

    def _note_refusal(self, kind: str) -> None:
        self._refused[kind] += 1
        now = self.clock()
        if now - self._logged >= LOG_EVERY_S:
            counts = ", ".join(f"{n} {k}" for k, n in sorted(self._refused.items()))
            log.warning("overloaded: refused %s request(s) with 503 (at most %d of a kind "
                        "at once; RUNYARD_MAX_IN_FLIGHT)", counts, self.max_in_flight)
            self._refused.clear()
            self._logged = now

    def _refusal(self, scope: Scope, kind: str) -> Response:
        # The page puts its title ("The server is busy") before the reason.
        reason = (f"it is answering {self.max_in_flight} {kind} requests, as many as it "
                  f"takes at once; retry in {RETRY_AFTER_S} s")
        message = f"the server is busy: {reason}"
        if scope["path"].startswith("/v1/"):
            content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
            return unavailable(content_type, message, RETRY_AFTER_S)
        return refusal(scope, "overloaded", message,
                       {"kind": kind, "max_in_flight": self.max_in_flight,
                        "retry_after_s": RETRY_AFTER_S},
                       status=503, retry_after_s=RETRY_AFTER_S, page_message=reason)
