"""The page's job forms (app/web/jobs.py) and the two partials, without a browser.

The Playwright test (submit, watch, cancel) comes when the partials are
included in the page.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from app.factory import create_app
from tests.jobs_support import FAST

BASE = "http://127.0.0.1:8000"
LOOPBACK = ("127.0.0.1", 50000)
HTMX = {"HX-Request": "true", "HX-Current-URL": f"{BASE}/?status=failed&run=old&tab=events"}


@pytest.fixture
def page(database_url: str) -> Iterator[TestClient]:
    app = create_app(FAST.with_(database_url=database_url, allow_exec=True))
    with TestClient(app, base_url=BASE, follow_redirects=False, client=LOOPBACK) as c:
        yield c


def _status(page: TestClient, run: str, want: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while (e := page.get(f"/api/executions/{run}").json()["execution"])["status"] not in want:
        assert time.monotonic() < deadline, e
        time.sleep(0.02)
    return dict(e)


def test_the_run_form_without_javascript_redirects_to_the_new_run(page: TestClient) -> None:
    r = page.post("/runs/jobs", data={"command": "echo from the page", "name": "pg",
                                      "timeout": "1m", "labels": "env=dev, team=ops"},
                  headers={"Referer": f"{BASE}/?status=failed&run=old"})
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith("/?status=failed&run=")
    run = location.rsplit("=", 1)[1]
    done = _status(page, run, {"completed"})
    assert (done["name"], done["trigger_kind"], done["labels"]) == (
        "pg", "web", {"env": "dev", "team": "ops"})
    assert done["trigger_meta"]["job"]["timeout_s"] == 60


def test_with_htmx_the_new_run_opens_in_the_drawer(page: TestClient) -> None:
    r = page.post("/runs/jobs", data={"command": "true", "approval": "on"}, headers=HTMX)
    assert r.status_code == 200
    location = json.loads(r.headers["HX-Location"])
    assert location["target"] == "#drawer"
    assert location["path"].startswith("/?status=failed&run=")   # tab of the old run dropped
    run = location["path"].rsplit("=", 1)[1]
    assert _status(page, run, {"waiting_for_interaction"})


def test_a_bad_form_comes_back_with_its_errors(page: TestClient) -> None:
    r = page.post("/runs/jobs", data={"command": " ", "timeout": "soon",
                                      "labels": "novalue", "name": "<b>x</b>"}, headers=HTMX)
    assert r.status_code == 422
    assert "type a command to run" in r.text and "is not a duration" in r.text
    assert "use key=value" in r.text
    assert "&lt;b&gt;x&lt;/b&gt;" in r.text and "<b>x</b>" not in r.text


def test_cross_site_form_posts_are_refused(page: TestClient) -> None:
    r = page.post("/runs/jobs", data={"command": "true"},
                  headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert page.get("/api/executions?meta=true").json()["meta"]["total"] == 0


def test_job_controls_approve_and_rerun_links_both_ways(page: TestClient) -> None:
    run = page.post("/api/jobs", json={"command": {"shell": "echo '<i>hi</i>'"},
                                       "requires_approval": True,
                                       "cwd": "/tmp"}).json()["execution_id"]
    controls = page.get(f"/runs/{run}/job")
    assert controls.status_code == 200
    assert "Approve" in controls.text and "Decline" in controls.text and "Re-run" in controls.text
    assert ' · submitted by <span class="jc-by">local</span>' in controls.text
    r = page.post(f"/runs/{run}/approve", headers=HTMX)
    assert json.loads(r.headers["HX-Location"])["path"].endswith(f"run={run}")
    _status(page, run, {"completed"})
    assert "Approve" not in page.get(f"/runs/{run}/job").text
    r = page.post(f"/runs/{run}/rerun")
    assert r.status_code == 303
    again = r.headers["location"].rsplit("=", 1)[1]
    assert again != run
    assert f"run={again}" in page.get(f"/runs/{run}/job").text       # "Re-runs: …"
    back = page.get(f"/runs/{again}/job").text
    assert "Re-run of" in back and f"run={run}" in back
    assert "Approve" in back    # a re-run of a job that needed approval needs it again


def test_cancel_from_the_page_and_exec_off_hides_everything(
        page: TestClient, database_url: str) -> None:
    run = page.post("/api/jobs", json={"command": {"argv": ["sleep", "30"]}}).json()
    _status(page, run["execution_id"], {"running"})
    assert "Cancel" in page.get(f"/runs/{run['execution_id']}/job").text
    r = page.post(f"/runs/{run['execution_id']}/cancel")
    assert r.status_code == 303
    _status(page, run["execution_id"], {"cancelled"})
    off = create_app(FAST.with_(database_url=database_url))
    with TestClient(off, base_url=BASE, client=LOOPBACK) as c:
        assert c.post(f"/runs/{run['execution_id']}/rerun").status_code == 403
        text = c.get(f"/runs/{run['execution_id']}/job").text
        assert "Job" in text and "<button" not in text


def test_the_run_form_shows_only_when_commands_may_run() -> None:
    from types import SimpleNamespace

    from app.web.templating import templates

    form = templates.env.get_template("_run_form.html")

    def request(allow: bool) -> Any:
        return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(
            settings=SimpleNamespace(allow_exec=allow))))

    assert 'action="/runs/jobs"' in form.render(request=request(True))
    assert form.render(request=request(False)).strip() == ""
