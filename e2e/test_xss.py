"""The XSS corpus in every place a recorded value appears, in a real Chromium.

A server of its own (``--allow-exec``, no demo data) records runs whose every
string is a payload from ``e2e/xss_corpus.py``: names, code, errors, trigger
kinds and details, labels, progress stages, tool paths, args and results,
events, questions and answers, a job's command, working directory and output.
The browser then walks the page the way a person would: the list, the rail and
its tool search, the chart's tooltips, the filter command (with payloads typed
into it, echoed back and reported inline), every drawer tab, tool call details,
"show all", the Run form, and live mode with a hostile run arriving over SSE.

Throughout: no dialog opens, no element a payload would create exists, no
request goes to the URL an injected ``hx-get`` names, the console has no error
(a CSP violation is one), and each payload is on the page as the text it is.
"""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Request, expect

from e2e.conftest import Server, Watch, _open, serving, settle
from e2e.xss_corpus import INJECTED, PAYLOADS, at, cut

ROOT = Path(__file__).resolve().parent.parent
N = len(PAYLOADS)
BIG = 70 * 1024   # over the drawer's 64 KB cut, under the 256 KB stored-value cap


def _json_inner(text: str) -> str:
    """How a string shows inside pretty-printed JSON (quotes and backslashes escaped)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _ok(r: httpx.Response) -> dict:
    assert r.status_code in (200, 201, 202), r.text
    return r.json()


def _seed(c: httpx.Client) -> dict[str, str]:
    """Hostile runs; returns the ids of the special ones by role."""
    ids: dict[str, str] = {}
    for i, p in enumerate(PAYLOADS):
        _ok(c.post("/api/executions", json={
            "id": f"xss-{i}", "name": p, "code": f"{p}\n{at(i + 1)}", "error": p,
            "status": "failed" if i % 2 else "running", "trigger_kind": cut(p, 128),
            "trigger_meta": {p: p}, "labels": {cut(p, 128): p},
            "progress_pct": 40, "progress_stage": cut(p, 256),
            "result": {"html": p}}))
        _ok(c.post(f"/api/executions/xss-{i}/tool-calls", json={
            "tool_path": f"xss.{p}", "args": {p: p}, "result": p, "error": p,
            "status": "failed"}))
    # One run holding every payload in each of its many-valued places.
    _ok(c.post("/api/executions", json={
        "id": "xss-all", "name": "every payload", "status": "running",
        "labels": {cut(p, 128): p for p in PAYLOADS}, "trigger_meta": {"all": list(PAYLOADS)},
        # Past the 64 KB cut: the payloads at the end only show with "show all".
        "result": "x" * BIG + "\n".join(PAYLOADS)}))
    for i, p in enumerate(PAYLOADS):
        _ok(c.post("/api/executions/xss-all/tool-calls", json={
            "id": f"call-{i}", "tool_path": f"tool.{p}", "status": "completed",
            "args": {"payload": p, "filler": "y" * (BIG if i == 0 else 0)},
            "result": {p: [p]}}))
    _ok(c.post("/api/executions/xss-all/events", json={"events": [
        {"type": ("log", "stdout", "stderr", "artifact")[i % 4],
         "level": ("info", "warn", "error", "debug")[i % 4], "message": p, "data": {p: p}}
        for i, p in enumerate(PAYLOADS)]}))
    for i, p in enumerate(PAYLOADS):
        _ok(c.post("/api/executions/xss-all/interactions", json={
            "id": f"ask-{i}", "kind": "elicitation", "message": p,
            "request": {"options": [p, "ok"], "prompt": p}}))
        if i % 2:
            _ok(c.post(f"/api/executions/xss-all/interactions/ask-{i}/resolve",
                       json={"action": "accept", "response": {"answer": p}}))
    # Jobs: one held for approval (its cwd is a payload; it never runs), one that
    # prints every payload (argv, no shell: printf only prints them).
    held = _ok(c.post("/api/jobs", json={
        "command": {"argv": ["printf", "%s\n", *PAYLOADS[:4]]}, "cwd": "/tmp/" + PAYLOADS[1],
        "name": PAYLOADS[0], "labels": {"job": PAYLOADS[3]}, "requires_approval": True}))
    ids["held"] = held["execution_id"]
    echo = _ok(c.post("/api/jobs", json={
        "command": {"argv": ["printf", "%s\n", *PAYLOADS]}, "name": PAYLOADS[2]}))
    ids["echo"] = echo["execution_id"]
    deadline = time.monotonic() + 30
    while _ok(c.get(f"/api/executions/{ids['echo']}"))["execution"]["status"] != "completed":
        assert time.monotonic() < deadline, "the printf job did not finish"
        time.sleep(0.1)
    return ids


@pytest.fixture(scope="module")
def xss_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict]]:
    """``runyard serve --allow-exec`` over a fresh SQLite file holding only hostile runs."""
    folder = tmp_path_factory.mktemp("xss")
    url = f"sqlite:///{folder / 'runyard.db'}"
    with serving(folder, url, "--allow-exec") as server:
        with httpx.Client(base_url=server.base, timeout=30) as c:
            ids = _seed(c)
        yield server, ids


class Hostile:
    """A page on the hostile server, and everything it must never do."""

    def __init__(self, page: Page, watch: Watch, server: Server, ids: dict[str, str]) -> None:
        self.page, self.watch, self.server, self.ids = page, watch, server, ids
        self.fetched_x: list[str] = []
        page.on("request", self._on_request)

    def _on_request(self, request: Request) -> None:
        # An injected hx-get="/x" (or src=x) would fetch a path ending in "/x".
        if urlsplit(request.url).path.rstrip("/").endswith("/x"):
            self.fetched_x.append(request.url)

    def clean(self, where: str) -> None:
        """Nothing a payload would do has happened, so far."""
        for selector in INJECTED:
            assert self.page.locator(selector).count() == 0, (where, selector)
        assert not self.watch.dialogs, (where, self.watch.dialogs)
        assert not self.fetched_x, (where, self.fetched_x)
        assert not self.watch.errors, (where, self.watch.errors)

    def texts(self, selector: str) -> list[str]:
        return self.page.locator(selector).evaluate_all("els => els.map(e => e.textContent)")

    def wait_text(self, selector: str, text: str, then: str = "") -> None:
        """Until the first element of ``selector`` holds exactly ``text`` (no
        normalizing), followed in its parent by ``then``."""
        self.page.wait_for_function(
            """([s, t, then]) => { const e = document.querySelector(s);
                 return !!e && e.textContent === t
                        && e.parentElement.textContent.includes(then); }""",
            arg=[selector, text, then])

    def settle(self) -> None:
        settle(self.page)


@pytest.fixture
def hostile(browser: Browser, xss_server: tuple[Server, dict]) -> Iterator[Hostile]:
    server, ids = xss_server
    page, watch = _open(browser, server)
    h = Hostile(page, watch, server, ids)
    yield h
    try:
        h.clean("at the end")
    finally:
        page.context.close()


def test_list_rail_and_chart_show_payloads_as_text(hostile: Hostile) -> None:
    page = hostile.page
    page.goto("/?from=")
    hostile.settle()
    for i, p in enumerate(PAYLOADS):
        assert page.locator(f"#run-xss-{i} a.open").text_content() == p, i
        assert page.locator(f"#run-xss-{i} .sub").text_content() == p.splitlines()[0].strip()
        assert page.locator(f"#run-xss-{i} .c-trigger .tag").text_content() == cut(p, 128)
    triggers = set(hostile.texts("#facet-trigger .fv-label"))
    assert {cut(p, 128) for p in PAYLOADS[:10]} & triggers
    hostile.clean("list")
    # The chart's tooltips: hover every bar that holds runs.
    bars = page.locator("svg.timeline g.bar")
    for k in range(bars.count()):
        if int(bars.nth(k).get_attribute("data-count") or 0):
            bars.nth(k).hover()
            title = bars.nth(k).locator("title").text_content() or ""
            assert re.fullmatch(r"[\w\s:,·—-]+", title), title
    hostile.clean("chart")
    # The rail's tool search: every hostile tool path is a label, as text.
    page.fill('input[name="tool_q"]', "xss.")
    expect(page.locator("#tool-facet li.fv").first).to_be_visible()
    page.wait_for_timeout(400)
    hostile.settle()
    labels = set(hostile.texts("#tool-facet .fv-label"))
    assert len(labels & {f"xss.{p}" for p in PAYLOADS}) >= min(N, 20), labels
    page.locator("#tool-facet a.fv-main").first.click()
    expect(page).to_have_url(re.compile(r"tool=xss\."))
    hostile.settle()
    assert page.locator("#rows tr.run").count() == 1
    hostile.clean("tool search")


def test_filter_command_echoes_payloads_as_text(hostile: Hostile) -> None:
    page = hostile.page
    page.goto("/?from=")
    for p in PAYLOADS:
        if "\\" in p:
            continue    # the command's own escape; covered by the parser's tests
        quoted = '"' + p.replace('"', '\\"') + '"'
        # A bad value: the inline error echoes the token, as text.
        command = f"status:{quoted}"
        # The previous answer's swaps (the command box among them) must be
        # done before typing, or one can land after the fill and undo it.
        hostile.settle()
        page.fill("#cmd", command)
        page.press("#cmd", "Enter")
        hostile.wait_text("#cmd-help .cmd-error-at", command, then="unknown status")
        hostile.clean(f"command error {p!r}")
    # A good one: the URL holds the value, and the command box shows it back.
    p = PAYLOADS[1]
    escaped = p.replace('"', '\\"')
    page.fill("#cmd", f'tool:"xss.{escaped}" since:all')
    page.press("#cmd", "Enter")
    expect(page).to_have_url(re.compile(r"tool=xss\."))
    hostile.settle()
    expect(page.locator("#rows tr.run")).to_have_count(1)
    assert escaped in page.input_value("#cmd")
    # As-you-type suggestions list hostile tool paths as text.
    page.fill("#cmd", "tool:xss.")
    page.locator("#cmd").dispatch_event("input")
    expect(page.locator("#cmd-help [data-token]").first).to_be_visible()
    tokens = hostile.texts("#cmd-help .sugg-label")
    assert any(t.startswith("tool:xss.") or t.startswith("xss.") for t in tokens), tokens
    hostile.clean("command")


def test_every_drawer_tab_shows_payloads_as_text(hostile: Hostile) -> None:
    page = hostile.page
    for i, p in enumerate(PAYLOADS):
        page.goto(f"/?from=&run=xss-{i}")
        expect(page.locator("#drawer")).to_have_attribute("data-run-id", f"xss-{i}")
        assert page.locator("#drawer h2.d-title").text_content() == p
        body = page.locator("#drawer .d-body").text_content() or ""
        assert p in body and _json_inner(p) in body, i      # error, code; result JSON
        assert page.locator("#drawer .labels .lv").text_content() == p
        if i % 2 == 0:   # running: the progress bar carries the stage
            assert cut(p, 256) in (page.locator("#d-progress").text_content() or "")
        hostile.clean(f"overview {i}")
    for tab in ("overview", "tools", "interactions", "events"):
        page.goto(f"/?from=&run=xss-all&tab={tab}")
        expect(page.locator("#drawer")).to_have_attribute("data-run-id", "xss-all")
        if tab == "tools":
            rows = page.locator("#drawer .wf-row")
            expect(rows).to_have_count(N)
            assert set(hostile.texts("#drawer .wf-path")) == {f"tool.{p}" for p in PAYLOADS}
            for k in range(N):
                rows.nth(k).locator("summary").click()
                expect(rows.nth(k).locator(".wf-detail pre.json").first).to_be_visible()
            detail = page.locator("#drawer .wf").text_content() or ""
            assert all(_json_inner(p) in detail for p in PAYLOADS)
        body = page.locator("#drawer .d-body").text_content() or ""
        if tab == "interactions":
            assert set(hostile.texts("#drawer .ia-q")) == set(PAYLOADS)
            assert all(_json_inner(p) in body for p in PAYLOADS)
        if tab == "events":
            page.locator("#console details.ev-data summary").first.click()
            # (the change events' messages name the hostile tool paths too)
            assert set(PAYLOADS) <= set(hostile.texts("#console .ev-msg"))
        if tab == "overview":
            assert set(hostile.texts("#drawer .labels .lv")) == set(PAYLOADS)
        # "show all": the rest of a cut value arrives as text too.
        links = page.locator("#drawer a.show-all")
        for _ in range(links.count()):
            links.nth(0).click()
            hostile.settle()
        if tab in ("overview", "tools"):
            after = page.locator("#drawer .d-body").text_content() or ""
            assert tab == "tools" or all(p in after for p in PAYLOADS), tab
        hostile.clean(f"xss-all {tab}")


def test_jobs_command_cwd_output_and_run_form(hostile: Hostile) -> None:
    page, ids = hostile.page, hostile.ids
    page.goto(f"/?from=&run={ids['held']}")
    expect(page.locator("#drawer")).to_have_attribute("data-run-id", ids["held"])
    code = page.locator("#drawer pre.code").text_content() or ""
    assert shlex.join(["printf", "%s\n", *PAYLOADS[:4]]) in code
    assert page.locator("#job-controls code").text_content() == "/tmp/" + PAYLOADS[1]
    expect(page.locator("#job-controls .jc-approve")).to_be_visible()
    hostile.clean("held job")
    page.goto(f"/?from=&run={ids['echo']}&tab=events")
    stdout = hostile.texts("#console .ev.t-stdout .ev-msg")
    assert stdout == list(PAYLOADS), stdout
    hostile.clean("job output")
    # The Run form refused (a bad timeout): every field comes back as it was typed.
    page.goto("/?from=")
    page.click("#run-form summary")
    for name, p in (("command", PAYLOADS[0]), ("name", PAYLOADS[1]), ("timeout", PAYLOADS[3]),
                    ("labels", PAYLOADS[6])):
        page.fill(f'#run-form input[name="{name}"]', p)
    page.click("#run-form button[type=submit]")
    expect(page.locator("#rf-err-timeout")).to_be_visible()
    assert page.input_value('#run-form input[name="command"]') == PAYLOADS[0]
    assert page.input_value('#run-form input[name="name"]') == PAYLOADS[1]
    assert PAYLOADS[3] in (page.locator("#rf-err-timeout").text_content() or "")
    hostile.clean("run form")


def test_live_rows_and_trace_from_sse_are_text(hostile: Hostile) -> None:
    page, base = hostile.page, hostile.server.base
    page.goto("/?live=1")
    expect(page.locator("#live-state")).to_have_text("● Connected")
    run = f"live-{uuid.uuid4().hex[:8]}"
    name = PAYLOADS[1] + PAYLOADS[9]
    _ok(httpx.post(base + "/api/executions", json={
        "id": run, "name": name, "code": PAYLOADS[3], "trigger_kind": PAYLOADS[0],
        "labels": {PAYLOADS[4]: PAYLOADS[5]}}))
    row = page.locator(f"#run-{run}")
    expect(row).to_have_count(1)
    assert row.locator("a.open").text_content() == name
    assert row.locator(".c-trigger .tag").text_content() == PAYLOADS[0]
    _ok(httpx.patch(base + f"/api/executions/{run}", json={"status": "failed",
                                                           "error": PAYLOADS[7]}))
    expect(row.locator(".dot.s-failed")).to_have_count(1)
    hostile.clean("live list")
    # The open drawer of a running run: its console grows over SSE.
    trace = f"trace-{uuid.uuid4().hex[:8]}"
    _ok(httpx.post(base + "/api/executions", json={"id": trace, "name": PAYLOADS[11]}))
    page.goto(f"/?run={trace}&tab=events")
    expect(page.locator("#d-live")).to_have_count(1)
    page.wait_for_timeout(300)
    _ok(httpx.post(base + f"/api/executions/{trace}/events", json={"events": [
        {"type": "stdout", "message": p, "data": {p: p}} for p in PAYLOADS]}))
    _ok(httpx.patch(base + f"/api/executions/{trace}",
                    json={"progress_pct": 50, "progress_stage": PAYLOADS[8]}))
    expect(page.locator("#console .ev.t-stdout")).to_have_count(N)
    assert hostile.texts("#console .ev.t-stdout .ev-msg") == list(PAYLOADS)
    expect(page.locator("#d-progress")).to_contain_text(PAYLOADS[8])
    hostile.clean("live drawer")
