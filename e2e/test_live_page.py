"""Live mode in a real browser: rows and trace events pushed over SSE, and a restart."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from app.db.engine import open_database
from app.store import Store
from app.store.inputs import ExecutionCreate
from e2e.conftest import RUNYARD, Server, Watch, _free_port, _open


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_live_rows_appear_and_update_in_place(page_and_watch: tuple[Page, Watch],
                                              server: Server) -> None:
    page, _ = page_and_watch
    page.goto("/")
    page.keyboard.press("j")  # live mode on, from the keyboard
    expect(page).to_have_url(re.compile(r"live=1"))
    expect(page.locator("#live-state")).to_have_text("● Connected")
    run = _id("live")
    started = time.monotonic()
    httpx.post(server.base + "/api/executions",
               json={"id": run, "name": "arrives live", "trigger_kind": "cli"})
    row = page.locator(f"#run-{run}")
    expect(row).to_have_count(1, timeout=1000)  # within a second, no reload
    assert time.monotonic() - started < 1.5
    expect(page.locator("#live-divider")).to_contain_text("new since")
    httpx.patch(server.base + f"/api/executions/{run}", json={"status": "failed", "error": "x"})
    expect(row.locator(".dot.s-failed")).to_have_count(1)
    expect(page.locator(f"#run-{run}")).to_have_count(1)  # updated in place, not added
    # The row opens its drawer on this page's own URL.
    row.locator("a.open").click()
    expect(page).to_have_url(re.compile(rf"live=1.*run={run}|run={run}.*live=1"))
    # Leaving live mode takes the stream away.
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    expect(page.locator("#live-feed")).to_have_count(0)


def test_refreshes_that_fail_while_live_raise_no_script_error(
        page_and_watch: tuple[Page, Watch], server: Server) -> None:
    # A live row refreshes the rail and the chart a few seconds later. When the
    # server cannot be reached then, the failure is a toast, not an uncaught
    # script error: before, the second request queued behind the first and
    # htmx dropped its promise, whose rejection surfaced as "undefined".
    page, watch = page_and_watch
    script_errors: list[str] = []
    page.on("pageerror", lambda e: script_errors.append(str(e)))
    page.goto("/?live=1")
    expect(page.locator("#live-state")).to_have_text("● Connected")
    refused: list[str] = []

    def refuse(route: Route) -> None:
        target = route.request.headers.get("hx-target")
        if target in ("rail", "chart"):
            refused.append(target)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", refuse)
    httpx.post(server.base + "/api/executions", json={"id": _id("refresh"), "name": "x"})
    for _ in range(100):
        if len(refused) >= 2:
            break
        page.wait_for_timeout(100)
    page.wait_for_timeout(500)
    assert sorted(refused) == ["chart", "rail"]
    assert not script_errors, script_errors
    expect(page.locator("#toast")).to_have_text("The server could not be reached")
    # The refused requests' own console lines (the browser's and htmx's) are
    # expected here; anything else still fails the test.
    watch.errors[:] = [e for e in watch.errors if not e.startswith(
        ("Failed to load resource", "htmx:afterRequest", "htmx:sendError"))]


def test_a_refresh_the_server_turns_away_keeps_the_counts_and_tries_again(
        page_and_watch: tuple[Page, Watch], server: Server) -> None:
    # A busy server answers the rail's and chart's background refresh with the
    # page's 503. Nobody asked for that refresh: the rail and chart stay as
    # they were (no error box in their place, no toast) and are asked again.
    page, watch = page_and_watch
    page.goto("/?live=1")
    expect(page.locator("#live-state")).to_have_text("● Connected")
    facets = page.locator("#rail a").count()
    asked: list[str] = []

    def busy(route: Route) -> None:
        target = route.request.headers.get("hx-target")
        if target in ("rail", "chart") and route.request.headers.get("x-live-refresh"):
            asked.append(target)
            route.fulfill(status=503, headers={"Retry-After": "1"}, content_type="text/html",
                          body=f'<div id="{target}" class="error-state" role="alert" '
                               'data-code="overloaded"><h2>The server is busy</h2></div>')
        else:
            route.continue_()

    page.route("**/*", busy)
    httpx.post(server.base + "/api/executions", json={"id": _id("busy"), "name": "x"})
    for _ in range(150):   # refreshed 3 s after the row, and again 3 s after the refusal
        if asked.count("rail") >= 2 and asked.count("chart") >= 2:
            break
        page.wait_for_timeout(100)
    assert asked.count("rail") >= 2 and asked.count("chart") >= 2, asked
    expect(page.locator(".error-state")).to_have_count(0)
    assert page.locator("#rail a").count() == facets
    expect(page.locator("#toast")).not_to_contain_text("failed to answer")
    # Once the server takes them again, the next try is swapped in.
    answered: list[int] = []
    page.on("response", lambda r: r.request.headers.get("hx-target") == "rail"
            and answered.append(r.status))
    page.unroute("**/*", busy)
    for _ in range(100):
        if 200 in answered:
            break
        page.wait_for_timeout(100)
    assert 200 in answered, answered
    expect(page.locator(".error-state")).to_have_count(0)
    expect(page.locator("#rail a").first).to_be_visible()
    watch.errors[:] = [e for e in watch.errors if not e.startswith("Failed to load resource")]


def test_live_drawer_appends_trace_rows(page_and_watch: tuple[Page, Watch],
                                        server: Server) -> None:
    page, _ = page_and_watch
    run = _id("trace")
    httpx.post(server.base + "/api/executions", json={"id": run, "name": "streams output"})
    page.goto(f"/?run={run}&tab=events")
    expect(page.locator("#d-live")).to_have_count(1)
    page.wait_for_timeout(300)  # let the stream connect
    for i in range(3):
        httpx.post(server.base + f"/api/executions/{run}/events", json={"events": [
            {"type": "stdout", "message": f"output line {i}"}]})
    expect(page.locator("#console .ev", has_text="output line 2")).to_have_count(1)
    httpx.patch(server.base + f"/api/executions/{run}",
                json={"progress_pct": 50, "progress_stage": "halfway"})
    expect(page.locator("#d-progress")).to_contain_text("halfway")
    httpx.patch(server.base + f"/api/executions/{run}", json={"status": "completed"})
    expect(page.locator("#d-status")).to_contain_text("completed")
    # At the end the drawer is drawn once more, final, with no live stream.
    expect(page.locator("#d-live")).to_have_count(0)
    for i in range(3):
        expect(page.locator("#console .ev", has_text=f"output line {i}")).to_have_count(1)


class Restartable:
    """A server that can be stopped and started again on the same port."""

    def __init__(self, folder: Path) -> None:
        self.url = f"sqlite:///{folder / 'restart.db'}"
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [RUNYARD, "serve", "--port", str(self.port), "--database-url", self.url,
                 "--no-demo"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(self.log.read_text())

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(15)
            self.process = None


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[Restartable]:
    server = Restartable(tmp_path)
    server.start()
    yield server
    server.stop()


def test_restarting_the_server_shows_every_row_exactly_once(
        browser: Browser, restartable: Restartable) -> None:
    page, _ = _open(browser, Server(restartable.base, None))  # type: ignore[arg-type]
    # While the server is down the console fills with failed requests, as it
    # should; what must not happen is an uncaught script error.
    script_errors: list[str] = []
    page.on("pageerror", lambda e: script_errors.append(str(e)))
    try:
        page.goto(restartable.base + "/?live=1")
        expect(page.locator("#live-state")).to_have_text("● Connected")
        for name in ("before-1", "before-2"):
            httpx.post(restartable.base + "/api/executions", json={"id": name, "name": name})
        expect(page.locator("#run-before-2")).to_have_count(1)
        restartable.stop()
        expect(page.locator("#live-state")).to_have_text("Reconnecting…")
        # Written while no server is up: only the table can deliver it on resume.
        store = Store(open_database(restartable.url))
        try:
            store.create_execution(ExecutionCreate(id="while-down", name="while-down"))
        finally:
            store.db.dispose()
        restartable.start()
        expect(page.locator("#live-state")).to_have_text("● Connected", timeout=20_000)
        httpx.post(restartable.base + "/api/executions", json={"id": "after-1", "name": "a"})
        httpx.patch(restartable.base + "/api/executions/before-1", json={"status": "completed"})
        expect(page.locator("#run-after-1")).to_have_count(1)
        expect(page.locator("#run-while-down")).to_have_count(1)
        expect(page.locator("#run-before-1 .dot.s-completed")).to_have_count(1)
        ids = page.locator("#rows tr.run").evaluate_all("rows => rows.map(r => r.id)")
        assert sorted(ids) == sorted(set(ids)), f"a row shows twice: {ids}"
        assert {"run-before-1", "run-before-2", "run-while-down", "run-after-1"} <= set(ids)
        assert not script_errors, script_errors
    finally:
        page.context.close()
