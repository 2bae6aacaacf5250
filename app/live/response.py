"""The SSE response of the live routes: sse-starlette's wire format, less per-client work.

A burst of changes goes to every connected client, so whatever a response does
per send is paid hundreds of times per burst. ``EventSourceResponse`` runs four
tasks per stream in an anyio task group and wraps every send in a cancel scope
(its per-send timeout); at 500 clients that was a third of the server's CPU
(docs/PERFORMANCE.md, Live). This response sends the body iterator's bytes
with a bare ``await send(...)``. The headers, the message encoding
(``ServerSentEvent``) and the ping comment are sse-starlette's.

Intentional divergences from ``EventSourceResponse``, each with its reason:

1. **No per-send timeout.** The stream notes when a send began on its
   ``Subscriber``; the hub's ticker aborts a stream whose send has been
   blocked for ``SEND_TIMEOUT_S`` (one check every few seconds for all
   streams instead of a cancel scope per send). The connection is then
   closed without the final chunk, and uvicorn logs one line.
2. **Pings come from the hub's ticker** (one timer for all streams, not a
   task per stream): every ``PING_S`` a stream with nothing waiting is sent a
   ping comment.
3. **Shutdown**: the hub listens for sse-starlette's exit signal once and
   closes every subscriber, so each stream ends its body cleanly.
4. **Tasks**: the body is sent from a task of its own (shallow, so waking it
   on each burst is cheap; see ``__call__``), and one small task per stream
   waits for ``http.disconnect`` and closes the subscriber, which ends the
   stream at once.

Like sse-starlette, HEAD is answered with the headers and no body (an endless
body would never complete).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from app.live.hub import Hub
from app.live.messages import Subscriber


class StreamResponse(Response):
    """Sends ``body`` (already encoded SSE bytes) while ``subscriber`` is open,
    and unsubscribes it from ``hub`` when the stream ends, however it ends."""

    media_type = "text/event-stream"

    def __init__(self, body: AsyncGenerator[bytes, None], hub: Hub,
                 subscriber: Subscriber) -> None:
        self.body_iterator = body
        self.hub = hub
        self.subscriber = subscriber
        self.status_code = 200
        self.background = None
        headers = MutableHeaders()
        headers["Cache-Control"] = "no-store"
        headers["Connection"] = "keep-alive"
        # Tells nginx not to buffer the stream.
        headers["X-Accel-Buffering"] = "no"
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.subscriber
        start: Message = {"type": "http.response.start", "status": self.status_code,
                          "headers": self.raw_headers}
        if scope["method"] == "HEAD":
            self.hub.unsubscribe(sub)
            await self.body_iterator.aclose()
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        # The body goes out from a task of its own. Resuming a task runs back
        # through every frame it is suspended in, and the request's task is
        # suspended under a dozen middleware frames: a stream is woken on every
        # burst, so a shallow task makes a burst to 500 clients much cheaper.
        pump = asyncio.create_task(self._pump(start, send))
        watcher = asyncio.create_task(_close_on_disconnect(receive, sub))
        try:
            # Cancelling this task (server shutdown) cancels the pump too.
            await pump
        finally:
            watcher.cancel()
            pump.cancel()
            self.hub.unsubscribe(sub)

    async def _pump(self, start: Message, send: Send) -> None:
        sub = self.subscriber
        task = asyncio.current_task()
        sub.task = task
        loop = asyncio.get_running_loop()
        try:
            await send(start)
            async for chunk in self.body_iterator:
                # Read by the hub's watchdog (divergence 1).
                sub.sending_since = loop.time()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                sub.sending_since = None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not sub.aborted or task is None or task.cancelling() > 1:
                raise
            # Our watchdog's cancel, and no one else's: drop this client alone.
            # Returning with the body incomplete makes uvicorn close the socket.
            task.uncancel()
        finally:
            sub.task = None
            # The body may be suspended at a yield (a send failed or was cancelled).
            await self.body_iterator.aclose()


async def _close_on_disconnect(receive: Receive, sub: Subscriber) -> None:
    """Wait for the client to go away, then end its stream."""
    with contextlib.suppress(OSError):
        while (await receive())["type"] != "http.disconnect":
            pass
    sub.close()
