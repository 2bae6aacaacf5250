"""The runs page and each of its fragments, through the whole app."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from starlette.testclient import TestClient

from app.times import format_ms, now_ms

HX = {"HX-Request": "true"}
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x onerror=alert(1)>'


def hx(target: str) -> dict[str, str]:
    return {**HX, "HX-Target": target}


def make(client: TestClient, run_id: str, **fields: object) -> None:
    body = {"id": run_id, "name": run_id, "trigger_kind": "cli", "status": "completed", **fields}
    r = client.post("/api/executions", json=body)
    assert r.status_code == 201, r.text


@pytest.fixture
def seeded(client: TestClient) -> TestClient:
    for i in range(60):
        make(client, f"run-{i:03d}", status="failed" if i % 3 == 0 else "completed",
             trigger_kind="http" if i % 2 else "cli")
    r = client.post("/api/executions/run-001/tool-calls",
                    json={"tool_path": "github.issues.list", "args": {"q": "x"}})
    assert r.status_code == 201
    return client


def assert_no_raw_payload(html: str) -> None:
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert XSS_ATTR not in html


def test_full_page_and_headers(seeded: TestClient) -> None:
    r = seeded.get("/")
    assert r.status_code == 200
    assert r.text.startswith("<!doctype html>")
    for region in ('id="view"', 'id="rail"', 'id="chart"', 'id="list"', 'id="drawer"',
                   'id="cmd"', 'id="run-run-059"'):
        assert region in r.text
    assert "HX-Request" in r.headers["vary"]
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in r.text  # only <script src=...> tags
    assert re.search(r'<b id="total">60</b>', r.text)
    assert seeded.get("/runs").text.count('<tr id="run-') == r.text.count('<tr id="run-')


@pytest.mark.parametrize(("target", "starts"), [
    ("view", '<div id="view"'), ("rail", '<aside id="rail"'), ("chart", '<section id="chart"'),
    ("list", '<section id="list"'), ("drawer", '<aside id="drawer"'),
])
def test_htmx_returns_the_fragment(seeded: TestClient, target: str, starts: str) -> None:
    r = seeded.get("/?status=failed", headers=hx(target))
    assert r.status_code == 200, r.text
    assert r.text.lstrip().startswith(starts)
    assert "<html" not in r.text
    assert "HX-Request" in r.headers["vary"]


def test_view_fragment_updates_the_command_out_of_band(seeded: TestClient) -> None:
    r = seeded.get("/?status=failed&tool=github.*", headers=hx("view"))
    assert 'hx-swap-oob="true"' in r.text
    assert 'value="status:failed tool:github.*"' in r.text


def test_list_shows_n_of_m_and_infinite_scroll_sentinel(seeded: TestClient) -> None:
    r = seeded.get("/", headers=hx("list"))
    assert '<b id="shown">50</b> of <b id="total">60</b>' in r.text
    match = re.search(r'<tr id="more"[^>]*hx-get="([^"]+)"[^>]*hx-trigger="intersect once"', r.text)
    assert match, r.text[-2000:]
    more = seeded.get(match.group(1).replace("&amp;", "&"), headers=hx("more"))
    assert more.status_code == 200
    assert more.text.count('<tr id="run-') == 10
    assert 'id="more"' not in more.text
    ids = set(re.findall(r'id="run-(run-\d+)"', r.text)) | set(
        re.findall(r'id="run-(run-\d+)"', more.text))
    assert len(ids) == 60


def test_status_filter_narrows_rows_and_rail_counts_stay_disjunctive(seeded: TestClient) -> None:
    r = seeded.get("/?status=failed")
    assert r.text.count('<tr id="run-') == 20
    rail = seeded.get("/?status=failed", headers=hx("rail")).text
    # completed still shows its count although only failed is picked
    assert re.search(r"completed</span>\s*<span class=\"fv-count\">40<", rail)
    assert 'href="/?status=failed,completed"' in rail   # the toggle link adds a value
    assert 'href="/"' in rail or 'href="/?"' in rail or "Reset all" in rail


def test_chart_bars_add_up_to_total(seeded: TestClient) -> None:
    r = seeded.get("/?trigger=cli", headers=hx("chart"))
    counts = [int(n) for n in re.findall(r'data-count="(\d+)"', r.text)]
    assert sum(counts) == 30


def test_empty_states(seeded: TestClient) -> None:
    r = seeded.get("/?q=nothing-matches-this")
    assert "No runs match" in r.text
    assert "Reset filters" in r.text
    chart = seeded.get("/?q=nothing-matches-this", headers=hx("chart")).text
    assert "No activity in range" in chart


def test_default_range_is_24h_and_from_empty_is_all_time(client: TestClient) -> None:
    old = format_ms(now_ms() - 3 * 86_400_000)
    make(client, "old-run", created_at=old)
    make(client, "new-run")
    assert "old-run" not in client.get("/").text
    assert "old-run" in client.get("/?from=").text
    assert 'value="since:all"' in client.get("/?from=").text


@pytest.mark.parametrize("query", ["status=bogus", "sort=name:asc", "limit=0", "nope=1",
                                   "cursor=garbage", "tab=nope", "ev_level=loud",
                                   "from=yesterday"])
def test_bad_parameters_render_the_error_inline(seeded: TestClient, query: str) -> None:
    page = seeded.get("/?" + query)
    assert page.status_code == 400
    assert "<!doctype html>" in page.text and "error-state" in page.text
    fragment = seeded.get("/?" + query, headers=hx("view"))
    assert fragment.status_code == 400
    assert fragment.text.lstrip().startswith('<div id="view" class="error-state"')
    more = seeded.get("/?" + query, headers=hx("more"))
    assert more.text.lstrip().startswith('<tr id="more"')


def test_command_redirects_to_canonical_url(seeded: TestClient) -> None:
    r = seeded.get("/", params={"cmd": "status:failed -trigger:http since:1h", "run": "run-001"},
                   follow_redirects=False)
    assert r.status_code == 303
    assert parse_qsl(urlsplit(r.headers["location"]).query) == [
        ("status", "failed"), ("not_trigger", "http"), ("from", "-1h"), ("run", "run-001")]


def test_command_with_htmx_pushes_the_canonical_url(seeded: TestClient) -> None:
    headers = {**hx("view"), "HX-Current-URL": "http://testserver/?run=run-002&tab=tools"}
    r = seeded.get("/", params={"cmd": "status:failed"}, headers=headers)
    assert r.status_code == 200
    assert r.headers["hx-push-url"] == "/?status=failed&run=run-002&tab=tools"


def test_command_errors_are_shown_inline(seeded: TestClient) -> None:
    r = seeded.get("/", params={"cmd": "stauts:failed"}, headers=hx("view"))
    assert r.status_code == 400
    assert r.headers["hx-retarget"] == "#cmd-help"
    assert "unknown key" in r.text
    page = seeded.get("/", params={"cmd": "status:nope"})
    assert page.status_code == 400
    assert "unknown status" in page.text and 'value="status:nope"' in page.text


def test_command_suggestions(seeded: TestClient) -> None:
    r = seeded.get("/runs/command", params={"cmd": "status:fa"})
    assert 'data-token="status:failed"' in r.text
    r = seeded.get("/runs/command", params={"cmd": "status:failed,"})
    assert 'data-token="status:failed,running"' in r.text
    r = seeded.get("/runs/command", params={"cmd": "tool:git"})
    assert 'data-token="tool:github.issues.list"' in r.text
    r = seeded.get("/runs/command", params={"cmd": "trigger:"})
    assert 'data-token="trigger:cli"' in r.text
    r = seeded.get("/runs/command", params={"cmd": "st"})
    assert 'data-token="status:"' in r.text
    # the token being typed is not an error yet; a finished one is
    assert "cmd-error" not in seeded.get("/runs/command", params={"cmd": "status:fai"}).text
    assert "cmd-error" in seeded.get("/runs/command", params={"cmd": "status:fai "}).text


@pytest.mark.parametrize("tab", ["overview", "tools", "interactions", "events"])
def test_drawer_tabs(seeded: TestClient, tab: str) -> None:
    r = seeded.get(f"/?run=run-001&tab={tab}", headers=hx("drawer"))
    assert r.status_code == 200
    assert 'data-run-id="run-001"' in r.text
    assert 'aria-selected="true"' in r.text
    full = seeded.get(f"/?run=run-055&tab={tab}")
    assert 'data-run-id="run-055"' in full.text and 'id="run-run-055" class="run sel"' in full.text


def test_drawer_for_unknown_run(seeded: TestClient) -> None:
    r = seeded.get("/?run=nope", headers=hx("drawer"))
    assert r.status_code == 404
    assert "No run with id" in r.text
    assert seeded.get("/?run=nope").status_code == 200


def test_events_are_paginated(client: TestClient) -> None:
    make(client, "chatty")
    events = [{"type": "stdout" if i % 2 else "log", "level": "error" if i % 10 == 0 else "info",
               "message": f"line {i}"} for i in range(250)]
    assert client.post("/api/executions/chatty/events", json={"events": events}).status_code == 201
    r = client.get("/?run=chatty&tab=events", headers=hx("drawer"))
    assert r.text.count('class="ev ') == 200
    match = re.search(r'id="events-more"[^>]*href="([^"]+)"', r.text)
    assert match
    more = client.get(match.group(1).replace("&amp;", "&"), headers=hx("events-more"))
    assert more.status_code == 200
    assert more.text.count('class="ev ') == 51   # 250 + the execution.created event
    errors = client.get("/?run=chatty&tab=events&ev_level=error", headers=hx("drawer"))
    assert errors.text.count('class="ev ') == 25
    assert "t-stdout" in r.text


def test_large_values_are_cut_with_show_all(client: TestClient) -> None:
    make(client, "big", code="x" * 70_000 + XSS_SCRIPT)
    r = client.get("/?run=big", headers=hx("drawer"))
    assert "Show all" in r.text
    assert len(r.text) < 70_000
    match = re.search(r'class="show-all" href="([^"]+)"', r.text)
    assert match
    url = match.group(1).replace("&amp;", "&")
    plain = client.get(url)
    assert plain.headers["content-type"].startswith("text/plain")
    assert plain.text.endswith(XSS_SCRIPT) and len(plain.text) == 70_000 + len(XSS_SCRIPT)
    fragment = client.get(url, headers=HX)
    assert fragment.text.startswith('<pre class="json">') and "&lt;script&gt;" in fragment.text
    assert client.get("/runs/big/value?part=execution&ref=job").status_code == 400
    assert client.get("/runs/nope/value?part=execution&ref=code").status_code == 404


def test_recorded_values_are_escaped_everywhere(client: TestClient) -> None:
    make(client, "xss", name=XSS_SCRIPT, code=XSS_ATTR, error=XSS_SCRIPT, trigger_kind=XSS_ATTR,
         labels={XSS_ATTR: XSS_SCRIPT}, result={"html": XSS_SCRIPT}, trigger_meta=XSS_ATTR)
    r = client.post("/api/executions/xss/tool-calls", json={
        "tool_path": XSS_ATTR, "args": {"a": XSS_SCRIPT, "b": XSS_ATTR}, "status": "failed",
        "error": XSS_SCRIPT})
    assert r.status_code == 201, r.text
    client.post("/api/executions/xss/events", json={"events": [
        {"type": "log", "message": XSS_SCRIPT, "data": {"x": XSS_ATTR}}]})
    pages = [client.get("/?from=").text, client.get("/?q=" + XSS_SCRIPT).text]
    pages += [client.get(f"/?run=xss&tab={tab}").text
              for tab in ("overview", "tools", "interactions", "events")]
    call_id = r.json()["tool_call"]["id"]
    detail = client.get(f"/runs/xss/tool-calls/{call_id}", headers=HX)
    assert detail.status_code == 200 and "&lt;script&gt;" in detail.text
    pages.append(detail.text)
    pages.append(client.get("/runs/command", params={"cmd": "tool:" + XSS_ATTR[:3]}).text)
    pages.append(client.get("/?tool_q=img").text)
    for html in pages:
        assert_no_raw_payload(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in pages[3]


def test_waterfall_rows_load_their_values_on_demand(seeded: TestClient) -> None:
    r = seeded.get("/?run=run-001&tab=tools", headers=hx("drawer"))
    match = re.search(r'<details class="wf-row" id="tc-([^"]+)" hx-get="([^"]+)" '
                      r'hx-trigger="toggle once"', r.text)
    assert match
    detail = seeded.get(match.group(2), headers=HX)
    assert detail.status_code == 200 and '"q": "x"' in detail.text.replace("&#34;", '"')
    assert seeded.get("/runs/run-001/tool-calls/nope", headers=HX).status_code == 404


def test_tool_search_appears_past_twenty_tools(client: TestClient) -> None:
    make(client, "tools")
    for i in range(25):
        client.post("/api/executions/tools/tool-calls", json={"tool_path": f"svc{i:02d}.call"})
    page = client.get("/").text
    assert 'name="tool_q"' in page
    r = client.get("/?tool_q=svc07", headers=hx("tool-facet"))
    assert r.status_code == 200
    assert r.text.lstrip().startswith('<div id="tool-facet"')
    assert "svc07.call" in r.text and "svc08.call" not in r.text


def test_live_parameter_is_accepted(seeded: TestClient) -> None:
    assert seeded.get("/?live=1").status_code == 200
