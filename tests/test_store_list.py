"""The executions list against ground truth: filters, keyset cursors and ``meta``.

A few thousand generated runs (``tests/groundtruth.py``) are ingested once per
database for the whole module; every answer the store gives is compared with
the Python reference computed from the generator's own records, never from
what the store returns.
"""

from __future__ import annotations

import base64
import json
import math
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from groundtruth import (
    BASE_MS,
    BIG_TIE_MS,
    BIG_TIE_SIZE,
    SORTS,
    SPAN_MS,
    STATUSES,
    STEPS_MS,
    TRIGGERS,
    Dataset,
    Query,
    Run,
    facets,
    generate,
    in_order,
    iso,
    percentiles,
    timeline,
)
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.db.engine import open_database
from app.db.migrate import upgrade
from app.store import Store
from app.store.cursor import Cursor
from app.store.errors import BadParameter
from app.store.inputs import parse_ingest
from app.store.params import parse_list_params
from app.times import now_ms

PG_ADMIN_URL = os.environ.get("RUNYARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _psycopg(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="module")
def truth() -> Dataset:
    return generate()       # cached: the strategies below read the same data set


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           truth: Dataset) -> Iterator[Store]:
    """A database of each kind holding the generated runs, built once per module.

    Its own database, not the shared per-test one: other tests empty that one.
    """
    admin = None
    name = f"runyard_gt_{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("groundtruth") / "runyard.db"
        url = f"sqlite:///{path}"
    else:
        admin = create_engine(_psycopg(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                # Ties on id (and the tool facet's ties on path) follow the database's
                # collation, which the contract leaves open; the reference sorts by
                # code point, so this database compares text byte by byte.
                conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0 '
                                  "LC_COLLATE 'C'"))
        except Exception as exc:
            admin.dispose()
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL is required in CI: {exc}")
            pytest.skip(f"PostgreSQL not reachable: {str(exc).splitlines()[0]}")
        url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        db = open_database(url)
        try:
            store = Store(db)
            for scope, batch in truth.batches:
                store.ingest(parse_ingest(batch), scope_id=scope)
            yield store
        finally:
            db.dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


def listing(store: Store, query: Query, *extra: tuple[str, str]) -> dict[str, Any]:
    return store.list_executions(
        parse_list_params([*query.params(), *extra], scope_id=query.scope_id))


def walk(store: Store, query: Query, limit: int) -> tuple[list[str], dict[str, Any]]:
    """Every page of ``query``; the ids in page order and the first page's meta."""
    ids: list[str] = []
    cursor: str | None = None
    first_meta: dict[str, Any] = {}
    while True:
        extra = [("limit", str(limit))] + ([("cursor", cursor)] if cursor else [])
        body = listing(store, query, *extra)
        rows = body["executions"]
        if cursor is None:
            first_meta = body["meta"]
        else:
            assert "meta" not in body      # meta is off by default on later pages
            assert rows, "a cursor was handed out for an empty page"
        ids += [r["id"] for r in rows]
        assert len(ids) <= 5000, "the walk does not end"
        cursor = body["next_cursor"]
        if cursor is None:
            assert len(rows) <= limit
            return ids, first_meta
        assert len(rows) == limit


def expected_ids(truth: Dataset, query: Query) -> list[str]:
    return [r.id for r in in_order(truth.runs, query)]


# -- the data set itself -------------------------------------------------------

def test_ingest_derives_the_contract_fields(loaded: Store, truth: Dataset) -> None:
    for scope in ("main", "other"):
        ids, _ = walk(loaded, Query(scope_id=scope), 200)
        assert set(ids) == {r.id for r in truth.runs if r.scope_id == scope}
    stored: dict[str, dict[str, Any]] = {}
    cursor = ""
    while cursor is not None:
        items = [("limit", "200")] + ([("cursor", cursor)] if cursor else [])
        body = loaded.list_executions(parse_list_params(items))
        stored.update({r["id"]: r for r in body["executions"]})
        cursor = body["next_cursor"]
    assert stored.keys() == truth.by_id().keys()
    for run in truth.runs:
        row = stored[run.id]
        assert (row["scope_id"], row["status"], row["trigger_kind"], row["labels"]) == (
            run.scope_id, run.status, run.trigger_kind, run.labels)
        assert row["created_at"] == iso(run.created_at)
        assert (row["duration_ms"], row["tool_call_count"], row["had_elicitation"]) == (
            run.duration_ms, len(run.tool_paths), run.had_elicitation)
        assert (row["error_count"], row["warn_count"]) == (run.error_count, run.warn_count)


def test_the_data_set_has_what_the_tests_rely_on(truth: Dataset) -> None:
    runs = truth.runs
    per_time: dict[int, int] = {}
    for r in runs:
        per_time[r.created_at] = per_time.get(r.created_at, 0) + 1
    assert per_time[BIG_TIE_MS] >= BIG_TIE_SIZE
    assert sum(n for n in per_time.values() if n > 1) > len(runs) // 3
    assert sum(r.duration_ms is None for r in runs) > 300
    assert sum(r.trigger_kind is None for r in runs) > 300
    durations = [r.duration_ms for r in runs if r.duration_ms is not None]
    assert len(durations) - len(set(durations)) > 300
    assert {r.status for r in runs} == set(STATUSES)
    assert len({p for r in runs for p in r.tool_paths}) > 20


# -- filters -------------------------------------------------------------------

EDGE = (BASE_MS // 3_600_000 + 2) * 3_600_000
FILTERS: dict[str, Query] = {
    "all": Query(),
    "status": Query(status=("failed",)),
    "status-two": Query(status=("failed", "timed_out")),
    "not_status": Query(not_status=("completed",)),
    "not_status-two": Query(not_status=("running", "pending")),
    "status-and-not": Query(status=("failed", "completed"), not_status=("completed",)),
    "trigger": Query(trigger=("cli",)),
    "trigger-unknown": Query(trigger=("unknown",)),
    "trigger-named-and-unknown": Query(trigger=("cli", "unknown")),
    "not_trigger": Query(not_trigger=("cli",)),
    "not_trigger-unknown": Query(not_trigger=("unknown",)),
    "not_trigger-named-and-unknown": Query(not_trigger=("api", "unknown")),
    "tool-exact": Query(tool=("github.issues.list",)),
    "tool-namespace": Query(tool=("github.*",)),
    "tool-suffix": Query(tool=("*.list",)),
    "tool-case-sensitive": Query(tool=("github.issues.*",)),
    "tool-capital": Query(tool=("github.Issues.*",)),
    "tool-question": Query(tool=("fs.read?all",)),
    "tool-underscore-literal": Query(tool=("fs.read_all",)),
    "tool-percent-literal": Query(tool=("http.get%*",)),
    "tool-bracket-literal": Query(tool=("fs.glob[*",)),
    "tool-three-chars": Query(tool=("http.???",)),
    "tool-any": Query(tool=("*",)),
    "tool-two": Query(tool=("slack.chat.post", "fs.*")),
    "not_tool": Query(not_tool=("github.*",)),
    "not_tool-any": Query(not_tool=("*",)),
    "tool-and-not": Query(tool=("slack.*",), not_tool=("slack.users.*",)),
    "label": Query(label=(("env", "prod"),)),
    "label-two": Query(label=(("env", "prod"), ("team", "core"))),
    "label-dotted-key-equals-value": Query(label=(("k.dot", "v=1"),)),
    "label-quote-key": Query(label=(('say"hi', "yes"),)),
    "label-backslash-key": Query(label=(("back\\slash", "ok"),)),
    "label-non-ascii-key": Query(label=(("région", "eu"),)),
    "from": Query(from_ms=BIG_TIE_MS),
    "to": Query(to_ms=BIG_TIE_MS),
    "from-to": Query(from_ms=EDGE - 1, to_ms=EDGE + 300_000),
    "from-to-tie": Query(from_ms=BIG_TIE_MS, to_ms=BIG_TIE_MS + 1),
    "q": Query(q="rate"),
    "q-case": Query(q="RATE LIMIT"),
    "q-underscore": Query(q="rate_limit"),
    "q-percent": Query(q="100%"),
    "q-percent-middle": Query(q="a%b"),
    "q-lone-underscore": Query(q="_"),
    "q-quote": Query(q="KeyError: 'user"),
    "q-in-code": Query(q="ENV=PROD"),
    "elicitation": Query(elicitation=True),
    "no-elicitation": Query(elicitation=False),
    "min_duration": Query(min_duration_ms=1_000),
    "max_duration": Query(max_duration_ms=1_000),
    "duration-exact": Query(min_duration_ms=100, max_duration_ms=100),
    "min_duration-zero": Query(min_duration_ms=0),
    "max_duration-zero": Query(max_duration_ms=0),
    "scope-main": Query(scope_id="main"),
    "scope-other": Query(scope_id="other", status=("completed",)),
    "combo-1": Query(status=("failed", "timed_out"), tool=("github.*",), q="limit"),
    "combo-2": Query(not_status=("completed",), trigger=("unknown", "webhook"),
                     label=(("env", "prod"),), from_ms=BASE_MS + 3_600_000,
                     to_ms=BASE_MS + 6 * 3_600_000),
    "combo-3": Query(elicitation=True, min_duration_ms=50, not_tool=("fs.*",),
                     not_trigger=("cli",)),
    "combo-4": Query(status=("completed",), not_trigger=("unknown",), tool=("*.list",),
                     max_duration_ms=5_000, scope_id="main"),
}
EMPTY_OK = {"status-and-not"}
ALL_OK = {"all", "min_duration-zero"}


@pytest.mark.parametrize("name", list(FILTERS))
def test_filter_page_and_meta_match_reference(loaded: Store, truth: Dataset, name: str) -> None:
    query = FILTERS[name]
    expected = expected_ids(truth, query)
    # A case that selects nothing (or everything) would prove little.
    assert expected or name in EMPTY_OK
    assert len(expected) < len(truth.runs) or name in ALL_OK
    ids, meta = walk(loaded, query, 200)
    assert ids == expected
    assert meta["total"] == len(expected)
    assert meta["facets"] == facets(truth.runs, query)
    assert meta["duration"] == percentiles(truth.runs, query)


def _ids_where(truth: Dataset, predicate: Any) -> set[str]:
    return {r.id for r in truth.runs if predicate(r)}


def _text(r: Run) -> str:
    return " ".join(v for v in (r.name, r.code, r.error) if v)


def test_q_wildcards_are_literal_and_case_is_ignored(loaded: Store, truth: Dataset) -> None:
    got = set(walk(loaded, Query(q="rate_limit"), 200)[0])
    assert got == _ids_where(truth, lambda r: "rate_limit" in _text(r).lower())
    assert got.isdisjoint(_ids_where(truth, lambda r: "ratexlimit" in _text(r)))
    got = set(walk(loaded, Query(q="100%"), 200)[0])
    assert got and got.isdisjoint(_ids_where(truth, lambda r: "1000 rows" in _text(r)
                                             and "100%" not in _text(r)))
    got = set(walk(loaded, Query(q="A%B"), 200)[0])
    assert got == _ids_where(truth, lambda r: "a%b" in _text(r))
    assert got.isdisjoint(_ids_where(truth, lambda r: "axb" in _text(r)))
    assert set(walk(loaded, Query(q="rAtE LiMiT"), 200)[0]) == _ids_where(
        truth, lambda r: "rate limit" in _text(r).lower())


def test_tool_globs_are_case_sensitive_and_literal(loaded: Store, truth: Dataset) -> None:
    def calls(*paths: str) -> set[str]:
        return _ids_where(truth, lambda r: any(p in paths for p in r.tool_paths))

    assert set(walk(loaded, Query(tool=("github.issues.*",)), 200)[0]) == calls(
        "github.issues.list", "github.issues.create")
    assert walk(loaded, Query(tool=("GITHUB.*",)), 200)[0] == []
    assert set(walk(loaded, Query(tool=("fs.read_all",)), 200)[0]) == calls("fs.read_all")
    assert set(walk(loaded, Query(tool=("fs.read?all",)), 200)[0]) == calls(
        "fs.read_all", "fs.readXall")
    assert set(walk(loaded, Query(tool=("http.get%*",)), 200)[0]) == calls("http.get%json")
    assert set(walk(loaded, Query(tool=("fs.glob[1]",)), 200)[0]) == calls("fs.glob[1]")
    assert set(walk(loaded, Query(tool=("fs.glob[*",)), 200)[0]) == calls("fs.glob[1]")
    assert set(walk(loaded, Query(tool=("*.list",)), 200)[0]) == calls(
        "github.issues.list", "github.Issues.list", "slack.users.list")


def test_from_is_inclusive_and_to_exclusive(loaded: Store, truth: Dataset) -> None:
    tie = _ids_where(truth, lambda r: r.created_at == BIG_TIE_MS)
    assert len(tie) >= BIG_TIE_SIZE
    assert set(walk(loaded, Query(from_ms=BIG_TIE_MS, to_ms=BIG_TIE_MS + 1), 7)[0]) == tie
    assert tie <= set(walk(loaded, Query(from_ms=BIG_TIE_MS), 200)[0])
    assert tie.isdisjoint(walk(loaded, Query(from_ms=BIG_TIE_MS + 1), 200)[0])
    assert tie.isdisjoint(walk(loaded, Query(to_ms=BIG_TIE_MS), 200)[0])
    # The same bounds as RFC 3339 strings.
    body = loaded.list_executions(parse_list_params(
        [("from", iso(BIG_TIE_MS) or ""), ("to", iso(BIG_TIE_MS + 1) or ""), ("limit", "200")]))
    assert {r["id"] for r in body["executions"]} == tie
    assert body["meta"]["total"] == len(tie)


def test_label_filters_all_hold(loaded: Store, truth: Dataset) -> None:
    both = Query(label=(("env", "prod"), ("team", "core")))
    assert set(walk(loaded, both, 200)[0]) == _ids_where(
        truth, lambda r: (r.labels or {}).get("env") == "prod"
        and (r.labels or {}).get("team") == "core")
    assert walk(loaded, Query(label=(("env", "nope"),)), 200)[0] == []
    assert walk(loaded, Query(label=(("env", "prod"), ("env", "dev"))), 200)[0] == []
    # As many labels as the cap allows still make a query the database takes.
    many = Query(label=(("env", "prod"), *((f"k{i}", "v") for i in range(99))))
    assert listing(loaded, many)["meta"]["total"] == 0
    with pytest.raises(BadParameter) as err:
        parse_list_params([("label", f"k{i}=v") for i in range(101)])
    assert err.value.detail == {"parameter": "label"}


# -- the cursor walk -----------------------------------------------------------

@pytest.mark.parametrize("sort", SORTS)
@pytest.mark.parametrize("limit", [97, 200])
def test_walk_every_sort_matches_reference(loaded: Store, truth: Dataset, sort: str,
                                           limit: int) -> None:
    query = Query(sort=sort)
    ids, meta = walk(loaded, query, limit)
    assert ids == expected_ids(truth, query)
    assert meta["total"] == len(truth.runs)


@pytest.mark.parametrize("sort", SORTS)
def test_walk_through_ties_one_row_at_a_time(loaded: Store, truth: Dataset, sort: str) -> None:
    # The big tie group shares created_at; the duration sorts meet ties in
    # duration_ms and the rows without one. Small pages cross every tie.
    query = Query(from_ms=BIG_TIE_MS, to_ms=BIG_TIE_MS + 1, sort=sort)
    expected = expected_ids(truth, query)
    assert walk(loaded, query, 1)[0] == expected
    assert walk(loaded, query, 3)[0] == expected
    durations = Query(min_duration_ms=100, max_duration_ms=250, sort=sort)
    assert walk(loaded, durations, 13)[0] == expected_ids(truth, durations)


def test_rows_without_duration_come_last_in_both_directions(loaded: Store,
                                                            truth: Dataset) -> None:
    by_id = truth.by_id()
    for sort in ("duration_ms:desc", "duration_ms:asc"):
        ids = walk(loaded, Query(sort=sort, status=("running", "completed")), 150)[0]
        flags = [by_id[i].duration_ms is None for i in ids]
        first_none = flags.index(True)
        assert not any(flags[:first_none]) and all(flags[first_none:])
        assert first_none > 0


def test_cursor_is_tied_to_its_sort_and_opaque(loaded: Store, truth: Dataset) -> None:
    body = listing(loaded, Query(sort="duration_ms:asc"), ("limit", "5"))
    cursor = body["next_cursor"]
    assert cursor
    with pytest.raises(BadParameter) as err:
        loaded.list_executions(
            parse_list_params([("cursor", cursor), ("sort", "created_at:desc")]))
    assert err.value.detail == {"parameter": "cursor"}
    assert "duration_ms:asc" in err.value.message
    with pytest.raises(BadParameter):
        loaded.list_executions(parse_list_params([("cursor", "not-a-cursor")]))
    # An unsigned cursor (the format before cursors were signed) is refused.
    raw = json.dumps(["created_at:desc", BIG_TIE_MS, "~"]).encode()
    with pytest.raises(BadParameter):
        listing(loaded, Query(), ("cursor", base64.urlsafe_b64encode(raw).decode()))
    # Even signed, one no stored id could match (a NUL, a lone surrogate) is
    # refused before it reaches the database.
    for forged in ("a\x00", "\ud800", "x" * 129):
        signed = Cursor("created_at:desc", 1, forged).encode(loaded.cursor_key, None)
        with pytest.raises(BadParameter):
            listing(loaded, Query(), ("cursor", signed))
    # A cursor signed with the store's key only moves the position: "~" sorts
    # after every id, so the page starts with the whole tie at BIG_TIE_MS.
    signed = Cursor("created_at:desc", BIG_TIE_MS, "~").encode(loaded.cursor_key, None)
    body = listing(loaded, Query(), ("cursor", signed))
    assert [r["id"] for r in body["executions"]] == [
        r.id for r in in_order(truth.runs, Query()) if r.created_at <= BIG_TIE_MS][:50]
    # meta can be asked for on a later page too.
    body = listing(loaded, Query(sort="duration_ms:asc"), ("cursor", cursor), ("meta", "true"))
    assert body["meta"]["total"] == len(truth.runs)
    assert "meta" not in listing(loaded, Query(), ("meta", "false"))


def _queries() -> st.SearchStrategy[Query]:
    statuses = st.lists(st.sampled_from(STATUSES), max_size=3, unique=True).map(tuple)
    triggers = st.lists(st.sampled_from((*TRIGGERS, "unknown")), max_size=2,
                        unique=True).map(tuple)
    globs = st.lists(st.sampled_from((
        "github.*", "*.list", "fs.read?all", "http.get%*", "fs.glob[*", "slack.chat.post",
        "svc1*", "*", "GitHub.*", "http.???", "*s*")), max_size=2, unique=True).map(tuple)
    labels = st.lists(st.sampled_from((("env", "prod"), ("env", "dev"), ("team", "core"),
                                       ("k.dot", "v=1"), ('say"hi', "yes"),
                                       ("région", "eu"))),
                      max_size=2, unique=True).map(tuple)
    # Bounds on the times rows have (ties included) as well as anywhere around them.
    times = sorted({r.created_at for r in generate().runs})
    moment = st.none() | st.sampled_from(times) | st.integers(
        BASE_MS - 60_000, BASE_MS + SPAN_MS + 60_000)
    duration = st.none() | st.sampled_from((0, 1, 100, 250, 1_000, 5_000, 60_000))
    words = st.none() | st.sampled_from(
        ("rate", "RATE_LIMIT", "100%", "_", "%", "limit", "job", "x", "Deploy"))
    return st.builds(
        Query, status=statuses, not_status=statuses, trigger=triggers, not_trigger=triggers,
        tool=globs, not_tool=globs, label=labels, from_ms=moment, to_ms=moment, q=words,
        elicitation=st.none() | st.booleans(), min_duration_ms=duration,
        max_duration_ms=duration, sort=st.sampled_from(SORTS),
        scope_id=st.sampled_from((None, None, "main", "other")),
    )


# No shrinking: every example walks up to 25 pages, so shrinking a failure takes
# minutes; the failing Query is printed whole and reads well as it is.
# database=None: parallel test sessions would race on one example database.
@settings(max_examples=60, deadline=None, database=None,
          phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow])
@given(query=_queries(), limit=st.integers(1, 200))
def test_walk_property(loaded: Store, truth: Dataset, query: Query, limit: int) -> None:
    """Any filter, sort and limit: the pages hold exactly the filtered set, in order,
    and the first page's meta agrees with the reference."""
    expected = expected_ids(truth, query)
    # At most ~25 pages per example keeps the run short; small sets get small pages.
    limit = max(limit, math.ceil(len(expected) / 25))
    # The first page alone first: a wrong answer then fails cheaply.
    before = now_ms()
    first = listing(loaded, query, ("limit", str(limit)))
    after = now_ms()
    assert [r["id"] for r in first["executions"]] == expected[:limit]
    meta = first["meta"]
    assert meta["total"] == len(expected)
    assert meta["facets"] == facets(truth.runs, query)
    assert meta["duration"] == percentiles(truth.runs, query)
    _assert_timeline(truth, query, meta, before, after)
    assert walk(loaded, query, limit)[0] == expected


# -- meta ----------------------------------------------------------------------

def test_facets_are_disjunctive(loaded: Store, truth: Dataset) -> None:
    query = Query(status=("failed",), trigger=("cli",), tool=("github.*",), elicitation=False)
    meta = listing(loaded, query)["meta"]
    count = {name: {f["value"]: f["count"] for f in meta["facets"][name]}
             for name in meta["facets"]}
    rows = truth.runs
    # Picking status=failed still shows how many completed rows the other filters allow.
    assert count["status"]["completed"] == sum(
        query.without("status").matches(r) and r.status == "completed" for r in rows) > 0
    assert count["status"]["failed"] == meta["total"]
    assert count["trigger"]["api"] == sum(
        query.without("trigger").matches(r) and r.trigger_kind == "api" for r in rows) > 0
    assert count["elicitation"]["true"] == sum(
        query.without("elicitation").matches(r) and r.had_elicitation for r in rows) > 0
    assert count["tool"]["slack.chat.post"] == sum(
        query.without("tool").matches(r) and "slack.chat.post" in r.tool_paths
        for r in rows) > 0
    # Excluding a value drops it from nothing but the other facets.
    excluded = listing(loaded, Query(not_status=("completed",)))["meta"]
    assert {f["value"]: f["count"] for f in excluded["facets"]["status"]}["completed"] == sum(
        r.status == "completed" for r in rows)


def test_facet_shapes(loaded: Store) -> None:
    facet = listing(loaded, Query(status=("pending",)))["meta"]["facets"]
    assert {f["value"] for f in facet["status"]} == set(STATUSES)
    assert {f["value"] for f in facet["elicitation"]} == {"true", "false"}
    assert "unknown" in {f["value"] for f in facet["trigger"]}
    assert len(facet["tool"]) == 20
    for values in facet.values():
        counts = [f["count"] for f in values]
        assert counts == sorted(counts, reverse=True)


def _assert_timeline(truth: Dataset, query: Query, meta: dict[str, Any], before: int,
                     after: int) -> None:
    """``meta``'s timeline is the reference's, for a "now" between ``before`` and ``after``."""
    got = meta["timeline"]
    now = before
    if query.from_ms is not None and query.to_ms is None:
        # "to" is the later of now and the newest row; now moved during the call.
        assert iso(before) <= got["to"] <= iso(after)
        now = next(t for t in range(before, after + 1) if iso(t) == got["to"])
    assert got == timeline(truth.runs, query, now)
    assert sum(sum(b["counts"].values()) for b in got["buckets"]) == meta["total"]


def _check_timeline(store: Store, truth: Dataset, query: Query) -> dict[str, Any]:
    before = now_ms()
    meta = listing(store, query, ("limit", "1"))["meta"]
    _assert_timeline(truth, query, meta, before, now_ms())
    return meta["timeline"]


TIMELINE_CASES: dict[str, Query] = {
    "from-data": Query(),
    "from-data-filtered": Query(status=("failed",), tool=("github.*",)),
    "requested": Query(from_ms=BASE_MS, to_ms=BASE_MS + SPAN_MS),
    "requested-narrow": Query(from_ms=EDGE - 60_000, to_ms=EDGE + 60_000),
    "requested-one-tie": Query(from_ms=BIG_TIE_MS, to_ms=BIG_TIE_MS + 1),
    "from-only": Query(from_ms=BASE_MS + SPAN_MS - 3_600_000),
    "to-only": Query(to_ms=BASE_MS + 3_600_000),
    "to-only-filtered": Query(to_ms=BASE_MS + 3_600_000, status=("queued",)),
    "single-row": Query(q="KeyError", status=("timed_out",), from_ms=None,
                        min_duration_ms=60_000, max_duration_ms=60_000),
    "no-rows": Query(label=(("env", "nope"),)),
    "no-rows-requested": Query(label=(("env", "nope"),), from_ms=EDGE, to_ms=EDGE + 7_200_000),
    "empty-range": Query(from_ms=EDGE, to_ms=EDGE),
}


@pytest.mark.parametrize("name", list(TIMELINE_CASES))
def test_timeline_matches_reference(loaded: Store, truth: Dataset, name: str) -> None:
    got = _check_timeline(loaded, truth, TIMELINE_CASES[name])
    if got["buckets"]:
        width = got["bucket_ms"]
        starts = [b["start"] for b in got["buckets"]]
        # At most 120 buckets plus one for alignment, unless the widest step is not enough.
        assert len(starts) <= 121 or width == STEPS_MS[-1]
        first = _ms(starts[0])
        assert first % width == 0
        assert starts == [iso(first + k * width) for k in range(len(starts))]


def _ms(value: str) -> int:
    return round(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def test_timeline_span_of_the_rows(loaded: Store, truth: Dataset) -> None:
    got = _check_timeline(loaded, truth, Query())
    first = min(r.created_at for r in truth.runs)
    last = max(r.created_at for r in truth.runs)
    assert (got["from"], got["to"]) == (iso(first), iso(last + 1))
    assert got["bucket_ms"] == 300_000        # 8 hours in at most 120 buckets


@pytest.mark.parametrize("step", STEPS_MS[:-1])
def test_timeline_width_is_the_smallest_step_within_120_buckets(loaded: Store,
                                                                step: int) -> None:
    aligned = 1_893_456_000_000 // (7 * 86_400_000) * (7 * 86_400_000)  # no data near here
    got = listing(loaded, Query(from_ms=aligned, to_ms=aligned + 120 * step))["meta"]
    assert got["timeline"]["bucket_ms"] == step
    assert len(got["timeline"]["buckets"]) == 120
    assert all(b["counts"] == {} for b in got["timeline"]["buckets"])
    # One millisecond more needs the next step; an unaligned start adds an edge bucket.
    nxt = STEPS_MS[STEPS_MS.index(step) + 1]
    got = listing(loaded, Query(from_ms=aligned + 1, to_ms=aligned + 1 + 120 * step + 1))
    line = got["meta"]["timeline"]
    assert line["bucket_ms"] == nxt
    assert line["buckets"][0]["start"] == iso(aligned)
    assert len(line["buckets"]) == -(-(120 * step + 2) // nxt)


def test_timeline_beyond_the_largest_step(loaded: Store) -> None:
    start = BASE_MS - 200 * 7 * 86_400_000
    got = listing(loaded, Query(from_ms=start, to_ms=BASE_MS + SPAN_MS))["meta"]
    line = got["timeline"]
    assert line["bucket_ms"] == 7 * 86_400_000
    assert sum(sum(b["counts"].values()) for b in line["buckets"]) == got["total"]


# -- small explicit data sets ------------------------------------------------

def _ingest(store: Store, runs: list[dict[str, Any]]) -> None:
    store.ingest(parse_ingest({"executions": runs}))


def test_duration_percentiles_nearest_rank(store: Store) -> None:
    empty = store.list_meta(parse_list_params([]))
    assert empty["duration"] == {"p50": None, "p90": None, "p99": None}
    assert empty["total"] == 0
    assert empty["timeline"] == {"bucket_ms": None, "from": None, "to": None, "buckets": []}
    runs = [{"id": f"d{k:02d}", "status": "completed", "created_at": BASE_MS + k,
             "started_at": BASE_MS + k, "completed_at": BASE_MS + k + k * 10}
            for k in range(1, 11)]
    runs.append({"id": "d99", "status": "running", "created_at": BASE_MS})
    _ingest(store, runs)
    meta = store.list_meta(parse_list_params([]))
    assert meta["duration"] == {"p50": 50, "p90": 90, "p99": 100}
    one = store.list_meta(parse_list_params([("min_duration_ms", "70"),
                                             ("max_duration_ms", "70")]))
    assert one["duration"] == {"p50": 70, "p90": 70, "p99": 70}
    none = store.list_meta(parse_list_params([("status", "running")]))
    assert none["duration"] == {"p50": None, "p90": None, "p99": None}
    assert none["total"] == 1


def test_percentiles_on_a_hundred_and_one_values(store: Store) -> None:
    runs = [{"id": f"p{k:03d}", "status": "completed", "created_at": BASE_MS,
             "started_at": BASE_MS, "completed_at": BASE_MS + k} for k in range(101)]
    _ingest(store, runs)
    # n = 101: ranks ceil(50.5)=51, ceil(90.9)=91, ceil(99.99)=100 of 0..100.
    assert store.list_meta(parse_list_params([]))["duration"] == {
        "p50": 50, "p90": 90, "p99": 99}


def test_timeline_to_is_the_newest_row_when_later_than_now(store: Store) -> None:
    future = 4_102_444_800_000          # 2100-01-01
    _ingest(store, [{"id": "f1", "status": "queued", "created_at": future},
                    {"id": "f0", "status": "failed", "created_at": future - 90_000,
                     "completed_at": future - 90_000}])
    line = store.list_meta(parse_list_params([("from", str(future - 120_000))]))["timeline"]
    assert (line["from"], line["to"]) == (iso(future - 120_000), iso(future + 1))
    assert line["bucket_ms"] == 5_000
    assert [b for b in line["buckets"] if b["counts"]] == [
        {"start": iso(future - 90_000), "counts": {"failed": 1}},
        {"start": iso(future), "counts": {"queued": 1}}]
    assert line["buckets"][-1]["start"] == iso(future)


def test_no_rows_with_from_only_buckets_up_to_now(store: Store) -> None:
    before = now_ms()
    line = store.list_meta(parse_list_params([("from", "-9m")]))["timeline"]
    assert line["bucket_ms"] == 5_000
    assert 108 <= len(line["buckets"]) <= 109
    assert all(b["counts"] == {} for b in line["buckets"])
    assert iso(before) <= line["to"]


def test_ids_with_mixed_case_and_punctuation_walk_without_gaps(store: Store) -> None:
    ids = ["a", "A", "a-1", "a_1", "a.1", "B", "b", "Z9", "0", "a:b", "a@b", "aa"]
    _ingest(store, [{"id": i, "status": "completed", "created_at": BASE_MS,
                     "started_at": BASE_MS, "completed_at": BASE_MS + (k % 3)}
                    for k, i in enumerate(ids)])
    for sort in SORTS:
        seen: list[str] = []
        cursor = None
        while True:
            items = [("sort", sort), ("limit", "1")] + ([("cursor", cursor)] if cursor else [])
            body = store.list_executions(parse_list_params(items))
            seen += [r["id"] for r in body["executions"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids)
        assert len(seen) == len(ids)
