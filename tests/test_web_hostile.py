"""The page under hostile input: security headers, and no query string makes it fail.

Hypothesis builds query strings from the page's own parameter names, unknown
names, and arbitrary values (control characters, quotes, any script, bytes
that are not UTF-8) and sends them to every GET route of the page, as a full
page and as each htmx fragment. Whatever comes back is never a 5xx, and an
error names what was wrong.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from app.web.pages import FRAGMENTS
from tests.test_web_pages import XSS_ATTR, XSS_SCRIPT, make

NAMES = ("status", "not_status", "trigger", "not_trigger", "tool", "not_tool", "label", "from",
         "to", "q", "elicitation", "min_duration_ms", "max_duration_ms", "sort", "limit",
         "cursor", "meta", "run", "tab", "live", "ev_level", "ev_after", "tool_q", "slow",
         "cmd", "part", "ref", "next")
PLAUSIBLE = ("", "failed", "running,completed", "github.*", "env=prod", "-1h", "-99999999w",
             "2026-11-21T10:00:00Z", "1700000000000", "true", "nope", "0", "-1", "201",
             "99999999999999999999", "created_at:asc", "duration_ms:desc", "events", "tools",
             "interactions", "h1", "tc-1", "status:failed since:1h", '"unclosed', "1e309",
             "NaN", "%", "_", "*", "?", "//evil.example", "javascript:alert(1)", XSS_SCRIPT,
             XSS_ATTR)
SEEDED_RUN = "h1"


def _value() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(PLAUSIBLE),
                     st.text(st.characters(codec="utf-8"), max_size=30),
                     st.text(st.sampled_from(list('\x00\x01\n\r\t"\'<>&%;=,:\\\u202e\u200b')),
                             max_size=8))


@st.composite
def query_strings(draw: st.DrawFn) -> str:
    """A raw query string: known and unknown names, any values, now and then raw bytes."""
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)))
        if draw(st.integers(0, 9)) == 0:
            # Percent-escapes that do not decode as UTF-8.
            value = quote_from_bytes(draw(st.binary(max_size=12)), safe="")
        else:
            value = quote(draw(_value()), safe="")
        parts.append(f"{quote(name, safe='')}={value}")
    return "&".join(parts)


@pytest.fixture
def hostile(client: TestClient) -> TestClient:
    """A few runs, one with a tool call, an event and a question, all with hostile text."""
    make(client, SEEDED_RUN, name=XSS_SCRIPT, code=XSS_ATTR, error=XSS_SCRIPT,
         labels={"env": "prod", XSS_ATTR: XSS_SCRIPT}, status="failed")
    for i in range(3):
        make(client, f"r{i}", status="completed")
    r = client.post(f"/api/executions/{SEEDED_RUN}/tool-calls",
                    json={"id": "tc-1", "tool_path": "github.issues.list", "args": {"q": XSS_ATTR}})
    assert r.status_code == 201, r.text
    r = client.post(f"/api/executions/{SEEDED_RUN}/events",
                    json={"events": [{"type": "log", "message": XSS_SCRIPT}]})
    assert r.status_code == 201, r.text
    return client


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def _tags(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every start tag of ``html`` with its attributes, as a browser would read them."""
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser.tags


def _check(r: object, where: str) -> None:
    status = r.status_code  # type: ignore[attr-defined]
    assert status < 500, (where, status, r.text[:500])  # type: ignore[attr-defined]
    if status >= 400:
        # An error says something: the page's error partial, or a plain message.
        assert len(r.text.strip()) > 0, where  # type: ignore[attr-defined]


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(query=query_strings(),
       target=st.sampled_from([None, *FRAGMENTS, "tool-call", "bogus"]),
       path=st.sampled_from(["/", "/runs", "/runs/command", f"/runs/{SEEDED_RUN}/value",
                             f"/runs/{SEEDED_RUN}/tool-calls/tc-1", "/runs/nope/value",
                             f"/runs/{SEEDED_RUN}/job", "/signin"]))
def test_no_query_string_makes_a_page_fail(hostile: TestClient, query: str,
                                            target: str | None, path: str) -> None:
    headers = {"HX-Request": "true", "HX-Target": target} if target else {}
    r = hostile.get(f"{path}?{query}", headers=headers, follow_redirects=False)
    _check(r, f"{path}?{query} [{target}]")
    if 300 <= r.status_code < 400:
        # Only ever to a path of this site, whatever the query said (cmd=, next=) ...
        location = r.headers["location"]
        assert location.startswith("/") and not location.startswith(("//", "/\\")), location
        # ... and that page loads too.
        _check(hostile.get(location, follow_redirects=False), location)
    if r.headers.get("content-type", "").startswith("text/html"):
        assert "<script>alert" not in r.text and "<img src=x" not in r.text


def test_page_headers_allow_no_inline_script_and_no_framing(hostile: TestClient) -> None:
    for url in ("/", f"/?run={SEEDED_RUN}&tab=tools", "/?status=bogus"):
        r = hostile.get(url)
        csp = dict(part.strip().split(" ", 1) for part in
                   r.headers["content-security-policy"].split(";") if part.strip())
        assert "unsafe-inline" not in csp["script-src"] and "unsafe-eval" not in csp["script-src"]
        assert csp["script-src"] == "'self'", csp
        assert "unsafe-inline" not in csp.get("style-src", "")
        assert csp["frame-ancestors"] == "'none'"
        assert csp["default-src"] == "'none'" and csp["base-uri"] == "'none'"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "same-origin"
        # Nothing inline that the policy would have to allow: scripts only by src,
        # no event handler or style attribute on any element.
        tags = _tags(r.text)
        assert all(dict(attrs).get("src") for tag, attrs in tags if tag == "script"), url
        bad = [(tag, name) for tag, attrs in tags for name, _ in attrs
               if name.startswith("on") or name == "style"]
        assert not bad, (url, bad)
        assert not any(tag in ("img", "iframe", "object", "embed") for tag, _ in tags), url


def test_fragments_and_values_carry_the_headers_too(hostile: TestClient) -> None:
    responses = [
        hostile.get("/?status=failed", headers={"HX-Request": "true", "HX-Target": "list"}),
        hostile.get(f"/runs/{SEEDED_RUN}/tool-calls/tc-1", headers={"HX-Request": "true"}),
        hostile.get(f"/runs/{SEEDED_RUN}/value?part=execution&ref=code"),
        hostile.get("/runs/command?cmd=" + quote(XSS_ATTR)),
    ]
    for r in responses:
        assert r.status_code in (200, 400), r.text
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    # The whole value as plain text: a browser must never sniff it into HTML.
    assert responses[2].headers["content-type"].startswith("text/plain")
    assert responses[2].text == XSS_ATTR
