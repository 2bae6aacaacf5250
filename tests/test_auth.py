"""Auth (issue 7): the role matrix over every route, no-token mode, sessions,
cookie flags, CSRF, Bearer, OTLP with a token, and the lookup cache."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from app.factory import create_app
from app.store import Store
from tests.jobs_support import FAST
from tests.otlp_support import nested_trace

BASE = "http://127.0.0.1:8000"
LOOPBACK = ("127.0.0.1", 50000)

# Every route of the app and the role it needs (None: public). Written out here,
# not read from app.auth.policy, so the test checks the policy instead of
# repeating it; a route missing from this table fails test_every_route_is_listed.
EXPECTED: dict[tuple[str, str], str | None] = {
    ("GET", "/healthz"): None,
    ("GET", "/signin"): None,
    ("POST", "/signin"): None,
    ("POST", "/signout"): None,
    ("GET", "/static"): None,
    ("GET", "/api/executions"): "read",
    ("POST", "/api/executions"): "write",
    ("GET", "/api/executions/{execution_id}"): "read",
    ("PATCH", "/api/executions/{execution_id}"): "write",
    ("GET", "/api/executions/{execution_id}/tool-calls"): "read",
    ("POST", "/api/executions/{execution_id}/tool-calls"): "write",
    ("PATCH", "/api/executions/{execution_id}/tool-calls/{tool_call_id}"): "write",
    ("GET", "/api/executions/{execution_id}/interactions"): "read",
    ("POST", "/api/executions/{execution_id}/interactions"): "write",
    ("POST", "/api/executions/{execution_id}/interactions/{interaction_id}/resolve"): "write",
    ("GET", "/api/executions/{execution_id}/events"): "read",
    ("POST", "/api/executions/{execution_id}/events"): "write",
    ("POST", "/api/ingest"): "write",
    ("POST", "/api/jobs"): "exec",
    ("POST", "/api/executions/{execution_id}/approve"): "exec",
    ("POST", "/api/executions/{execution_id}/reject"): "exec",
    ("POST", "/api/executions/{execution_id}/cancel"): "exec",
    ("POST", "/api/executions/{execution_id}/rerun"): "exec",
    ("GET", "/api/openapi.json"): "read",
    ("POST", "/v1/traces"): "write",
    ("GET", "/api/stream"): "read",
    ("GET", "/api/executions/{execution_id}/stream"): "read",
    ("GET", "/"): "read",
    ("GET", "/runs"): "read",
    ("GET", "/runs/command"): "read",
    ("GET", "/runs/{run_id}/value"): "read",
    ("GET", "/runs/{run_id}/tool-calls/{tool_call_id}"): "read",
    ("POST", "/runs/jobs"): "exec",
    ("GET", "/runs/{run_id}/job"): "read",
    ("POST", "/runs/{run_id}/approve"): "exec",
    ("POST", "/runs/{run_id}/reject"): "exec",
    ("POST", "/runs/{run_id}/cancel"): "exec",
    ("POST", "/runs/{run_id}/rerun"): "exec",
}
# What each kind of credential holds (exec grants read; write does not).
HOLDS: dict[str, set[str]] = {
    "read": {"read"}, "write": {"write"}, "exec": {"exec", "read"},
    "all": {"read", "write", "exec"},
}
# Query strings that make an allowed request answer at once (a stream would
# otherwise never end in the test client).
QUERY = {"/api/stream": "?status=nope", "/api/executions/{execution_id}/stream": "?after=nope",
         "/static": "/app.css"}


@dataclass
class Tokens:
    secrets: dict[str, str]
    store: Store


def _app_client(database_url: str, **settings: Any) -> TestClient:
    app = create_app(FAST.with_(**{"database_url": database_url, "allow_exec": True,
                                   "auth_cache_s": 0, **settings}))
    return TestClient(app, base_url=BASE, client=LOOPBACK, follow_redirects=False,
                      raise_server_exceptions=False)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with _app_client(database_url) as c:
        yield c


@pytest.fixture
def tokens(client: TestClient) -> Tokens:
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    out = {}
    for name, roles in (("read", ["read"]), ("write", ["write"]), ("exec", ["exec"]),
                        ("all", ["read", "write", "exec"]), ("revoked", ["read", "write", "exec"])):
        out[name] = store.create_token(name, roles)[1]
    store.revoke_token("revoked")
    return Tokens(out, store)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _routes(client: TestClient) -> list[tuple[str, str]]:
    found = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Mount):
            found.append(("GET", route.path))
        elif isinstance(route, Route):
            found += [(m, route.path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return found


def _send(client: TestClient, method: str, template: str, headers: dict[str, str]) -> Any:
    path = re.sub(r"\{[^}]+\}", "x", template) + QUERY.get(template, "")
    if method in ("POST", "PATCH"):
        return client.request(method, path, headers=headers, json={})
    return client.request(method, path, headers=headers)


def _code(response: Any) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


def test_every_route_is_listed(client: TestClient) -> None:
    routes = _routes(client)
    missing = [r for r in routes if r not in EXPECTED]
    assert not missing, f"routes without an expected role in this test: {missing}"
    assert set(EXPECTED) == set(routes), set(EXPECTED) - set(routes)


@pytest.mark.parametrize("who", ["none", "read", "write", "exec", "all", "revoked"])
def test_role_matrix(client: TestClient, tokens: Tokens, who: str) -> None:
    headers = {} if who == "none" else bearer(tokens.secrets[who])
    holds = HOLDS.get(who, set())
    wrong = []
    for method, template in _routes(client):
        role = EXPECTED[(method, template)]
        r = _send(client, method, template, headers)
        if role is None:
            # The sign-in form answers a bad token itself (401 and the form again).
            ok, want = _code(r) not in ("unauthorized", "forbidden"), "public"
        elif role in holds:
            ok = r.status_code not in (401, 403) and _code(r) not in ("unauthorized", "forbidden")
            want = "allowed"
        elif who in ("none", "revoked"):
            ok, want = r.status_code == 401 and _code(r) == "unauthorized", "401 unauthorized"
        else:
            ok = r.status_code == 403 and _code(r) == "forbidden" and role in r.text
            want = f"403 forbidden naming {role}"
        if not ok:
            wrong.append(f"{method} {template}: want {want}, got {r.status_code} {r.text[:120]}")
    assert not wrong, "\n".join(wrong)


def test_refusals_say_what_is_needed(client: TestClient, tokens: Tokens) -> None:
    r = client.get("/api/executions")
    assert r.status_code == 401
    assert "runyard token create --role read" in r.json()["error"]["message"]
    r = client.get("/api/executions", headers=bearer(tokens.secrets["write"]))
    assert r.status_code == 403
    assert r.json()["error"]["detail"] == {"role": "read", "token": "write"}
    r = client.get("/api/executions", headers=bearer("ryd_not-a-token"))
    assert r.status_code == 401
    assert "not valid" in r.json()["error"]["message"]


def test_a_page_without_credentials_goes_to_sign_in(client: TestClient, tokens: Tokens) -> None:
    r = client.get("/?status=failed&run=a b", headers={"Accept": "text/html"})
    assert r.status_code == 303
    assert r.headers["location"] == "/signin?next=%2F%3Fstatus%3Dfailed%26run%3Da%2520b"
    r = client.get("/", headers={"Accept": "text/html", "HX-Request": "true"})
    assert r.status_code == 401
    assert r.headers["HX-Redirect"].startswith("/signin?next=%2F")


def test_answering_a_job_gate_needs_exec(client: TestClient, tokens: Tokens) -> None:
    r = client.post("/api/jobs", json={"command": {"argv": ["true"]}, "requires_approval": True},
                    headers=bearer(tokens.secrets["exec"]))
    assert r.status_code == 202, r.text
    run = r.json()["execution_id"]
    gate = client.get(f"/api/executions/{run}/interactions",
                      headers=bearer(tokens.secrets["all"])).json()["interactions"][0]["id"]
    r = client.post(f"/api/executions/{run}/interactions/{gate}/resolve",
                    json={"action": "accept"}, headers=bearer(tokens.secrets["write"]))
    assert r.status_code == 403
    assert r.json()["error"]["detail"]["reason"] == "role_missing"
    r = client.post(f"/api/executions/{run}/interactions/{gate}/resolve",
                    json={"action": "decline"}, headers=bearer(tokens.secrets["all"]))
    assert r.status_code == 200, r.text


def test_jobs_record_who_submitted_decided_cancelled_and_reran(
        client: TestClient, tokens: Tokens) -> None:
    # The audit trail: the token's name and id (never its secret) and how it came,
    # in the run's trigger_meta (submit, re-run) and in the events of a decision
    # or a cancel; the page's session is named as such.
    ids = {t["name"]: t["id"] for t in tokens.store.list_tokens()}
    as_exec, as_all = bearer(tokens.secrets["exec"]), bearer(tokens.secrets["all"])

    def run_of(run: str) -> dict[str, Any]:
        return dict(client.get(f"/api/executions/{run}", headers=as_all).json()["execution"])

    def by_of(run: str, event_type: str) -> list[Any]:
        events = client.get(f"/api/executions/{run}/events?type={event_type}",
                            headers=as_all).json()["events"]
        return [e["data"].get("by") for e in events]

    body = {"command": {"argv": ["sleep", "30"]}, "requires_approval": True}
    held = client.post("/api/jobs", json=body, headers=as_exec).json()["execution_id"]
    assert run_of(held)["trigger_meta"]["job"]["submitted_by"] == {
        "name": "exec", "via": "bearer", "token_id": ids["exec"]}
    assert tokens.secrets["exec"] not in str(run_of(held))
    # The record is not the client's to change: a PATCH cannot touch trigger_meta.
    r = client.patch(f"/api/executions/{held}", json={"trigger_meta": {"job": {}}},
                     headers=bearer(tokens.secrets["write"]))
    assert r.status_code == 422 and "trigger_meta" in r.text
    _sign_in(client, tokens.secrets["all"])
    assert '<span class="jc-by">exec</span>' in client.get(f"/runs/{held}/job").text
    assert client.post(f"/api/executions/{held}/reject", json={"reason": "no"},
                       headers=as_all).status_code == 202
    assert by_of(held, "interaction.resolved") == [
        {"name": "all", "via": "bearer", "token_id": ids["all"]}]
    # Through the generic resolve route, a gate is answered with the same record.
    gated = client.post("/api/jobs", json=body, headers=as_exec).json()["execution_id"]
    gate = client.get(f"/api/executions/{gated}/interactions",
                      headers=as_all).json()["interactions"][0]["id"]
    r = client.post(f"/api/executions/{gated}/interactions/{gate}/resolve",
                    json={"action": "decline"}, headers=as_all)
    assert r.status_code == 200, r.text
    assert by_of(gated, "interaction.resolved") == [
        {"name": "all", "via": "bearer", "token_id": ids["all"]}]
    # Cancel before it started (no worker holds it), then a re-run from the page.
    queued = client.post("/api/jobs", json=body, headers=as_all).json()["execution_id"]
    r = client.post(f"/api/executions/{queued}/cancel", json={"reason": "wrong host"},
                    headers=as_exec)
    assert (r.status_code, r.json()["status"]) == (202, "cancelled")
    assert by_of(queued, "log") == [{"name": "exec", "via": "bearer", "token_id": ids["exec"]}]
    r = client.post(f"/runs/{queued}/rerun", data={"csrf_token": _csrf(client)})
    assert r.status_code == 303
    again = r.headers["location"].split("run=")[1].split("&")[0]
    meta = run_of(again)
    assert meta["rerun_of"] == queued
    assert meta["trigger_meta"]["job"]["submitted_by"] == {
        "name": "all", "via": "session", "token_id": ids["all"]}
    assert '<span class="jc-by">all</span>' in client.get(f"/runs/{again}/job").text


# -- no token: this machine only ----------------------------------------------

def test_without_tokens_loopback_may_read_and_write(client: TestClient) -> None:
    assert client.post("/api/executions", json={"id": "r1"}).status_code == 201
    assert [e["id"] for e in client.get("/api/executions").json()["executions"]] == ["r1"]
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "Sign out" not in page.text and "hx-headers" not in page.text


def test_without_tokens_other_clients_are_refused(database_url: str) -> None:
    app = create_app(FAST.with_(database_url=database_url, auth_cache_s=0))
    with TestClient(app, base_url=BASE, client=("10.1.2.3", 4000)) as c:
        r = c.get("/api/executions")
        assert r.status_code == 403
        assert r.json()["error"]["detail"]["reason"] == "tokens_needed"
        assert "runyard token create --role read --name NAME" in r.json()["error"]["message"]
        assert c.get("/healthz").json() == {"ok": True}


def test_without_tokens_a_rebound_host_is_refused(client: TestClient) -> None:
    r = client.get("/api/executions", headers={"Host": "evil.example:8000"})
    assert r.status_code == 403
    assert r.json()["error"]["detail"]["reason"] == "host_not_allowed"
    assert client.get("/api/executions", headers={"Host": "localhost:8000"}).status_code == 200


def test_revoking_the_last_token_does_not_reopen_the_server(client: TestClient) -> None:
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    store.create_token("only", ["read"])
    store.revoke_token("only")
    assert client.get("/api/executions").status_code == 401


# -- sessions -----------------------------------------------------------------

def _sign_in(client: TestClient, token: str, next_url: str = "/") -> Any:
    return client.post("/signin", data={"token": token, "next": next_url})


def _csrf(client: TestClient) -> str:
    page = client.get("/")
    assert page.status_code == 200, page.text[:300]
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "no CSRF field in the page"
    return found.group(1)


def test_sign_in_sets_a_safe_cookie(client: TestClient, tokens: Tokens) -> None:
    assert "type=\"password\"" in client.get("/signin").text
    r = _sign_in(client, tokens.secrets["all"], "/?status=failed")
    assert r.status_code == 303
    assert r.headers["location"] == "/?status=failed"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("runyard_session=")
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"):
        assert flag in cookie
    assert "Secure" not in cookie
    page = client.get("/")
    assert page.status_code == 200
    assert "Sign out" in page.text and ">all</span>" in page.text
    assert "hx-headers='{\"X-CSRF-Token\": " in page.text


def test_secure_cookie_when_configured(database_url: str) -> None:
    with _app_client(database_url, cookie_secure=True) as c:
        _, token = c.app.state.store.create_token("t", ["read"])  # type: ignore[attr-defined]
        assert "; Secure" in _sign_in(c, token).headers["set-cookie"]


def test_sign_in_refuses_bad_tokens_and_foreign_next(client: TestClient, tokens: Tokens) -> None:
    for bad in ("ryd_wrong", tokens.secrets["revoked"]):
        r = _sign_in(client, bad)
        assert r.status_code == 401
        assert "not valid" in r.text and "set-cookie" not in r.headers
    r = _sign_in(client, tokens.secrets["write"])
    assert r.status_code == 403 and "read" in r.text
    for foreign in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        assert _sign_in(client, tokens.secrets["read"], foreign).headers["location"] == "/"


def test_sign_out_ends_the_session(client: TestClient, tokens: Tokens) -> None:
    _sign_in(client, tokens.secrets["read"])
    r = client.post("/signout", data={"csrf_token": _csrf(client)})
    assert r.status_code == 303 and r.headers["location"] == "/signin"
    assert "Max-Age=0" in r.headers["set-cookie"]
    assert client.get("/api/executions").status_code == 401


def test_revoking_a_token_ends_its_sessions(client: TestClient, tokens: Tokens) -> None:
    _sign_in(client, tokens.secrets["read"])
    assert client.get("/api/executions").status_code == 200
    tokens.store.revoke_token("read")
    assert client.get("/api/executions").status_code == 401
    assert client.get("/", headers={"Accept": "text/html"}).status_code == 303


def test_a_tampered_cookie_is_no_session(client: TestClient, tokens: Tokens) -> None:
    _sign_in(client, tokens.secrets["read"])
    value = client.cookies["runyard_session"]
    client.cookies.set("runyard_session", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert client.get("/api/executions").status_code == 401


# -- CSRF ---------------------------------------------------------------------

def test_csrf_for_form_posts(client: TestClient, tokens: Tokens) -> None:
    _sign_in(client, tokens.secrets["all"])
    csrf = _csrf(client)
    form = {"command": "true"}
    for sent in ({}, {"csrf_token": "wrong"}):
        r = client.post("/runs/jobs", data={**form, **sent})
        assert r.status_code == 403 and _code(r) == "csrf_failed"
    r = client.post("/runs/jobs", data={**form, "csrf_token": csrf})
    assert r.status_code == 303, r.text
    assert r.headers["location"].startswith("/?run=")


def test_csrf_for_htmx_and_json_posts(client: TestClient, tokens: Tokens) -> None:
    _sign_in(client, tokens.secrets["all"])
    csrf = _csrf(client)
    hx = {"HX-Request": "true"}
    for sent in ({}, {"X-CSRF-Token": "wrong"}):
        r = client.post("/runs/jobs", data={"command": "true"}, headers={**hx, **sent})
        assert r.status_code == 403 and _code(r) == "csrf_failed"
        r = client.post("/api/executions", json={"id": "r"}, headers=sent)
        assert r.status_code == 403 and _code(r) == "csrf_failed"
    r = client.post("/runs/jobs", data={"command": "true"}, headers={**hx, "X-CSRF-Token": csrf})
    assert r.status_code == 200 and "HX-Location" in r.headers
    r = client.post("/api/executions", json={"id": "r"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    # Forms in the drawer carry it too.
    run = r.json()["execution"]["id"]
    assert client.get(f"/?run={run}").status_code == 200


def test_the_job_controls_carry_the_csrf_token(client: TestClient, tokens: Tokens) -> None:
    r = client.post("/api/jobs", json={"command": {"argv": ["sleep", "30"]}},
                    headers=bearer(tokens.secrets["all"]))
    run = r.json()["execution_id"]
    _sign_in(client, tokens.secrets["all"])
    csrf = _csrf(client)
    controls = client.get(f"/runs/{run}/job").text
    assert controls.count(f'name="csrf_token" value="{csrf}"') >= 2  # cancel, re-run
    r = client.post(f"/runs/{run}/cancel", data={"csrf_token": csrf})
    assert r.status_code == 303


def test_bearer_needs_no_csrf(client: TestClient, tokens: Tokens) -> None:
    r = client.post("/api/executions", json={"id": "b"}, headers=bearer(tokens.secrets["write"]))
    assert r.status_code == 201
    r = client.post("/runs/jobs", data={"command": "true"}, headers=bearer(tokens.secrets["exec"]))
    assert r.status_code == 303


def test_a_read_session_sees_no_run_form(client: TestClient, tokens: Tokens) -> None:
    _sign_in(client, tokens.secrets["read"])
    page = client.get("/").text
    assert 'action="/runs/jobs"' not in page
    _sign_in(client, tokens.secrets["exec"])
    assert 'action="/runs/jobs"' in client.get("/").text


# -- OTLP ---------------------------------------------------------------------

def test_otlp_with_a_bearer_token(client: TestClient, tokens: Tokens) -> None:
    spans, trace_id = nested_trace(3)
    body = encode_spans(spans).SerializeToString()
    headers = {"Content-Type": "application/x-protobuf"}
    assert client.post("/v1/traces", content=body, headers=headers).status_code == 401
    r = client.post("/v1/traces", content=body,
                    headers={**headers, **bearer(tokens.secrets["read"])})
    assert r.status_code == 403
    r = client.post("/v1/traces", content=body,
                    headers={**headers, **bearer(tokens.secrets["write"])})
    assert r.status_code == 200, r.text
    listed = client.get("/api/executions", headers=bearer(tokens.secrets["read"])).json()
    assert [e["name"] for e in listed["executions"]] == ["nightly-sync"]
    assert trace_id


# -- the lookup cache ---------------------------------------------------------

def test_a_revoke_takes_effect_within_the_cache_time(database_url: str) -> None:
    with _app_client(database_url, auth_cache_s=0.5) as c:
        store: Store = c.app.state.store  # type: ignore[attr-defined]
        _, token = store.create_token("cached", ["read"])
        time.sleep(0.6)  # "is there any token?" was cached as no at start-up
        assert c.get("/api/executions", headers=bearer(token)).status_code == 200
        store.revoke_token("cached")
        assert c.get("/api/executions", headers=bearer(token)).status_code == 200
        time.sleep(0.6)
        assert c.get("/api/executions", headers=bearer(token)).status_code == 401


def test_the_lookup_cache_loads_a_key_once_for_concurrent_requests() -> None:
    """Requests in flight when an entry runs out share one query (no stampede)."""
    import asyncio
    import threading

    from app.auth.authenticator import _Cache

    calls: list[int] = []
    gate = threading.Event()

    def load() -> int:
        gate.wait(5)
        calls.append(1)
        return len(calls)

    async def main() -> list[int]:
        cache = _Cache(ttl_s=60)
        waiting = [asyncio.create_task(cache.get("any", load)) for _ in range(20)]
        await asyncio.sleep(0.05)
        gate.set()
        got = await asyncio.gather(*waiting)
        got.append(await cache.get("any", load))  # now a hit
        return got

    assert asyncio.run(main()) == [1] * 21
    assert len(calls) == 1
