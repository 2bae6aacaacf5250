"""What the live streams send: messages (encoded once), batches of them, and
each client's bounded queue (``Subscriber``); and how feed rows become
messages. ``app.live.hub`` decides who gets what; this module holds the
things it hands around.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sse_starlette import ServerSentEvent

from app.store.changes import changes_row
from app.store.filters import ExecutionFilter
from app.store.inputs import TERMINAL
from app.store.records import event_out, execution_out

RowRenderer = Callable[[dict[str, Any]], str]
EventRenderer = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Message:
    """One SSE message: its id (an event id), event name and data text.

    ``wire`` is the encoded message, made once and shared by every subscriber
    it goes to.
    """

    id: int
    event: str
    data: str
    terminal: bool = False
    wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded = ServerSentEvent(data=self.data, event=self.event, id=str(self.id)).encode()
        object.__setattr__(self, "wire", encoded)


@dataclass(frozen=True)
class Batch:
    """The messages one dispatch has for a subscriber, in id order, with their
    bytes joined once: every subscriber of the same view is sent the same object."""

    messages: tuple[Message, ...]
    wire: bytes

    @classmethod
    def of(cls, messages: list[Message]) -> Batch:
        return cls(tuple(messages), b"".join(m.wire for m in messages))

    @classmethod
    def ping(cls) -> Batch:
        """A keep-alive comment (sse-starlette's): no messages, not counted."""
        comment = ServerSentEvent(comment=f"ping - {datetime.now(UTC)}")
        return cls((), comment.encode())


@dataclass(eq=False)
class Subscriber:
    """One connected client's bounded queue of batches.

    ``render`` turns a changed row (or an event, for a run's stream) into the
    message data (None: JSON); subscribers with the same ``render_key`` share
    one rendering. ``queue_size`` bounds the *messages* waiting, whatever the
    batching.
    """

    queue_size: int
    filter: ExecutionFilter | None = None
    execution_id: str | None = None
    render: Callable[[dict[str, Any]], str] | None = None
    render_key: str = ""
    closed: bool = False
    # Set by the stream's response: its task, and when its current send began
    # (loop time; None between sends), for the hub's watchdog.
    task: asyncio.Task[Any] | None = None
    sending_since: float | None = None
    aborted: bool = False
    _batches: deque[Batch] = field(default_factory=deque)
    _pending: int = 0
    # What take() waits on: a bare future, cheaper than an asyncio.Event for
    # the one waiter there is (this runs for every client on every burst).
    _waiter: asyncio.Future[None] | None = None

    def offer(self, batch: Batch) -> None:
        """Queue a batch; a client this far behind is closed instead of buffered."""
        if self.closed:
            return
        if self._pending + len(batch.messages) > self.queue_size:
            self.close()
            return
        self._batches.append(batch)
        self._pending += len(batch.messages)
        self._wake()

    def ping(self, batch: Batch) -> None:
        """Queue a ping unless something is already waiting (it will be sent
        soon anyway), so a client that never reads gathers no pings either."""
        if not self.closed and not self._batches:
            self._batches.append(batch)
            self._wake()

    async def take(self) -> list[Batch] | None:
        """Everything queued (waiting for something first); None once closed."""
        while not self._batches and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        if self.closed:
            return None
        out = list(self._batches)
        self._batches.clear()
        self._pending = 0
        return out

    def close(self) -> None:
        """End this subscriber's stream at its next read."""
        self.closed = True
        self._batches.clear()
        self._pending = 0
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def abort(self) -> None:
        """End the stream now, even in the middle of a blocked send."""
        self.close()
        if self.task is not None and not self.aborted:
            self.aborted = True
            self.task.cancel()


def newest_changes(rows: list[dict[str, Any]]) -> dict[str, int]:
    """The runs whose list row ``rows`` (feed rows) change, each with its newest
    such event id."""
    newest: dict[str, int] = {}
    for row in rows:
        if changes_row(row["type"], row["level"]):
            newest[row["execution_id"]] = row["id"]
    return newest


def list_message(event_id: int, row: dict[str, Any], render: RowRenderer | None) -> Message:
    """The ``execution`` message for a changed row (JSON, or rendered by ``render``)."""
    data = render(row) if render else json.dumps(execution_out(row), separators=(",", ":"))
    return Message(event_id, "execution", data)


def is_terminal(event: dict[str, Any]) -> bool:
    """True for the event that ends a run: its terminal status change (or creation)."""
    data = event.get("data")
    if not isinstance(data, dict):
        return False
    return ((event["type"] == "execution.status" and data.get("to") in TERMINAL)
            or (event["type"] == "execution.created" and data.get("status") in TERMINAL))


def run_message(event: dict[str, Any], render: EventRenderer | None = None) -> Message:
    """The message for one event of a run's own stream (JSON, or rendered)."""
    data = render(event) if render else json.dumps(event_out(event), separators=(",", ":"))
    return Message(event["id"], event["type"], data, is_terminal(event))
