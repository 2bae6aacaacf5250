"""The hub's fan-out rules, without a server: bounded queues and shared matching."""

from __future__ import annotations

import asyncio

from app.live.hub import CLOSE, Message, Subscriber, run_message


def test_a_full_queue_closes_the_subscriber_instead_of_growing() -> None:
    async def scenario() -> list[Message]:
        sub = Subscriber(queue_size=3)
        for i in range(10):
            sub.offer(Message(i, "execution", "{}"))
        assert sub.closed
        drained = []
        while not sub.queue.empty():
            drained.append(sub.queue.get_nowait())
        return drained

    # Only the close marker is left: the stream ends and the client resumes
    # from the table with Last-Event-ID, so nothing is lost and memory is bounded.
    assert asyncio.run(scenario()) == [CLOSE]


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
