"""Hearing other processes' commits on PostgreSQL through ``LISTEN/NOTIFY``.

Every write transaction that appends events sends ``NOTIFY runyard_feed`` with
its last event id (delivered at commit; see ``app.db.dialect.notify_feed``).
This task keeps one listening connection and republishes to the in-process
notifier. A lost connection (PostgreSQL restarted, the network cut: TCP
keepalives notice a silent peer) is retried with a capped backoff, and LISTEN
is issued again on the new connection; the hub's slow backstop poll covers
anything missed meanwhile, and a reconnect wakes it at once to catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from sqlalchemy.engine import make_url

from app.db.dialect import FEED_CHANNEL
from app.db.engine import PG_CONNECT_ARGS
from app.live.notifier import Notifier

log = logging.getLogger("runyard.live")

# The longest wait between reconnect attempts: after an outage, notifications
# resume within this long of the server coming back.
MAX_RETRY_S = 4.0


def libpq_url(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as plain libpq connection string."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def listen(url: str, notifier: Notifier) -> None:
    """Forward notifications to ``notifier`` until cancelled."""
    delay = 0.5
    while True:
        try:
            async with await _connect(libpq_url(url)) as conn:
                await conn.execute(f"LISTEN {FEED_CHANNEL}")
                delay = 0.5
                # Catch up on whatever was committed while we were not listening.
                notifier.publish(0)
                async for note in conn.notifies():
                    try:
                        notifier.publish(int(note.payload))
                    except ValueError:
                        notifier.publish(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("LISTEN %s lost (%s); retrying in %.1fs", FEED_CHANNEL, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)


async def _connect(dsn: str) -> psycopg.AsyncConnection[object]:
    """Connect; if shutdown cancels us meanwhile, close what the connect opened
    (a half-made connection dropped on the floor leaks its socket)."""
    connecting = asyncio.ensure_future(psycopg.AsyncConnection.connect(
        dsn, autocommit=True, **PG_CONNECT_ARGS))
    try:
        return await asyncio.shield(connecting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await (await connecting).close()
        raise
