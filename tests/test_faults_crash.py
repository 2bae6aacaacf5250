"""Faults, with real processes: the server killed with SIGKILL during a bulk
ingest, on SQLite and on PostgreSQL.

What must hold: every acknowledged write survives and nothing half-written is
visible; the SQLite file is never corrupt; the feed has no holes; the server
starts again on the same database, and a list stream resumed with
``Last-Event-ID`` sees every row once.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from tests.faults_support import (
    Server,
    StreamReader,
    engine_for,
    integrity,
    server_log_fixture,  # noqa: F401 (the server_log fixture, found by pytest here)
    until,
)


@dataclass
class Sent:
    """One write request: what it would create, and whether it was acknowledged."""

    executions: list[str]
    tool_calls: list[str] = field(default_factory=list)
    interactions: list[str] = field(default_factory=list)
    logs_per_execution: int = 0     # `log` events each execution gets
    acked: bool = False


@dataclass
class Ledger:
    """Every write the clients sent, shared by the writer threads."""

    batches: list[Sent] = field(default_factory=list)
    # Single creates, then one append of events each.
    creates: list[Sent] = field(default_factory=list)
    appends: list[tuple[str, int, bool]] = field(default_factory=list)  # id, size, acked
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acked_batches(self) -> int:
        with self.lock:
            return sum(b.acked for b in self.batches)


def _batch_body(prefix: str, n: int) -> tuple[dict[str, Any], Sent]:
    sent = Sent([], logs_per_execution=4)
    executions = []
    for j in range(5):
        eid = f"{prefix}-b{n}-e{j}"
        calls = [f"{eid}-t{k}" for k in range(2)]
        ask = f"{eid}-i0"
        sent.executions.append(eid)
        sent.tool_calls += calls
        sent.interactions.append(ask)
        executions.append({
            "id": eid, "name": f"batch {n} #{j}", "status": "completed", "trigger_kind": "cli",
            "code": "x" * 2000, "created_at": 1_700_000_000_000 + n * 10 + j,
            "started_at": 1_700_000_000_000 + n * 10 + j,
            "completed_at": 1_700_000_000_500 + n * 10 + j,
            "tool_calls": [{"id": c, "tool_path": "github.issues.list", "status": "completed"}
                           for c in calls],
            "interactions": [{"id": ask, "message": "ok?", "status": "resolved",
                              "action": "accept"}],
            "events": [{"message": f"{eid}:log{k}", "level": "warn" if k == 0 else "info"}
                       for k in range(4)],
        })
    return {"executions": executions}, sent


def _writer(base: str, prefix: str, ledger: Ledger, stop: threading.Event) -> None:
    """Alternate bulk ingests with single creates and appends until the server dies."""
    with httpx.Client(base_url=base, timeout=30) as http:
        n = 0
        appending: str | None = None    # a run whose append is on the wire
        while not stop.is_set():
            n += 1
            try:
                if n % 3:
                    body, sent = _batch_body(prefix, n)
                    with ledger.lock:
                        ledger.batches.append(sent)
                    r = http.post("/api/ingest", json=body)
                    if r.status_code != 200:
                        ledger.unexpected.append(f"ingest {r.status_code} {r.text[:200]}")
                    sent.acked = r.status_code == 200
                    continue
                eid = f"{prefix}-s{n}"
                sent = Sent([eid])
                with ledger.lock:
                    ledger.creates.append(sent)
                r = http.post("/api/executions", json={"id": eid, "name": "single"})
                if r.status_code != 201:
                    ledger.unexpected.append(f"create {r.status_code} {r.text[:200]}")
                    continue
                sent.acked = True
                appending = eid
                r = http.post(f"/api/executions/{eid}/events", json={"events": [
                    {"message": f"{eid}:log{k}"} for k in range(3)]})
                appending = None
                with ledger.lock:
                    ledger.appends.append((eid, 3, r.status_code == 201))
                if r.status_code != 201:
                    ledger.unexpected.append(f"append {r.status_code} {r.text[:200]}")
            except httpx.TransportError:
                if appending is not None:   # cut off: it may or may not have landed
                    with ledger.lock:
                        ledger.appends.append((appending, 3, False))
                return


def _check_ledger(url: str, ledger: Ledger) -> tuple[int, int]:
    """Assert every acknowledged write is stored and no batch is half there.
    Returns (stored executions, acknowledged batches)."""
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            stored = {r[0] for r in conn.execute(text("SELECT id FROM execution"))}
            calls = {r[0] for r in conn.execute(text("SELECT id FROM execution_tool_call"))}
            asks = {r[0] for r in conn.execute(text("SELECT id FROM execution_interaction"))}
            logs = dict(conn.execute(text(
                "SELECT execution_id, count(*) FROM execution_event WHERE type = 'log' "
                "GROUP BY execution_id")).all())
            created = dict(conn.execute(text(
                "SELECT execution_id, count(*) FROM execution_event "
                "WHERE type = 'execution.created' GROUP BY execution_id")).all())
            seqs: dict[str, list[int]] = {}
            for eid, seq in conn.execute(text(
                    "SELECT execution_id, seq FROM execution_event ORDER BY execution_id, seq")):
                seqs.setdefault(eid, []).append(seq)
            ids = [r[0] for r in conn.execute(text("SELECT id FROM execution_event ORDER BY id"))]
    finally:
        engine.dispose()
    for b in ledger.batches:
        present = [e in stored for e in b.executions]
        assert all(present) or not any(present), f"half a batch is visible: {b}"
        if b.acked:
            assert all(present), f"an acknowledged batch is lost: {b.executions}"
        if all(present):
            assert set(b.tool_calls) <= calls and set(b.interactions) <= asks, b
            assert all(logs.get(e) == b.logs_per_execution for e in b.executions), b
        else:
            assert not set(b.tool_calls) & calls and not set(b.interactions) & asks, b
    for c in ledger.creates:
        if c.acked:
            assert c.executions[0] in stored, f"an acknowledged create is lost: {c}"
    appended: dict[str, list[tuple[int, bool]]] = {}
    for eid, size, acked in ledger.appends:
        appended.setdefault(eid, []).append((size, acked))
    for eid, parts in appended.items():
        sure = sum(size for size, acked in parts if acked)
        maybe = sum(size for size, acked in parts if not acked)
        assert logs.get(eid, 0) in (sure, sure + maybe), (eid, logs.get(eid), parts)
    # The feed as a resuming reader walks it: one creation per run, each run's
    # seqs without holes, and (SQLite, which never skips an id) ids without holes.
    assert all(created.get(e) == 1 for e in stored), "a run without exactly one creation"
    for eid, run_seqs in seqs.items():
        assert run_seqs == list(range(run_seqs[0], run_seqs[0] + len(run_seqs))), eid
    if url.startswith("sqlite") and ids:
        assert ids == list(range(ids[0], ids[0] + len(ids))), "the feed has a hole"
    return len(stored), sum(b.acked for b in ledger.batches)


def _stored_executions(url: str) -> set[str]:
    engine = engine_for(url)
    try:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(text("SELECT id FROM execution"))}
    finally:
        engine.dispose()


def _list_reader(base: str, after: int | None) -> StreamReader:
    """A list stream from ``after`` that ends with the server (no reconnect)."""
    reader = StreamReader(base, "/api/stream", after=after, reconnect=False)
    reader.start()
    assert reader.connected.wait(30), "the list stream did not connect"
    return reader


def test_kill9_during_bulk_ingest_loses_no_acknowledged_write(
        database_url: str, server_log: Path) -> None:
    """SIGKILL the server while 4 clients ingest; after each restart every
    acknowledged write is there, every batch is all or nothing, the feed has
    no holes, the file passes ``PRAGMA integrity_check``, and a list stream
    resumed with ``Last-Event-ID`` brings exactly the runs it had not seen."""
    # Three cut points; on PostgreSQL (the server is killed, not the database) one.
    cuts = 3 if database_url.startswith("sqlite") else 1
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    server = Server(database_url, server_log)
    ledger = Ledger()
    seen: set[str] = set()      # runs the list streams brought
    all_ids: list[int] = []     # and their message ids, over every stream
    last: int | None = None

    def collect(reader: StreamReader) -> None:
        nonlocal last, seen
        ids = reader.ids()
        assert all(i > (last or 0) for i in ids), "a resumed stream repeated a row"
        all_ids.extend(ids)
        assert len(set(all_ids)) == len(all_ids), f"a row came twice (seed {seed})"
        seen |= reader.execution_ids()
        last = ids[-1] if ids else last

    try:
        reader = _list_reader(server.start(), None)
        for cut in range(cuts):
            stop = threading.Event()
            writers = [threading.Thread(target=_writer, daemon=True,
                                        args=(server.base, f"c{cut}w{t}", ledger, stop))
                       for t in range(4)]
            for w in writers:
                w.start()
            target = ledger.acked_batches() + rng.randint(2, 12)
            until(lambda t=target: ledger.acked_batches() >= t, 60,   # type: ignore[misc]
                   f"{target} acknowledged batches (seed {seed})")
            server.kill9()
            stop.set()
            for w in writers:
                w.join(30)
            reader.join(30)
            assert not ledger.unexpected, ledger.unexpected[:5]
            # Before anything opens the file again: the crash left it sound.
            integrity(database_url)
            stored, acked = _check_ledger(database_url, ledger)
            assert acked >= target and stored >= acked * 5
            collect(reader)
            # Restarted, the stream resumed where it was brings the rest, once each.
            reader = _list_reader(server.start(), last)
            want = _stored_executions(database_url)
            until(lambda r=reader, w=want: w <= seen | r.execution_ids(),  # type: ignore[misc]
                   60, f"the resumed stream to bring every stored run (seed {seed})")
        server.stop()
        reader.join(30)
        collect(reader)
        integrity(database_url)
    except BaseException:
        print(f"seed {seed}; server log:\n{server.log() if server_log.exists() else ''}")
        raise
    finally:
        server.stop()
