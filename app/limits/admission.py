"""Admission control: at most ``max_in_flight`` requests of a kind in the app
at once; one more waits its turn, for up to two seconds while the queue keeps
emptying and half a second once it has stood for two, and is then answered
503 ``overloaded`` with ``Retry-After``.

Why: a server sent more work than it can do otherwise accepts it all and works
on every request together. Each then takes longer, clients time out and give
up, and the server goes on working, in order, on answers nobody reads (the
soak of issue 7 saw ~9,000 requests in flight and one in ten answered in time).
With a cap, what is admitted is answered about as fast as the server can, and
the rest learn soon (half a second under sustained overload), before their
body is read, to come back later.

How long to wait tells a burst from overload, after CoDel as Facebook's
servers use it (Maurer, "Fail at Scale", ACM Queue 13(8), 2015). A queue that
is served empty now and then holds a burst or a pause (a checkpoint, a
collection) that the server catches up on, so a request may wait up to
``wait_s`` rather than be refused. A queue that has not been served empty, nor
a slot found free, for ``busy_after_s`` holds more work than the server can
do, so new requests wait only ``busy_wait_s`` and the queue stays short.
Refusals do not empty it: they say the server is behind, not that it caught
up. With one short wait for both, a server that kept up on average still
refused a few requests in each stall longer than the wait (the eighth
session's soak: 111 of 180,000 at 102% of a core). The queue itself is
asyncio's ``Semaphore`` (first come, first served); this only picks each
waiter's timeout as it arrives.

The default cap is small: the database works on only a few requests at once
(one SQLite writer, eight readers), so more in the app adds waiting, not
throughput. uvicorn's ``--limit-concurrency`` counts connections, SSE streams
and idle keep-alive ones included, so it cannot tell a busy server from a
watched one.

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
# How long a request over the cap waits for a slot before it is refused: while
# the kind's queue keeps emptying, and once it has not emptied for BUSY_AFTER_S.
WAIT_S = 2.0
BUSY_WAIT_S = 0.5
BUSY_AFTER_S = 2.0
LOG_EVERY_S = 10.0


class AdmissionMiddleware:
    """Counts the requests of each kind in the app; one over the cap waits its
    turn for up to ``wait_s`` (``busy_wait_s`` once the kind's queue has not
    emptied for ``busy_after_s``), then is refused."""

    def __init__(self, app: ASGIApp, max_in_flight: int, wait_s: float = WAIT_S,
                 busy_wait_s: float = BUSY_WAIT_S, busy_after_s: float = BUSY_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.wait_s = wait_s
        self.busy_wait_s = busy_wait_s
        self.busy_after_s = busy_after_s
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self.slots: dict[str, asyncio.Semaphore] = {}
        self.in_flight: Counter[str] = Counter()
        self.waiting: Counter[str] = Counter()
        # Since when requests of a kind have had to queue, without the queue
        # being served empty or a slot found free in between.
        self._queued_since: dict[str, float] = {}
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
        """Take a slot of ``kind``, waiting for one as long as the queue allows:
        whether it did."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # A semaphore belongs to the loop it first waited on. One server
            # has one loop; an app served again (tests) starts afresh.
            self._loop, self.slots, self.in_flight = loop, {}, Counter()
            self.waiting, self._queued_since = Counter(), {}
        slots = self.slots.get(kind)
        if slots is None:
            slots = self.slots[kind] = asyncio.Semaphore(self.max_in_flight)
        if not slots.locked():
            await slots.acquire()   # at once: no timer for the usual case
            self._queued_since.pop(kind, None)
        elif not await self._wait(kind, slots):
            return False
        self.in_flight[kind] += 1
        return True

    async def _wait(self, kind: str, slots: asyncio.Semaphore) -> bool:
        """Queue for a slot (first come, first served): whether one came in time."""
        now = self.clock()
        since = self._queued_since.setdefault(kind, now)
        budget = self.busy_wait_s if now - since >= self.busy_after_s else self.wait_s
        self.waiting[kind] += 1
        served = False
        try:
            # A wait cut short by the timeout (or the client going away) gives
            # back a slot handed over meanwhile.
            async with asyncio.timeout(budget):
                await slots.acquire()
            served = True
        except TimeoutError:
            pass
        finally:
            self.waiting[kind] -= 1
            # Only serving everyone empties the queue; refusing them does not
            # mean the server has caught up.
            if served and not self.waiting[kind]:
                self._queued_since.pop(kind, None)
        return served

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
