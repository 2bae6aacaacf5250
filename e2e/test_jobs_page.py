"""Running a command from the page: submit, watch its output stream in, cancel it."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from e2e.conftest import Server, _open
from tests.servers import running_server


@pytest.fixture
def exec_server(tmp_path: Path) -> Iterator[Server]:
    """A server that runs commands (--allow-exec), on an empty database."""
    with running_server(f"sqlite:///{tmp_path / 'jobs.db'}", "--allow-exec") as base:
        yield Server(base, None)  # type: ignore[arg-type]


def test_submit_watch_and_cancel_from_the_page(browser: Browser, exec_server: Server) -> None:
    page, watch = _open(browser, exec_server)
    try:
        page.goto("/?live=1")
        page.click("#run-form summary")
        page.fill("#run-form input[name=command]",
                  "for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done; sleep 1000")
        page.fill("#run-form input[name=name]", "ticker")
        page.click("#run-form button[type=submit]")
        drawer = page.locator("#drawer[data-run-id]")
        expect(drawer).to_be_visible()
        expect(page.locator("#d-status")).to_contain_text("running")
        expect(page.locator("#d-progress")).to_be_hidden()  # no progress reported
        page.click("#drawer a.tab:has-text('Events')")
        # The output arrives line by line while the command runs.
        expect(page.locator("#console .ev", has_text="tick 5")).to_have_count(1)
        page.click("#drawer .jc-cancel")
        expect(page.locator("#d-status")).to_contain_text("cancelled", timeout=15_000)
        run_id = drawer.get_attribute("data-run-id")
        body = httpx.get(f"{exec_server.base}/api/executions/{run_id}").json()
        assert body["execution"]["status"] == "cancelled"
        # The list row followed live, and the rail's counts caught up.
        expect(page.locator(f"#run-{run_id} .dot.s-cancelled")).to_have_count(1)
        cancelled = page.locator("#rail a", has_text="cancelled")
        expect(cancelled).to_contain_text("1", timeout=10_000)
        assert not watch.errors, watch.errors
    finally:
        page.context.close()


def test_a_busy_server_keeps_the_run_form_filled_in(browser: Browser, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # One exec request at a time, and one held: its body never arrives.
    monkeypatch.setenv("RUNYARD_MAX_IN_FLIGHT", "1")
    with running_server(f"sqlite:///{tmp_path / 'busy.db'}", "--allow-exec") as base:
        port = int(base.rsplit(":", 1)[1])
        page, watch = _open(browser, Server(base, None))  # type: ignore[arg-type]
        try:
            page.goto("/")
            page.click("#run-form summary")
            page.fill("#run-form input[name=command]", "echo refused for now")
            page.fill("#run-form input[name=name]", "patient")
            page.check("#run-form input[name=approval]")
            with socket.create_connection(("127.0.0.1", port)) as held:
                held.sendall(f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                             "Content-Type: application/json\r\nContent-Length: 40\r\n\r\n"
                             .encode())
                time.sleep(0.5)   # the held request has its slot
                page.click("#run-form button[type=submit]")
                error = page.locator("#run-form .rf-error")
                expect(error).to_contain_text("The server is busy: it is answering 1 exec "
                                              "requests")
                expect(page.locator("#run-form input[name=command]")).to_have_value(
                    "echo refused for now")
                expect(page.locator("#run-form input[name=name]")).to_have_value("patient")
                expect(page.locator("#run-form input[name=approval]")).to_be_checked()
            # The slot is free again: the same form, sent again, is accepted.
            page.click("#run-form button[type=submit]")
            expect(page.locator("#d-status")).to_contain_text("waiting")
            runs = httpx.get(f"{base}/api/executions").json()["executions"]
            assert [r["name"] for r in runs] == ["patient"]
            # The refusal was a 503 (the console says so); nothing else failed.
            assert all("503" in e for e in watch.errors), watch.errors
        finally:
            page.context.close()
