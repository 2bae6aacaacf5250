"""Waking an idle worker when another process queues a job, on PostgreSQL.

Every write that appends to the change feed sends ``NOTIFY runyard_feed`` at
commit (``app.db.dialect.notify_feed``): a submission, an approval, a retry.
A worker listening on that channel looks for queued jobs at once instead of
at its next poll; a cheap indexed read tells it whether there is one. SQLite
has no such channel: there the worker polls every ``worker_poll_s``.

A lost connection (PostgreSQL restarted) is made again and LISTEN issued
again, and the worker is woken at once for what was queued meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
from sqlalchemy.engine import make_url

from app.db.dialect import FEED_CHANNEL
from app.db.engine import PG_CONNECT_ARGS

log = logging.getLogger("runyard.runner")


async def listen_for_commits(url: str, wake: Callable[[], None]) -> None:
    """Call ``wake`` after each feed commit of any process, until cancelled."""
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    delay = 0.5
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                    libpq, autocommit=True, **PG_CONNECT_ARGS) as conn:
                await conn.execute(f"LISTEN {FEED_CHANNEL}")
                delay = 0.5
                wake()   # whatever was queued while we were not listening
                async for _ in conn.notifies():
                    wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("LISTEN %s lost (%s); retrying in %.1fs", FEED_CHANNEL, exc, delay)
            await asyncio.sleep(delay)
            # Capped low: while it waits, the worker only has its slow poll.
            delay = min(delay * 2, 4.0)
