"""Signing in and out in a real browser, against a server whose database holds a token.

The other end-to-end tests share a server with no token (loopback mode); this
one starts its own, since a token changes what every request needs.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from e2e.conftest import ROOT, RUNYARD, Server, _open, serving


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """``runyard serve`` over a database with one read+exec token and one run."""
    folder: Path = tmp_path_factory.mktemp("signin")
    url = f"sqlite:///{folder / 'runyard.db'}"
    made = subprocess.run([RUNYARD, "token", "create", "--role", "read,write,exec",
                           "--name", "e2e-operator", "--database-url", url],
                          check=True, capture_output=True, text=True, cwd=ROOT)
    token = made.stdout.splitlines()[-1]
    with serving(folder, url) as server:
        r = httpx.post(server.base + "/api/executions",
                       headers={"Authorization": f"Bearer {token}"},
                       json={"id": "guarded-run", "name": "nightly-guarded",
                             "status": "completed"})
        assert r.status_code == 201, r.text
        yield server, token


def test_sign_in_shows_the_runs_and_sign_out_returns(browser: Browser,
                                                      guarded: tuple[Server, str]) -> None:
    server, token = guarded
    page, watch = _open(browser, server)
    try:
        page.goto("/?status=completed")
        expect(page).to_have_url(re.compile(r"/signin\?next=%2F%3Fstatus%3Dcompleted$"))
        field = page.locator("input[name=token]")
        expect(field).to_have_attribute("type", "password")

        field.fill("ryd_not-the-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("not valid")

        page.locator("input[name=token]").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/\?status=completed$"))
        expect(page.get_by_text("nightly-guarded").first).to_be_visible()
        expect(page.locator(".signed-in")).to_have_text("e2e-operator")
        cookie = next(c for c in page.context.cookies() if c["name"] == "runyard_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(re.compile(r"/signin$"))
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/signin\?next=%2F$"))
    finally:
        page.context.close()
    # The 401 of the bad token is the form's answer, not a fault.
    assert not [e for e in watch.errors if "401" not in e], watch.errors
    assert not watch.dialogs
