"""Wakes the feed tailer when new events may exist.

Writers run in worker threads (the store is synchronous), so ``publish_threadsafe``
hands the news to the event loop; waiting is an ``asyncio.Event`` that is
replaced on each publish so every waiter of one generation wakes exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib

from app.store.feed import WriteLog


class Notifier:
    """The newest event id this process has heard of, and a way to wait for more."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()
        self.heard = 0

    def publish(self, event_id: int) -> None:
        """Record that events up to ``event_id`` exist (call on the loop)."""
        if event_id > self.heard:
            self.heard = event_id
        self._changed.set()
        self._changed = asyncio.Event()

    def publish_threadsafe(self, log: WriteLog) -> None:
        """The store's commit callback: may be called from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody listens
            self._loop.call_soon_threadsafe(self.publish, log.last_event_id)

    async def wait(self, timeout: float) -> None:
        """Return after the next publish, or after ``timeout`` seconds."""
        changed = self._changed
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
        # cancel that lands as the wait completes, and shutdown would hang.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await changed.wait()
