"""Toggle URLs computed on the server for the rail, presets and the drawer."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from app.store.inputs import STATUSES
from app.web import urls


def q(href: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(href).query, keep_blank_values=True)


def test_canonical_merges_sets_and_orders() -> None:
    items = [("run", "r1"), ("status", "failed"), ("q", "x"), ("status", "running,failed"),
             ("cursor", "abc"), ("tool", ""), ("label", "a=1"), ("label", "a=1")]
    assert urls.canonical(items) == (("status", "failed,running"), ("label", "a=1"),
                                     ("q", "x"), ("run", "r1"))


def test_empty_from_means_all_time_and_is_kept() -> None:
    assert urls.canonical([("from", "")]) == (("from", ""),)
    assert urls.href([("from", "")]) == "/?from="


def test_href_keeps_globs_and_commas_readable() -> None:
    assert urls.href([("tool", "github.*"), ("status", "a,b")]) == "/?tool=github.*&status=a,b"
    assert urls.href([]) == "/"
    assert urls.href([("q", "a&b=c d")]) == "/?q=a%26b%3Dc+d"


def test_toggle_adds_and_removes() -> None:
    base = urls.canonical([("status", "failed"), ("run", "r1")])
    added = urls.toggle(base, "status", "running")
    assert q(urls.href(added)) == [("status", "failed,running"), ("run", "r1")]
    removed = urls.toggle(added, "status", "failed")
    assert q(urls.href(removed)) == [("status", "running"), ("run", "r1")]
    assert urls.toggle(removed, "status", "running") == (("run", "r1"),)


def test_toggle_lifts_an_exclusion() -> None:
    base = urls.canonical([("not_status", "failed,running")])
    assert urls.toggle(base, "status", "failed") == (("status", "failed"),
                                                     ("not_status", "running"))


def test_only_and_exclude() -> None:
    base = urls.canonical([("tool", "a,b"), ("not_tool", "c"), ("q", "x")])
    assert urls.only(base, "tool", "b") == (("tool", "b"), ("q", "x"))
    assert urls.exclude(base, "tool", "a") == (("tool", "b"), ("not_tool", "c,a"), ("q", "x"))
    assert urls.exclude(base, "tool", "c") == (("tool", "a,b"), ("q", "x"))


def test_elicitation_is_a_single_value() -> None:
    base: urls.Items = ()
    on = urls.toggle(base, "elicitation", "true")
    assert on == (("elicitation", "true"),)
    assert urls.toggle(on, "elicitation", "false") == (("elicitation", "false"),)
    assert urls.toggle(on, "elicitation", "true") == ()
    assert urls.only(on, "elicitation", "false") == (("elicitation", "false"),)


def test_filter_changes_drop_the_page_position() -> None:
    base = urls.canonical([("status", "failed"), ("cursor", "abc"), ("ev_after", "10")])
    assert urls.toggle(base, "status", "running") == (("status", "failed,running"),)


def test_replace_and_reset() -> None:
    base = urls.canonical([("status", "failed"), ("from", "-1h"), ("run", "r"), ("tab", "events")])
    assert urls.replace(base, from_="-7d", to=None) == (
        ("status", "failed"), ("from", "-7d"), ("run", "r"), ("tab", "events"))
    assert urls.reset(base) == (("run", "r"), ("tab", "events"))
    assert urls.without(base, "run", "tab") == (("status", "failed"), ("from", "-1h"))


def test_values_with_special_characters_survive_the_url() -> None:
    value = 'weird & "quoted" <tool> #1'
    href = urls.href(urls.toggle((), "tool", value))
    assert q(href) == [("tool", value)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(STATUSES), max_size=8))
def test_toggling_twice_is_identity(clicks: list[str]) -> None:
    items: urls.Items = ()
    for status in clicks:
        before = items
        items = urls.toggle(items, "status", status)
        again = urls.toggle(items, "status", status)
        assert set(urls.values(again, "status")) == set(urls.values(before, "status"))
        chosen = urls.values(items, "status")
        assert len(chosen) == len(set(chosen))
