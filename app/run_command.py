"""``runyard run``: submit a command to a Runyard server, and with ``--follow`` stream it.

A client of the HTTP API only (``urllib``: the command needs no dependency
the server does not). It prints the execution id and the page URL; with
``--follow`` they go to stderr instead, so that stdout carries exactly the
command's stdout, then it reads the run's event stream, reconnecting with
``Last-Event-ID`` if the connection drops (nothing lost, nothing twice), and
exits with the command's exit code: 124 for a timeout and 130 for a cancel,
as ``timeout(1)`` and shells do.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import Request, urlopen

EXIT_BY_STATUS = {"timed_out": 124, "cancelled": 130}
RECONNECTS = 30
# A request refused for now (503, 429) is sent again after its Retry-After,
# for up to this long in all; a longer wait (a full disk says 30 s) is an error
# to show rather than a silent pause.
RETRY_FOR_S = 30.0
RETRY_WAIT_MAX_S = 5.0


class ClientError(Exception):
    """The server could not be reached or refused the request."""


@dataclass
class SSE:
    id: str | None
    event: str
    data: str


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _call(method: str, url: str, body: Any = None,
          token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = Request(url, data=data, method=method,
                      headers={"Content-Type": "application/json", "Accept": "application/json",
                               **_auth(token)})
    waited = 0.0
    while True:
        try:
            with urlopen(request, timeout=30) as response:
                return response.status, json.load(response)
        except HTTPError as exc:
            try:
                message = json.load(exc)["error"]["message"]
            except Exception:
                message = f"HTTP {exc.code}"
            wait = _retry_after(exc)
            if wait is None or wait > RETRY_WAIT_MAX_S or waited + wait > RETRY_FOR_S:
                raise ClientError(message) from None
        except (URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach Runyard at {url.split('/api/')[0]} ({reason}); "
                              "is `runyard serve --allow-exec` running?") from None
        time.sleep(wait)
        waited += wait


def _retry_after(exc: HTTPError) -> float | None:
    """Seconds to wait before sending again, or None when it should not be.

    A 503 (the server is busy, or its database is) and a 429 (over the rate)
    are answered before anything is written, so the same request may be sent
    again after ``Retry-After``.
    """
    if exc.code not in (429, 503):
        return None
    try:
        return max(0.1, float(exc.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def submit(base: str, body: dict[str, Any], token: str | None = None) -> dict[str, Any]:
    """``POST /api/jobs``; the ``{"execution_id", "status"}`` answer."""
    _, answer = _call("POST", f"{base}/api/jobs", body, token)
    return dict(answer)


def page_url(base: str, execution_id: str) -> str:
    """The runs page with this run's drawer open."""
    return f"{base}/?run={quote(execution_id, safe='')}"


def events(lines: Iterator[bytes]) -> Iterator[SSE]:
    """Messages of an event stream (comments and pings skipped)."""
    event_id, event, data = None, "message", []
    for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data or event != "message":
                yield SSE(event_id, event, "\n".join(data))
            event_id, event, data = None, "message", []
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                event_id = value
            elif name == "event":
                event = value
            elif name == "data":
                data.append(value)


def exit_code(execution: dict[str, Any]) -> int:
    """The exit status that stands for how a run ended."""
    status, code = execution["status"], execution.get("exit_code")
    if status == "completed":
        return int(code or 0)
    if status == "failed":
        return int(code) if code else 1
    return EXIT_BY_STATUS.get(status, 1)


def follow(base: str, execution_id: str, out: IO[str], err: IO[str],
           token: str | None = None) -> int:
    """Print a run's stdout and stderr as they come; its exit status at the end."""
    url = f"{base}/api/executions/{quote(execution_id, safe='')}/stream"
    last: str | None = None
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream", **_auth(token)}
        if last is not None:
            headers["Last-Event-ID"] = last
        try:
            with urlopen(Request(url, headers=headers), timeout=60) as response:
                failures = 0
                for message in events(response):
                    if message.id is not None:
                        last = message.id
                    if message.event == "end":
                        _, answer = _call("GET", f"{base}/api/executions/"
                                                 f"{quote(execution_id, safe='')}",
                                          token=token)
                        return exit_code(answer["execution"])
                    if message.event in ("stdout", "stderr"):
                        _write(out if message.event == "stdout" else err, message.data)
        except HTTPError as exc:
            raise ClientError(f"the stream answered HTTP {exc.code}") from None
        except (URLError, OSError, http.client.HTTPException) as exc:
            failures += 1
            if failures > RECONNECTS:
                raise ClientError(f"lost the stream of {execution_id}: {exc}") from None
        # The server ended the stream early (a slow reader is dropped) or it broke:
        # resume after the last event seen.
        time.sleep(min(2.0, 0.1 * failures))


def _write(stream: IO[str], data: str) -> None:
    event = json.loads(data)
    message = event.get("message") or ""
    partial = isinstance(event.get("data"), dict) and event["data"].get("partial")
    # A line over 64 KB arrives in pieces: only its last piece ends the line.
    stream.write(message if partial else message + "\n")
    stream.flush()


def run(base: str, body: dict[str, Any], follow_output: bool,
        token: str | None = None) -> int:
    """``runyard run``: submit, print the id and page URL, follow when asked.
    ``token`` is sent as ``Authorization: Bearer`` (it needs the ``exec`` role)."""
    out, err = sys.stdout, sys.stderr
    try:
        answer = submit(base, body, token)
        execution_id = answer["execution_id"]
        where = err if follow_output else out
        print(execution_id, file=where)
        print(page_url(base, execution_id), file=where, flush=True)
        if answer["status"] == "waiting_for_interaction":
            print("waiting for approval on the page (or POST …/approve)", file=err, flush=True)
        if not follow_output:
            return 0
        try:
            return follow(base, execution_id, out, err, token)
        except KeyboardInterrupt:
            print(f"\nstopped following; the job goes on: {page_url(base, execution_id)}",
                  file=err)
            return 130
    except ClientError as exc:
        print(f"runyard: {exc}", file=err)
        return 2
