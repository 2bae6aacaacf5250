"""The filter command parser: examples, errors, and text -> query -> text round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.store.errors import BadParameter
from app.store.inputs import STATUSES
from app.store.params import parse_list_params
from app.web.filter_command import current_token, parse_command, render_command
from app.web.urls import canonical


def params(text: str) -> list[tuple[str, str]]:
    command = parse_command(text)
    assert command.ok, command.errors
    return list(command.params)


def test_issue_example() -> None:
    text = ('status:failed,timed_out tool:github.* trigger:cli -status:running '
            '"rate limit" since:1h sort:duration:desc')
    assert params(text) == [
        ("status", "failed,timed_out"), ("not_status", "running"), ("trigger", "cli"),
        ("tool", "github.*"), ("from", "-1h"), ("q", "rate limit"),
        ("sort", "duration_ms:desc"),
    ]
    assert render_command(params(text)) == (
        'status:failed,timed_out -status:running trigger:cli tool:github.* since:1h '
        'rate limit sort:duration:desc')


@pytest.mark.parametrize(("text", "expected"), [
    ("duration:>5s", [("min_duration_ms", "5001")]),
    ("duration:>=5s", [("min_duration_ms", "5000")]),
    ("duration:<200ms", [("max_duration_ms", "199")]),
    ("duration:<=1.5s", [("max_duration_ms", "1500")]),
    ("duration:>1m duration:<1h", [("min_duration_ms", "60001"),
                                   ("max_duration_ms", "3599999")]),
    ("since:15m", [("from", "-15m")]),
    ("since:all", [("from", "")]),
    ("after:2026-11-21T10:00:00Z before:2026-11-21T11:00:00Z",
     [("from", "2026-11-21T10:00:00Z"), ("to", "2026-11-21T11:00:00Z")]),
    ("before:2h", [("to", "-2h")]),
    ("after:1700000000000", [("from", "1700000000000")]),
    ("label:env=prod label:team=data", [("label", "env=prod"), ("label", "team=data")]),
    ("status:failed status:running", [("status", "failed,running")]),
    ("-tool:fs.* -trigger:unknown", [("not_trigger", "unknown"), ("not_tool", "fs.*")]),
    ("sort:time:asc", [("sort", "created_at:asc")]),
    ("sort:time:desc", []),
    ("sort:duration", [("sort", "duration_ms:desc")]),
    ("elicitation:yes", [("elicitation", "true")]),
    ('tool:"my tool,other"', [("tool", "my tool,other")]),
    ('"a \\"quoted\\" word" plain', [("q", 'a "quoted" word plain')]),
    ("Status:failed", [("status", "failed")]),
    ("", []),
    ("   ", []),
])
def test_parses(text: str, expected: list[tuple[str, str]]) -> None:
    assert params(text) == expected


@pytest.mark.parametrize(("text", "fragment"), [
    ("stauts:failed", "unknown key 'stauts'"),
    ("status:done", "unknown status 'done'"),
    ("status:", "give a value"),
    ("duration:5s", "duration:>5s"),
    ("duration:>abc", "duration:>5s"),
    ("since:yesterday", "relative time"),
    ("since:2026-11-21T10:00:00Z", "relative time"),
    ("after:soon", "absolute"),
    ("sort:name", "sort: use"),
    ("elicitation:maybe", "true or false"),
    ("label:novalue", "key=value"),
    ("-label:a=b", "cannot be negated"),
    ("-word", "can be negated"),
    ('"unclosed', "unclosed quote"),
    ("since:1h since:2h", "given twice"),
    ("http://example.com", "unknown key 'http'"),
])
def test_errors_are_reported_not_dropped(text: str, fragment: str) -> None:
    command = parse_command(text)
    assert not command.ok
    assert any(fragment in e.message for e in command.errors), command.errors


def test_error_positions_point_at_the_token() -> None:
    text = "status:failed bogus:1 tool:x"
    (error,) = parse_command(text).errors
    assert text[error.start:error.end] == "bogus:1"


def test_every_valid_command_is_accepted_by_the_list_api() -> None:
    text = ("status:failed -status:running trigger:cli tool:github.* label:env=prod "
            "duration:>5s duration:<1h since:7d q sort:duration:asc elicitation:true")
    parse_list_params(params(text))


@pytest.mark.parametrize("q", ["A:", "status:failed", "-x", 'say "hi"', "  padded ", "a,b"])
def test_phrases_that_look_like_syntax_are_quoted(q: str) -> None:
    text = render_command([("q", q)])
    assert params(text) == [("q", q)]


def test_current_token() -> None:
    assert current_token("status:fa") == ("status", "fa", False)
    assert current_token("-tool:git") == ("tool", "git", True)
    assert current_token("stat") == (None, "stat", False)
    assert current_token("status:failed ") == (None, "", False)


# -- property tests: text -> query -> text is stable ------------------------------

word = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='"\\'),
               min_size=1, max_size=8)
value = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters=","),
                min_size=1, max_size=10).filter(lambda s: s.strip() == s and s)
durations = st.integers(min_value=0, max_value=10**9)
relative = st.builds(lambda n, u: f"-{n}{u}", st.integers(0, 999),
                     st.sampled_from(["ms", "s", "m", "h", "d", "w"]))
absolute = st.sampled_from(["2026-11-21T10:00:00Z", "2026-11-21T10:00:00.123Z",
                            "1700000000000", "2026-11-21 10:00:00"])


@st.composite
def url_params(draw: st.DrawFn) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in ("status", "not_status"):
        picked = draw(st.lists(st.sampled_from(STATUSES), max_size=3, unique=True))
        if picked:
            out.append((name, ",".join(picked)))
    for name in ("trigger", "not_trigger", "tool", "not_tool"):
        picked = draw(st.lists(value, max_size=3, unique=True))
        if picked:
            out.append((name, ",".join(picked)))
    for _ in range(draw(st.integers(0, 2))):
        out.append(("label", draw(word.filter(lambda w: "=" not in w)) + "=" + draw(value)))
    if draw(st.booleans()):
        out.append(("elicitation", draw(st.sampled_from(["true", "false"]))))
    if draw(st.booleans()):
        out.append(("min_duration_ms", str(draw(durations))))
    if draw(st.booleans()):
        out.append(("max_duration_ms", str(draw(durations))))
    if draw(st.booleans()):
        out.append(("from", draw(st.one_of(relative, absolute, st.just("")))))
    if draw(st.booleans()):
        out.append(("to", draw(st.one_of(relative, absolute))))
    if draw(st.booleans()):
        out.append(("q", draw(st.text(min_size=1, max_size=20).filter(str.strip))))
    if draw(st.booleans()):
        out.append(("sort", draw(st.sampled_from(
            ["created_at:asc", "duration_ms:desc", "duration_ms:asc"]))))
    return out


def _normal(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    # Values in the URL may carry spaces the command trims; compare canonical forms.
    return list(canonical(items))


@settings(max_examples=300, deadline=None)
@given(url_params())
def test_url_to_text_to_url(items: list[tuple[str, str]]) -> None:
    items = [(n, v) for n, v in items if "\x00" not in v]
    text = render_command(items)
    command = parse_command(text)
    assert command.ok, (text, command.errors)
    assert _normal(list(command.params)) == _normal(items), text
    assert render_command(command.params) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('status:faile,d -tool:gh.*"q x\\since1hsort'
                                             'duration:>5ms<=label=a b')), max_size=40))
def test_any_text_that_parses_round_trips(text: str) -> None:
    command = parse_command(text)
    if not command.ok:
        return
    again = parse_command(render_command(command.params))
    assert again.ok, (text, render_command(command.params), again.errors)
    assert again.params == command.params


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_parser_never_raises(text: str) -> None:
    parse_command(text)


# Anything a person can paste: control characters, quotes, backslashes, any
# script, with the command's own syntax mixed in so keys and values are hit too.
_piece = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=6),
    st.text(st.sampled_from(list('":,-=<>*\\ \t\n\r\x00\x0b\x1b\u200b\u202e\ufeff')),
            max_size=4),
    st.sampled_from(["status:", "tool:", "label:", "since:", "after:", "before:", "duration:>",
                     "sort:", "elicitation:", "-status:", "-trigger:", "all", "1h", "failed"]))
hostile_text = st.lists(_piece, max_size=12).map("".join)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(hostile_text)
def test_any_text_parses_or_points_at_what_is_wrong(text: str) -> None:
    command = parse_command(text)   # never raises: a result or inline errors
    for error in command.errors:
        assert error.message.strip(), error
        assert 0 <= error.start <= error.end <= len(text), (text, error)
    assert isinstance(current_token(text), tuple)
    if not command.ok:
        return
    # What parses renders back to a command that means the same ...
    again = parse_command(render_command(command.params))
    assert again.ok and again.params == command.params, (text, again)
    # ... and the list API takes it, except a NUL (no database can search for one):
    # that is a 400 naming the parameter, which the page shows as its error.
    if "\x00" in text:
        with pytest.raises(BadParameter, match="NUL"):
            parse_list_params(command.params)
    else:
        parse_list_params(command.params)
