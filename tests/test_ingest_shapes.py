"""The bulk path checks ingest bodies as dicts (``parse_ingest``), not as models.

Its shapes are derived from the pydantic models the rest of the API uses; these
tests hold the two to the same answers: the same errors (kind, location and
message) for bad bodies, and the same values, defaults filled in, for good ones.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.db.engine import open_database
from app.db.migrate import upgrade
from app.limits.values import MAX_VALUE_BYTES, cut_value, stored_json
from app.store import Store
from app.store.inputs import INGEST_DEFAULTS, IngestBatch, parse_ingest

# Each field's values: valid ones and ones the models refuse.
TIMES = st.sampled_from([0, 1_767_225_600_000, "2026-01-01T00:00:00Z", "12", 1.5, -1,
                         "yesterday", True, None, 2**63, "2026-13-01T00:00:00Z"])
TEXTS = st.one_of(st.none(), st.text(max_size=8), st.integers(), st.just("x" * 1025))
IDS = st.sampled_from([None, "a1", "run:1@x", "", "-bad", "x" * 129, 7])
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=6)


def _object(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts with any subset of ``fields``, now and then an unknown key."""
    return st.fixed_dictionaries({}, optional={**fields, "bogus": st.integers()})


TOOL_CALLS = _object({
    "id": IDS, "tool_path": st.sampled_from(["github.issues.list", "", "a", 3]),
    "parent_id": IDS, "status": st.sampled_from([None, "running", "completed", "nope"]),
    "args": JSON_VALUES, "result": JSON_VALUES, "error": TEXTS,
    "started_at": TIMES, "completed_at": TIMES})
EVENTS = _object({
    "ts": TIMES, "level": st.sampled_from(["info", "warn", "error", "loud"]),
    "type": st.sampled_from(["log", "stdout", "execution.status", "other"]),
    "message": TEXTS, "data": JSON_VALUES})
INTERACTIONS = _object({
    "id": IDS, "kind": st.sampled_from(["approval", "elicitation", "vote"]),
    "message": TEXTS, "request": JSON_VALUES, "response": JSON_VALUES,
    "status": st.sampled_from(["pending", "resolved", "open"]),
    "action": st.sampled_from([None, "accept", "maybe"]),
    "created_at": TIMES, "resolved_at": TIMES})
EXECUTIONS = _object({
    "id": IDS, "name": TEXTS, "status": st.sampled_from(["running", "completed", "done"]),
    "trigger_kind": st.sampled_from([None, "cli", "", "x" * 129]),
    "trigger_meta": JSON_VALUES, "code": TEXTS, "result": JSON_VALUES, "error": TEXTS,
    "exit_code": st.sampled_from([None, 0, 1, 2**31, "3", 1.0, 1.5]),
    "progress_pct": st.sampled_from([None, 0, 50.5, 101, "x"]),
    "labels": st.one_of(st.none(), st.dictionaries(st.sampled_from(["env", "", "team"]),
                                                   st.text(max_size=3), max_size=2)),
    "created_at": TIMES, "started_at": TIMES, "completed_at": TIMES, "rerun_of": IDS,
    "tool_calls": st.lists(TOOL_CALLS, max_size=3),
    "interactions": st.lists(INTERACTIONS, max_size=2),
    "events": st.lists(EVENTS, max_size=3)})
BODIES = st.one_of(
    st.fixed_dictionaries({"executions": st.lists(EXECUTIONS, max_size=3)}),
    st.sampled_from([{}, {"executions": None}, {"executions": [1]}, [], "x"]))


def _errors(exc: ValidationError) -> list[tuple[Any, ...]]:
    # The one difference, in wording only: where an object belongs and something
    # else came, a model says "a valid dictionary or instance of IngestExecution"
    # and a TypedDict "a valid dictionary".
    return [("dict_type", e["loc"], "Input should be a valid dictionary")
            if e["type"] == "model_type" else (e["type"], e["loc"], e["msg"])
            for e in exc.errors()]


def _with_defaults(batch: dict[str, Any]) -> dict[str, Any]:
    """``parse_ingest``'s output as the models would hold it: defaults filled in."""
    out = []
    for given_run in batch["executions"]:
        run = {**INGEST_DEFAULTS["execution"], **given_run}
        for key, kind in (("tool_calls", "tool_call"), ("interactions", "interaction"),
                          ("events", "event")):
            run[key] = [{**INGEST_DEFAULTS[kind], **part} for part in run[key]]
        out.append(run)
    return {"executions": out}


@settings(max_examples=400, deadline=None, derandomize=True)
@given(BODIES)
def test_parse_ingest_answers_as_the_models_do(body: Any) -> None:
    try:
        expected = IngestBatch.model_validate(body).model_dump()
    except ValidationError as exc:
        try:
            parse_ingest(body)
        except ValidationError as got:
            assert _errors(got) == _errors(exc)
        else:
            raise AssertionError(f"parse_ingest accepted what the models refuse: {body!r}")
        return
    assert _with_defaults(parse_ingest(body)) == expected


def test_stored_json_is_json_dumps_cut_as_every_write_path_cuts() -> None:
    near = MAX_VALUE_BYTES // 2
    values: list[Any] = [
        {"q": "x", "page": 2}, [1, 2.5, "é", None, True], "\u2603" * 100, 12, False,
        "é" * near, "é" * (near + 1), "a" * (MAX_VALUE_BYTES - 2), "a" * (MAX_VALUE_BYTES - 1),
        {"k": "\x01" * 50_000}, {"nested": [{"deep": "\U0001f600" * 70_000}]},
    ]
    for value in values:
        assert stored_json(value) == json.dumps(cut_value(value))
    assert stored_json(None) is None


def test_ingested_rows_are_checkpointed_by_the_background_thread(tmp_path: Path) -> None:
    # The database file itself, read without the WAL (immutable=1), sees a
    # write only once a checkpoint copied it there: far below the writers'
    # own autocheckpoint size, that can only be the checkpoint thread.
    url = f"sqlite:///{tmp_path}/c.db"
    upgrade(url)
    db = open_database(url)
    try:
        Store(db).ingest(parse_ingest({"executions": [{"id": "ck1", "name": "n"}]}))
        deadline = time.monotonic() + 10
        found: list[Any] = []
        while time.monotonic() < deadline and not found:
            time.sleep(0.1)
            with sqlite3.connect(f"file:{tmp_path}/c.db?immutable=1", uri=True) as raw:
                found = raw.execute("SELECT id FROM execution").fetchall()
        assert found == [("ck1",)]
    finally:
        db.dispose()
