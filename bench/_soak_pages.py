"""The page side of ``bench/soak.py``: what people with the runs page open send.

A weighted mix of whole pages and the htmx fragments the page fetches (the
same ``HX-Request`` / ``HX-Target`` headers htmx sends): the default view, a
filtered one, a run's drawer as a page and as a fragment (its tabs in turn),
the list, its next page through the cursor the list handed out, the rail, the
chart, the filter command's help, and one waterfall row's detail.

Which runs to open comes from the JSON list, read every few seconds (reported
as its own route, not counted in the page rate).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from urllib.parse import quote

from bench._http import Pool
from bench._openloop import Recorder

HX = {"HX-Request": "true"}
# route name -> weight (out of 20: about one of each per second at 20/s).
WEIGHTS = {
    "GET / (page)": 4, "GET /?status=failed (page)": 2, "GET /?run= (page + drawer)": 2,
    "HX list": 3, "HX more (cursor)": 2, "HX drawer": 3, "HX rail": 1, "HX chart": 1,
    "GET /runs/command": 1, "GET /runs/{id}/tool-calls/{id}": 1,
}
LISTS = ("/", "/?status=completed", "/?trigger=cron", "/?tool=github.*")
COMMANDS = ("status:failed tool:github.*", "trig", "since:1h sort:duration:desc",
            "-status:running \"deploy\"")
TABS = ("", "&tab=tools", "&tab=events")
REFRESH_ROUTE = "GET /api/executions (ids for drawers)"


class PageMix:
    """Picks and sends each due page request."""

    def __init__(self, pool: Pool, recorder: Recorder, seed: int, run_ids: list[str]) -> None:
        self.pool, self.recorder = pool, recorder
        self.rng = random.Random(seed)
        self.names = list(WEIGHTS)
        self.weights = list(WEIGHTS.values())
        self.runs = list(run_ids)          # runs to open (with tool calls <id>-t0)
        self.more: str | None = None       # the next-page URL the last list gave
        self.turn = 0

    async def refresh_ids(self, stop_at: float, every_s: float = 3.0) -> None:
        """Keep ``runs`` to the newest runs with tool calls, until ``stop_at``."""
        while time.monotonic() < stop_at:
            due = time.monotonic()
            response = await self.recorder.send(REFRESH_ROUTE, due, lambda: self.pool.request(
                "GET", "/api/executions?limit=50&meta=false"))
            if response is not None:
                fresh = [r["id"] for r in json.loads(response.body)["executions"]
                         if r["tool_call_count"] > 0]
                if fresh:
                    self.runs = fresh
            await asyncio.sleep(every_s)

    async def fire(self, due: float) -> None:
        """Send the next page request of the mix."""
        route = self.rng.choices(self.names, self.weights)[0]
        self.turn += 1
        run = self.rng.choice(self.runs)
        run_q = quote(run, safe="")
        headers: dict[str, str] = {}
        if route == "GET / (page)":
            path = "/"
        elif route == "GET /?status=failed (page)":
            path = "/?status=failed"
        elif route == "GET /?run= (page + drawer)":
            path = f"/?run={run_q}"
        elif route == "HX drawer":
            path, headers = f"/?run={run_q}{TABS[self.turn % 3]}", {**HX, "HX-Target": "drawer"}
        elif route == "HX more (cursor)" and self.more:
            path, headers = self.more, {**HX, "HX-Target": "more"}
        elif route in ("HX list", "HX more (cursor)"):
            route = "HX list"
            path, headers = LISTS[self.turn % len(LISTS)], {**HX, "HX-Target": "list"}
        elif route == "HX rail":
            path, headers = "/", {**HX, "HX-Target": "rail"}
        elif route == "HX chart":
            path, headers = "/?status=failed", {**HX, "HX-Target": "chart"}
        elif route == "GET /runs/command":
            path = "/runs/command?cmd=" + quote(COMMANDS[self.turn % len(COMMANDS)])
            headers = {**HX, "HX-Target": "cmd-help"}
        else:
            path = f"/runs/{run_q}/tool-calls/{quote(run + '-t0', safe='')}"
            headers = HX
        response = await self.recorder.send(route, due, lambda: self.pool.request(
            "GET", path, headers={"Accept": "text/html", **headers}))
        if response is not None and route == "HX list":
            self.more = next_page(response.body)


def next_page(body: bytes) -> str | None:
    """The ``hx-get`` of the list's ``id="more"`` sentinel, as a path."""
    _, found, rest = body.partition(b'id="more"')
    if not found or b'hx-get="' not in rest:
        return None
    href = rest.split(b'hx-get="', 1)[1].split(b'"', 1)[0]
    return href.decode().replace("&amp;", "&")
