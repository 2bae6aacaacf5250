"""End-to-end fixtures: a real ``runyard serve`` process and Debian's Chromium.

The server runs as its own process on a free port over a temporary SQLite
file seeded with ``runyard demo`` plus a few crafted runs written through the
JSON API (hostile strings, a long trace, a pending question, a huge value).
Playwright drives /usr/bin/chromium; ``playwright install`` is never needed.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, sync_playwright

from app.times import format_ms, now_ms

ROOT = Path(__file__).resolve().parent.parent
RUNYARD = str(Path(sys.executable).parent / "runyard")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
SCREENSHOTS = ROOT / "docs" / "screenshots"
XSS_SCRIPT = "<script>alert(1)</script>"
XSS_ATTR = '"><img src=x onerror=alert(1)>'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _seed(base: str) -> None:
    """Crafted runs on top of the demo data, through the public JSON API."""
    now = now_ms()
    with httpx.Client(base_url=base, timeout=30) as c:
        def ok(r: httpx.Response) -> httpx.Response:
            assert r.status_code in (200, 201), r.text
            return r

        ok(c.post("/api/executions", json={
            "id": "xss-run", "name": "xss " + XSS_SCRIPT, "trigger_kind": "cli",
            "code": "echo " + XSS_ATTR, "status": "running",
            "labels": {"note": XSS_SCRIPT}, "trigger_meta": {"payload": XSS_ATTR}}))
        ok(c.post("/api/executions/xss-run/tool-calls", json={
            "tool_path": "html.render", "status": "failed",
            "args": {"script": XSS_SCRIPT, "attr": XSS_ATTR}, "error": XSS_SCRIPT}))
        ok(c.post("/api/executions/xss-run/events", json={"events": [
            {"type": "stderr", "level": "error", "message": XSS_SCRIPT, "data": {"a": XSS_ATTR}}]}))
        ok(c.post("/api/executions/xss-run/interactions", json={
            "kind": "approval", "message": XSS_ATTR, "request": {"html": XSS_SCRIPT}}))

        # A showcase run: nested tool calls, a long console, a pending question.
        start = now - 95_000
        ok(c.post("/api/executions", json={
            "id": "showcase", "name": "release-pipeline", "trigger_kind": "cli",
            "code": "#!/bin/sh\nset -eu\n./scripts/build.sh --target prod\n"
                    "./scripts/test.sh --shard 1/4\n./scripts/deploy.sh --canary 5%\n",
            "created_at": format_ms(start), "started_at": format_ms(start + 400),
            "labels": {"env": "prod", "team": "platform"},
            "trigger_meta": {"host": "ci-runner-3", "user": "release-bot", "commit": "9f2c1ab"},
            "progress_pct": 64, "progress_stage": "deploying canary"}))
        parent = None
        t = start + 600
        for seq, (path, ms, status) in enumerate([
            ("git.checkout", 1800, "completed"), ("build.compile", 21000, "completed"),
            ("build.bundle", 6400, "completed"), ("test.unit", 15800, "completed"),
            ("test.integration", 24000, "failed"), ("test.integration", 9100, "completed"),
            ("deploy.upload", 5200, "completed"), ("deploy.canary", 0, "running")]):
            body = {"id": f"tc-{seq}", "tool_path": path, "status": status,
                    "started_at": format_ms(t), "args": {"step": seq, "path": path}}
            if status != "running":
                body["completed_at"] = format_ms(t + ms)
                body["result" if status == "completed" else "error"] = (
                    {"ok": True, "artifacts": seq} if status == "completed"
                    else "AssertionError: expected 200, got 503 from /healthz")
            if path.startswith("build.") and parent:
                body["parent_id"] = parent
            ok(c.post("/api/executions/showcase/tool-calls", json=body))
            if path == "git.checkout":
                parent = None
            if path == "build.compile":
                parent = "tc-1"
            t += ms + 120
        events = []
        for i in range(260):
            kind = ("stdout", "stderr", "log")[i % 3]
            level = "error" if i % 37 == 0 else "warn" if i % 11 == 0 else "info"
            events.append({"type": kind, "level": level, "ts": format_ms(start + 500 + i * 300),
                           "message": f"[{kind}] step {i}: compiled module_{i:03d}.py"})
        ok(c.post("/api/executions/showcase/events", json={"events": events}))
        ok(c.post("/api/executions/showcase/interactions", json={
            "kind": "approval", "message": "Promote the canary to 100% of traffic?",
            "request": {"options": ["approve", "decline"], "canary_error_rate": 0.002}}))

        ok(c.post("/api/executions", json={
            "id": "huge-run", "name": "huge-output", "trigger_kind": "http", "status": "completed",
            "code": "\n".join(f"line {i} " + "x" * 60 for i in range(1200))}))


@dataclass
class Server:
    base: str
    process: subprocess.Popen[bytes]


@contextmanager
def serving(folder: Path, url: str, *extra: str) -> Iterator[Server]:
    """``runyard serve`` on a free port over ``url`` until the block ends; its
    log goes to ``folder/server.log`` (shown when it fails to start)."""
    port = _free_port()
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [RUNYARD, "serve", "--port", str(port), "--database-url", url, "--no-demo",
             *extra], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "server.log").read_text())
                time.sleep(0.1)
            yield Server(base, process)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``runyard serve`` on a free port over a freshly seeded SQLite file."""
    folder = tmp_path_factory.mktemp("e2e")
    url = f"sqlite:///{folder / 'runyard.db'}"
    subprocess.run([RUNYARD, "demo", "--executions", "300", "--database-url", url],
                   check=True, capture_output=True, cwd=ROOT)
    with serving(folder, url) as running:
        _seed(running.base)
        yield running


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Watch:
    """What the page did that a test must notice: dialogs and console errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def settle(page: Page) -> None:
    """Until htmx has no request in flight and every swap has settled.

    The page's own load state cannot tell: htmx moves between views with
    ``pushState``, so "networkidle" stays reached from the first load on. And a
    swap's new elements get their htmx listeners only when it settles, a few
    milliseconds after the rows show: typing into the command box before that
    is typing into a box nothing listens to yet.
    """
    page.wait_for_function(
        "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")


def _open(browser: Browser, server: Server, width: int = 1280,
          scheme: str = "light") -> tuple[Page, Watch]:
    context = browser.new_context(viewport={"width": width, "height": 800},
                                  color_scheme=scheme, base_url=server.base)  # type: ignore[arg-type]
    page = context.new_page()
    watch = Watch()

    def on_dialog(d: Dialog) -> None:
        watch.dialogs.append(d.message)
        d.dismiss()

    def on_console(m: ConsoleMessage) -> None:
        # A 4xx answer is how the page shows an inline error: expected, not a fault.
        expected = re.search(r"status of 4\d\d|Response Status Error Code 4\d\d", m.text)
        if m.type == "error" and not expected:
            watch.errors.append(m.text)

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda e: watch.errors.append(str(e)))
    page.set_default_timeout(10_000)
    return page, watch


@pytest.fixture
def page_and_watch(browser: Browser, server: Server) -> Iterator[tuple[Page, Watch]]:
    page, watch = _open(browser, server)
    yield page, watch
    page.context.close()
    # A CSP violation or a script error is a bug even when the test passed.
    assert not watch.errors, watch.errors
    assert not watch.dialogs, watch.dialogs


@pytest.fixture
def page(page_and_watch: tuple[Page, Watch]) -> Page:
    return page_and_watch[0]


@pytest.fixture
def open_page(browser: Browser, server: Server) -> Iterator[object]:
    """Open extra pages (other widths, the dark scheme); all closed afterwards."""
    opened: list[tuple[Page, Watch]] = []

    def make(width: int = 1280, scheme: str = "light") -> Page:
        pair = _open(browser, server, width, scheme)
        opened.append(pair)
        return pair[0]

    yield make
    for p, watch in opened:
        p.context.close()
        assert not watch.errors, watch.errors
        assert not watch.dialogs, watch.dialogs
