"""The hub's fan-out rules, without a server: bounded queues and shared matching."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from app.live.hub import Hub
from app.live.messages import Batch, Message, Subscriber, run_message
from app.live.routes import unsent


def test_a_full_queue_closes_the_subscriber_instead_of_growing() -> None:
    async def scenario() -> tuple[bool, list[Batch] | None]:
        sub = Subscriber(queue_size=3)
        for i in range(10):
            sub.offer(Batch.of([Message(i, "execution", "{}")]))
        return sub.closed, await sub.take()

    # Nothing is kept: the stream ends and the client resumes from the table
    # with Last-Event-ID, so nothing is lost and memory stays bounded.
    assert asyncio.run(scenario()) == (True, None)


def test_take_returns_everything_queued_and_unsent_skips_what_was_sent() -> None:
    async def scenario() -> list[Batch] | None:
        sub = Subscriber(queue_size=100)
        sub.offer(Batch.of([Message(1, "execution", "a"), Message(2, "execution", "b")]))
        sub.offer(Batch.of([Message(3, "execution", "c")]))
        return await sub.take()

    batches = asyncio.run(scenario())
    assert batches is not None and [m.id for b in batches for m in b.messages] == [1, 2, 3]
    wire, last = unsent(batches, 1)
    assert last == 3
    assert wire == batches[0].messages[1].wire + batches[1].wire


def test_terminal_status_events_end_a_run_stream() -> None:
    base = {"id": 5, "execution_id": "x", "seq": 2, "ts": 0, "level": "info", "message": None}
    ending = run_message({**base, "type": "execution.status",
                          "data": {"from": "running", "to": "failed"}})
    going = run_message({**base, "type": "execution.status",
                         "data": {"from": "queued", "to": "running"}})
    created_done = run_message({**base, "type": "execution.created",
                                "data": {"status": "completed"}})
    odd_data = run_message({**base, "type": "log", "data": ["not", "a", "dict"]})
    assert (ending.terminal, going.terminal, created_done.terminal, odd_data.terminal) == (
        True, False, True, False)
    assert ending.id == 5 and ending.event == "execution.status"


def test_the_coalescing_window_grows_with_the_streams_to_write_to() -> None:
    hub = Hub(cast(Any, None), cast(Any, None), idle_poll_s=0.25, coalesce_s=0.002,
              queue_size=10, coalesce_per_stream_s=0.0001, max_coalesce_s=0.025)
    assert hub.coalesce_window() == 0.002            # nobody, or few: the floor
    subs = [hub.subscribe_run(f"r{i}") for i in range(100)]
    assert hub.coalesce_window() == pytest.approx(0.01)   # 100 streams at 0.1 ms each
    subs += [hub.subscribe_run("r0") for _ in range(400)]
    assert hub.coalesce_window() == 0.025           # the ceiling
    for sub in subs[10:]:
        hub.unsubscribe(sub)
    assert hub.coalesce_window() == 0.002
