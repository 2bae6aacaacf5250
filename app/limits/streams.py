"""Concurrent SSE streams per client: at most ``max_streams`` open at once.

A stream holds a connection, a hub subscription and a queue for as long as
the client keeps it open, so one client (a token, or an address without one)
opening hundreds could take a replica's share from everyone else. One more
than the limit is answered 429 ``too_many_streams`` as JSON, before the
stream starts. A browser page needs one or two streams; the limit leaves room
for many tabs.

The count is taken around the whole response: it goes down when the app's
call returns or raises, which is how every end arrives (the stream ended, the
client went away, the server is shutting down: a disconnect arrives as
cancellation, so the decrement sits in ``finally``). Like the rate limit it
is per process.
"""

from __future__ import annotations

import re
from collections import Counter

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response
from app.limits.keys import client_key

# The SSE routes of app.live.routes.
_STREAM_PATH = re.compile(r"^/api/(?:stream|executions/[^/]+/stream)$")


def is_stream(scope: Scope) -> bool:
    """Whether the request opens one of the SSE streams."""
    return scope["method"] in ("GET", "HEAD") and _STREAM_PATH.match(scope["path"]) is not None


class StreamLimitMiddleware:
    """Counts open streams per client and refuses one over ``max_streams``."""

    def __init__(self, app: ASGIApp, max_streams: int) -> None:
        self.app = app
        self.max_streams = max_streams
        self.open: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.max_streams <= 0 or scope["type"] != "http" or not is_stream(scope):
            await self.app(scope, receive, send)
            return
        key = client_key(scope)
        if self.open[key] >= self.max_streams:
            response = error_response(
                "too_many_streams",
                f"too many open streams: at most {self.max_streams} at once per client; "
                "close one first",
                {"max_streams": self.max_streams}, status=429)
            await response(scope, receive, send)
            return
        self.open[key] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open[key] -= 1
            if self.open[key] <= 0:
                # Counter keeps zero entries: drop them so memory follows open streams.
                del self.open[key]
