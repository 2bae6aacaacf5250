"""Scope isolation: a token with a ``scope_id`` sees and changes only its scope.

Two scopes of data are written with the store directly; the app is then
driven with real Bearer tokens (scope ``alpha``, scope ``beta``, unscoped).
Every name of the ``beta`` data carries the marker ``betasecret`` so a page or
an answer that leaks any of it is caught by one substring test.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from app.db.engine import open_database
from app.factory import create_app
from app.settings import Settings
from app.store import Store
from app.store.inputs import ExecutionCreate, ExecutionPatch, JobSubmit, parse_ingest
from app.store.jobs import Limits
from app.times import now_ms
from tests.api_support import error_of
from tests.otlp_support import nested_trace, otlp_json
from tests.servers import running_server, sse_messages

MINUTE = 60_000
SECRET = "betasecret"


def _alpha(base: int) -> list[dict[str, Any]]:
    return [
        {"id": "a-1", "name": "alpha-run-1", "status": "completed", "trigger_kind": "alpha-cli",
         "created_at": base, "started_at": base, "completed_at": base + 1000,
         "code": "alpha code", "tool_calls": [{"id": "a-1-tc", "tool_path": "alphatools.list",
                                               "status": "completed"}],
         "events": [{"type": "log", "level": "error", "message": "alpha boom"}]},
        {"id": "a-2", "name": "alpha-run-2", "status": "failed", "trigger_kind": "alpha-cli",
         "created_at": base + MINUTE, "started_at": base + MINUTE,
         "completed_at": base + MINUTE + 3000,
         "interactions": [{"kind": "elicitation", "status": "resolved", "action": "accept",
                           "message": "alpha question"}]},
        {"id": "a-3", "name": "alpha-run-3", "status": "running", "trigger_kind": "alpha-web",
         "created_at": base + 2 * MINUTE},
    ]


def _beta(base: int) -> list[dict[str, Any]]:
    return [
        {"id": f"b-{i}", "name": f"{SECRET}-run-{i}", "status": "timed_out",
         "trigger_kind": f"{SECRET}-trigger", "created_at": base + i * 1000,
         "started_at": base + i * 1000, "completed_at": base + i * 1000 + 50_000,
         "code": f"{SECRET} code {i}", "labels": {"who": SECRET},
         "tool_calls": [{"id": f"b-{i}-tc", "tool_path": f"{SECRET}.tool", "args": SECRET}],
         "interactions": [{"id": f"b-{i}-ask", "kind": "elicitation", "status": "pending",
                           "message": f"{SECRET} question"}],
         "events": [{"type": "log", "level": "warn", "message": f"{SECRET} line"}]}
        for i in range(1, 6)
    ]


@dataclass
class World:
    client: TestClient
    headers: dict[str, dict[str, str]]   # "alpha", "beta", "root" -> Authorization
    beta_job: str
    alpha_job: str

    def get(self, who: str, url: str, **kw: Any) -> httpx.Response:
        return self.client.get(url, headers={**self.headers[who], **kw.pop("headers", {})},
                               **kw)

    def post(self, who: str, url: str, **kw: Any) -> httpx.Response:
        return self.client.post(url, headers=self.headers[who], **kw)

    def patch(self, who: str, url: str, **kw: Any) -> httpx.Response:
        return self.client.patch(url, headers=self.headers[who], **kw)


def seed(database_url: str) -> tuple[dict[str, dict[str, str]], str, str]:
    """Tokens and two scopes of data; ``(headers by who, beta job id, alpha job id)``."""
    db = open_database(database_url)
    try:
        store = Store(db)
        base = now_ms() - 30 * MINUTE
        store.ingest(parse_ingest({"executions": _alpha(base)}), scope_id="alpha")
        store.ingest(parse_ingest({"executions": _beta(base)}), scope_id="beta")
        jobs = {}
        for scope in ("alpha", "beta"):
            name = f"{SECRET}-job" if scope == "beta" else "alpha-job"
            answer, _ = store.submit_job(JobSubmit.model_validate({
                "command": {"argv": ["true"]}, "requires_approval": True, "name": name,
                "idempotency_key": f"{scope}-key"}), Limits(), scope)
            jobs[scope] = answer["execution_id"]
        headers = {}
        for who, scope in (("alpha", "alpha"), ("beta", "beta"), ("root", None)):
            _, token = store.create_token(f"t-{who}", ["read", "write", "exec"], scope)
            headers[who] = {"Authorization": f"Bearer {token}"}
        return headers, jobs["beta"], jobs["alpha"]
    finally:
        db.dispose()


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    headers, beta_job, alpha_job = seed(database_url)
    app = create_app(Settings(database_url=database_url, allow_exec=True, demo=False,
                              rate_limit_per_s=10_000, rate_limit_burst=10_000))
    # A loopback Host: the job routes refuse any other (DNS rebinding).
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield World(c, headers, beta_job, alpha_job)


def _counts(facet: list[dict[str, Any]]) -> dict[str, int]:
    return {v["value"]: v["count"] for v in facet if v["count"]}


# -- lists: rows, total, facets, timeline, percentiles -------------------------------------

def test_list_and_meta_count_only_the_readers_scope(world: World) -> None:
    body = world.get("alpha", "/api/executions").json()
    assert sorted(r["id"] for r in body["executions"]) == sorted(
        ["a-1", "a-2", "a-3", world.alpha_job])
    assert {r["scope_id"] for r in body["executions"]} == {"alpha"}
    meta = body["meta"]
    assert meta["total"] == 4
    assert _counts(meta["facets"]["status"]) == {
        "completed": 1, "failed": 1, "running": 1, "waiting_for_interaction": 1}
    assert _counts(meta["facets"]["trigger"]) == {"alpha-cli": 2, "alpha-web": 1, "http": 1}
    assert _counts(meta["facets"]["tool"]) == {"alphatools.list": 1}
    assert _counts(meta["facets"]["elicitation"]) == {"true": 2, "false": 2}
    buckets = meta["timeline"]["buckets"]
    assert sum(n for b in buckets for n in b["counts"].values()) == 4
    assert {s for b in buckets for s in b["counts"]} <= {
        "completed", "failed", "running", "waiting_for_interaction"}
    assert meta["duration"] == {"p50": 1000, "p90": 3000, "p99": 3000}
    assert SECRET not in json.dumps(body)

    beta = world.get("beta", "/api/executions").json()
    assert sorted(r["id"] for r in beta["executions"]) == sorted(
        [f"b-{i}" for i in range(1, 6)] + [world.beta_job])
    assert beta["meta"]["total"] == 6
    assert beta["meta"]["duration"]["p50"] == 50_000
    everyone = world.get("root", "/api/executions").json()
    assert everyone["meta"]["total"] == 10
    assert {r["scope_id"] for r in everyone["executions"]} == {"alpha", "beta"}


def test_filters_cannot_reach_out_of_the_scope(world: World) -> None:
    # Naming another scope's values finds nothing, and no parameter sets a scope.
    for query in (f"trigger={SECRET}-trigger", f"tool={SECRET}.tool", f"q={SECRET}",
                  f"label=who={SECRET}", "status=timed_out"):
        body = world.get("alpha", f"/api/executions?{query}").json()
        assert body["executions"] == [] and body["meta"]["total"] == 0, query
    error = error_of(world.get("alpha", "/api/executions?scope_id=beta"), 400, "bad_parameter")
    assert error["detail"] == {"parameter": "scope_id"}


# -- cursors -----------------------------------------------------------------------------

def test_cursor_pages_walk_the_scope_and_are_refused_elsewhere(world: World) -> None:
    ids: list[str] = []
    cursor: str | None = None
    cursors = []
    while True:
        params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
        body = world.get("alpha", "/api/executions", params=params).json()
        ids += [r["id"] for r in body["executions"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        cursors.append(cursor)
    assert sorted(ids) == sorted(["a-1", "a-2", "a-3", world.alpha_job])
    assert len(ids) == 4
    first = cursors[0]
    for who in ("beta", "root"):
        r = world.get(who, "/api/executions", params={"limit": "1", "cursor": first})
        error = error_of(r, 400, "bad_parameter")
        assert error["detail"] == {"parameter": "cursor"}
    r = world.get("alpha", "/api/executions",
                  params={"cursor": first, "sort": "duration_ms:desc"})
    assert "created_at:desc" in error_of(r, 400, "bad_parameter")["message"]
    # One character changed anywhere: refused, never another position.
    for i in range(len(first)):
        changed = first[:i] + ("A" if first[i] != "A" else "B") + first[i + 1:]
        r = world.get("alpha", "/api/executions", params={"cursor": changed})
        assert error_of(r, 400, "bad_parameter")["detail"] == {"parameter": "cursor"}, i


# -- reads by id ---------------------------------------------------------------------------

BY_ID = ("", "/tool-calls", "/interactions", "/events", "/stream")


def test_reads_of_another_scopes_run_are_the_404_of_a_missing_one(world: World) -> None:
    for suffix in BY_ID:
        hidden = world.get("alpha", f"/api/executions/b-1{suffix}")
        missing = world.get("alpha", f"/api/executions/zz-9{suffix}")
        error = error_of(hidden, 404, "execution_not_found")
        assert error == json.loads(missing.text.replace("zz-9", "b-1"))["error"], suffix
        assert SECRET not in hidden.text
        assert world.get("beta", f"/api/executions/a-1{suffix}").status_code == 404
    assert world.get("beta", "/api/executions/b-1/tool-calls").json()["tool_calls"][0][
        "args"] == SECRET
    # An unscoped token sees every scope.
    assert world.get("root", "/api/executions/b-1").json()["execution"]["scope_id"] == "beta"
    assert world.get("root", "/api/executions/a-1/events").status_code == 200


# -- writes --------------------------------------------------------------------------------

def test_writes_into_another_scopes_run_are_404_and_change_nothing(world: World) -> None:
    before = world.get("root", "/api/executions/b-1").json()
    events_before = world.get("root", "/api/executions/b-1/events").json()["events"]
    attempts = [
        world.patch("alpha", "/api/executions/b-1", json={"name": "taken"}),
        world.post("alpha", "/api/executions/b-1/tool-calls", json={"tool_path": "x.y"}),
        world.patch("alpha", "/api/executions/b-1/tool-calls/b-1-tc",
                    json={"status": "failed"}),
        world.post("alpha", "/api/executions/b-1/interactions",
                   json={"kind": "elicitation", "message": "hi"}),
        world.post("alpha", "/api/executions/b-1/interactions/b-1-ask/resolve",
                   json={"action": "accept"}),
        world.post("alpha", "/api/executions/b-1/events", json={"events": [{"message": "x"}]}),
    ]
    for r in attempts:
        error_of(r, 404, "execution_not_found")
        assert SECRET not in r.text
    assert world.get("root", "/api/executions/b-1").json() == before
    assert world.get("root", "/api/executions/b-1/events").json()["events"] == events_before
    # The owner still can.
    r = world.patch("beta", "/api/executions/b-1", json={"labels": {"k": "v"}})
    assert r.status_code == 200 and r.json()["execution"]["labels"]["k"] == "v"


def test_an_id_of_another_scope_on_create_is_409_and_reveals_nothing(world: World) -> None:
    r = world.post("alpha", "/api/executions", json={"id": "b-1", "name": f"{SECRET}-run-1",
                                                     "trigger_kind": f"{SECRET}-trigger"})
    error = error_of(r, 409, "already_exists")
    assert error["detail"] == {"execution_id": "b-1"}
    assert SECRET not in r.text
    r = world.post("alpha", "/api/ingest", json={"executions": [
        {"id": "a-new", "name": "fresh"}, {"id": "b-2", "name": "mine now"}]})
    error = error_of(r, 409, "already_exists")
    assert error["detail"] == {"execution_id": "b-2"}
    # The whole batch was refused, and the other scope's run is untouched.
    assert world.get("root", "/api/executions/a-new").status_code == 404
    assert world.get("root", "/api/executions/b-2").json()["execution"]["name"] == \
        f"{SECRET}-run-2"


def test_new_rows_land_in_the_writers_scope(world: World) -> None:
    r = world.post("alpha", "/api/executions", json={"name": "made by alpha"})
    assert r.status_code == 201 and r.json()["execution"]["scope_id"] == "alpha"
    r = world.post("root", "/api/executions", json={"id": "root-1"})
    assert r.json()["execution"]["scope_id"] == "default"
    r = world.post("alpha", "/api/ingest", json={"executions": [{"id": "a-ingested"}]})
    assert r.json()["executions"] == 1
    assert world.get("alpha", "/api/executions/a-ingested").json()["execution"][
        "scope_id"] == "alpha"
    assert world.get("beta", "/api/executions/a-ingested").status_code == 404
    # Re-sending the same batch into the same scope is still a no-op, not a 409.
    r = world.post("alpha", "/api/ingest", json={"executions": [{"id": "a-ingested"}]})
    assert r.status_code == 200 and r.json()["executions"] == 0


def test_otlp_lands_in_the_tokens_scope_and_cannot_touch_another(world: World) -> None:
    spans, trace_id = nested_trace(3)
    body = otlp_json(spans)
    r = world.post("alpha", "/v1/traces", json=body)
    assert r.status_code == 200 and "partialSuccess" not in r.json()
    run_id = f"otel-{trace_id}"
    run = world.get("alpha", f"/api/executions/{run_id}").json()["execution"]
    assert run["scope_id"] == "alpha" and run["tool_call_count"] == len(spans) - 1
    assert world.get("beta", f"/api/executions/{run_id}").status_code == 404
    # The same trace sent with another scope's token is refused span by span.
    r = world.post("beta", "/v1/traces", json=body)
    assert r.status_code == 200
    partial = r.json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == len(spans)
    assert run_id not in partial["errorMessage"]
    after = world.get("alpha", f"/api/executions/{run_id}").json()["execution"]
    assert after["tool_call_count"] == len(spans) - 1 and after["updated_at"] == run["updated_at"]


# -- jobs ----------------------------------------------------------------------------------

def test_job_actions_reach_only_the_readers_scope(world: World) -> None:
    job = world.beta_job
    for action in ("approve", "reject", "cancel", "rerun"):
        r = world.post("alpha", f"/api/executions/{job}/{action}")
        error_of(r, 404, "execution_not_found")
    assert world.get("root", f"/api/executions/{job}").json()["execution"][
        "status"] == "waiting_for_interaction"
    # Submitting lands in the submitter's scope; a key another scope used is a
    # 409 that names nothing of that run.
    r = world.post("alpha", "/api/jobs", json={"command": {"argv": ["true"]},
                                               "requires_approval": True})
    assert r.status_code == 202
    assert world.get("alpha", f"/api/executions/{r.json()['execution_id']}").json()[
        "execution"]["scope_id"] == "alpha"
    r = world.post("alpha", "/api/jobs", json={"command": {"argv": ["true"]},
                                               "idempotency_key": "beta-key"})
    error = error_of(r, 409, "already_exists")
    assert job not in r.text
    # A re-run stays in the scope of the run it repeats.
    r = world.post("root", f"/api/executions/{job}/rerun")
    assert r.status_code == 202
    rerun = world.get("beta", f"/api/executions/{r.json()['execution_id']}").json()
    assert rerun["execution"]["scope_id"] == "beta"
    assert error["detail"] == {"idempotency_key": "beta-key"}


# -- the page --------------------------------------------------------------------------------

def test_the_page_shows_counts_and_suggests_only_the_readers_scope(world: World) -> None:
    page = world.get("alpha", "/")
    assert page.status_code == 200
    for run_id in ("a-1", "a-2", "a-3"):
        assert f"run={run_id}" in page.text
    assert SECRET not in page.text and "run=b-" not in page.text
    for cmd in ("tool:", "trigger:", f"tool:{SECRET}", "trigger:b", "tool:*"):
        r = world.get("alpha", "/runs/command", params={"cmd": cmd})
        assert r.status_code == 200 and SECRET not in r.text, cmd
    assert "alphatools.list" in world.get("alpha", "/runs/command",
                                          params={"cmd": "tool:"}).text
    assert "alpha-cli" in world.get("alpha", "/runs/command", params={"cmd": "trigger:"}).text
    assert f"{SECRET}-trigger" in world.get("beta", "/runs/command",
                                            params={"cmd": "trigger:"}).text
    # The rail's tool search and each fragment.
    for target in ("rail", "chart", "list", "tool-facet"):
        r = world.get("alpha", "/?tool_q=e", headers={"HX-Request": "true",
                                                      "HX-Target": target})
        assert r.status_code == 200 and SECRET not in r.text, target
    assert SECRET in world.get("beta", "/").text


def test_the_pages_infinite_scroll_keeps_its_scope(world: World) -> None:
    page = world.get("alpha", "/?limit=1", headers={"HX-Request": "true", "HX-Target": "list"})
    sentinel = page.text.index('id="more"')
    start = page.text.index('hx-get="', sentinel) + len('hx-get="')
    more = page.text[start:page.text.index('"', start)].replace("&amp;", "&")
    assert "cursor=" in more
    r = world.get("alpha", more, headers={"HX-Request": "true", "HX-Target": "more"})
    assert r.status_code == 200 and "run=" in r.text and SECRET not in r.text
    r = world.get("beta", more, headers={"HX-Request": "true", "HX-Target": "more"})
    assert r.status_code == 400 and "cursor" in r.text and SECRET not in r.text


def test_the_drawer_values_and_job_forms_of_another_scope_are_not_found(world: World) -> None:
    page = world.get("alpha", "/?run=b-1")
    assert SECRET not in page.text
    r = world.get("alpha", "/?run=b-1", headers={"HX-Request": "true", "HX-Target": "drawer"})
    assert r.status_code == 404 and SECRET not in r.text
    for tab in ("tools", "interactions", "events"):
        r = world.get("alpha", f"/?run=b-1&tab={tab}",
                      headers={"HX-Request": "true", "HX-Target": "drawer"})
        assert r.status_code == 404 and SECRET not in r.text, tab
    r = world.get("alpha", "/?run=b-1&tab=events&ev_after=0",
                  headers={"HX-Request": "true", "HX-Target": "events-more"})
    assert r.status_code == 404 and SECRET not in r.text
    for url in ("/runs/b-1/value?part=execution&ref=code",
                "/runs/b-1/value?part=tool_call&ref=b-1-tc:args",
                "/runs/b-1/value?part=event&ref=2:message",
                "/runs/b-1/tool-calls/b-1-tc", f"/runs/{world.beta_job}/job"):
        r = world.get("alpha", url)
        assert r.status_code == 404 and SECRET not in r.text, url
        assert world.get("beta", url).status_code == 200, url
    for action in ("approve", "reject", "cancel", "rerun"):
        r = world.post("alpha", f"/runs/{world.beta_job}/{action}", follow_redirects=False)
        assert r.status_code == 404, action
    assert world.get("root", f"/api/executions/{world.beta_job}").json()["execution"][
        "status"] == "waiting_for_interaction"
    # The owner's drawer shows its run.
    assert f"{SECRET}-run-1" in world.get("beta", "/?run=b-1").text


def test_a_rerun_link_from_another_scope_is_not_listed(world: World) -> None:
    # `rerun_of` is writable: beta names alpha's job; alpha's drawer must not list it.
    r = world.post("beta", "/api/executions", json={"id": f"{SECRET}-copy",
                                                    "rerun_of": world.alpha_job})
    assert r.status_code == 201
    controls = world.get("alpha", f"/runs/{world.alpha_job}/job")
    assert controls.status_code == 200 and SECRET not in controls.text


# -- streams (a real server: the test client buffers streams) --------------------------------

def test_streams_send_only_the_readers_scope(database_url: str) -> None:
    headers, _, _ = seed(database_url)
    db = open_database(database_url)
    store = Store(db)
    try:
        with running_server(database_url) as base, httpx.Client(timeout=20) as client:
            r = client.get(f"{base}/api/executions/b-1/stream", headers=headers["alpha"])
            assert r.status_code == 404 and r.json()["error"]["code"] == "execution_not_found"
            ended = list(sse_messages(client, f"{base}/api/executions/b-1/stream",
                                      headers["beta"]))
            assert ended[-1].event == "end"

            received: list[dict[str, Any]] = []
            ready = threading.Event()

            def read() -> None:
                with client.stream("GET", f"{base}/api/stream?after={store.last_event_id()}",
                                   headers=headers["alpha"]) as response:
                    ready.set()
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            received.append(json.loads(line[5:]))
                            if received[-1]["id"] == "a-late":
                                return

            reader = threading.Thread(target=read)
            reader.start()
            assert ready.wait(10)
            # Another scope's changes first: had they leaked, they would come first.
            store.create_execution(ExecutionCreate(id="b-late", name=SECRET), "beta")
            store.update_execution("b-2", ExecutionPatch(name=f"{SECRET} renamed"))
            store.create_execution(ExecutionCreate(id="a-late"), "alpha")
            reader.join(20)
            assert not reader.is_alive(), received
            assert [r["id"] for r in received] == ["a-late"]
            # Resuming from the start replays only this scope's rows.
            replayed: list[dict[str, Any]] = []
            for m in sse_messages(client, f"{base}/api/stream?after=0", headers["alpha"]):
                replayed.append(json.loads(m.data))
                if replayed[-1]["id"] == "a-late":
                    break
            assert {r["id"] for r in replayed} >= {"a-1", "a-2", "a-3", "a-late"}
            assert {r["scope_id"] for r in replayed} == {"alpha"}
            assert SECRET not in json.dumps(replayed)
            # The page's stream (format=html) is filtered the same way.
            for m in sse_messages(client, f"{base}/api/stream?after=0&format=html",
                                  headers["alpha"]):
                assert SECRET not in m.data and "run=b-" not in m.data
                if "a-late" in m.data:
                    break
    finally:
        db.dispose()
