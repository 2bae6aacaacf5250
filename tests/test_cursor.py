"""Signed cursors: whatever a client sends as ``cursor``, the answer is a page
of its own list or a 400 ``bad_parameter`` naming ``cursor``; never a 500,
never a position it made up, never another scope's rows."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.db.engine import open_database
from app.store import Store
from app.store.cursor import SORTS, Cursor
from app.store.errors import BadParameter
from app.store.inputs import parse_ingest
from app.store.params import parse_list_params

KEY = b"k" * 32
CURSOR_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=",
            max_size=300),
    st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.tuples(st.binary(max_size=120), st.binary(max_size=40)).map(
        lambda p: ".".join(base64.urlsafe_b64encode(x).decode().rstrip("=") for x in p)),
)
SCOPES = st.one_of(st.none(), st.sampled_from(["alpha", "beta", "default", "", "*"]))


def _refused(text: str, key: bytes, scope: str | None, sort: str) -> BadParameter:
    with pytest.raises(BadParameter) as err:
        Cursor.decode(text, key, scope, sort)
    assert err.value.detail == {"parameter": "cursor"}
    assert err.value.message.startswith("cursor:")
    return err.value


@given(CURSOR_TEXT, SCOPES, st.sampled_from(SORTS))
def test_random_text_is_never_a_cursor(text: str, scope: str | None, sort: str) -> None:
    _refused(text, KEY, scope, sort)


@given(st.sampled_from(SORTS), st.integers(0, 2**63 - 1), st.text(
    alphabet="abcdefghij0123456789-._:@", min_size=1, max_size=128), SCOPES, st.data())
def test_any_bit_flip_of_a_valid_cursor_is_refused(sort: str, value: int, run_id: str,
                                                   scope: str | None, data: st.DataObject,
                                                   ) -> None:
    cursor = Cursor(sort, value, run_id)
    text = cursor.encode(KEY, scope)
    assert Cursor.decode(text, KEY, scope, sort) == cursor
    raw = bytearray(text.encode())
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    _refused(raw.decode("latin-1"), KEY, scope, sort)
    # Flips inside the decoded payload or signature, re-encoded as valid base64.
    head, tail = text.split(".")
    part = data.draw(st.sampled_from([0, 1]))
    decoded = bytearray(base64.urlsafe_b64decode([head, tail][part] + "=="))
    bit = data.draw(st.integers(0, len(decoded) * 8 - 1))
    decoded[bit // 8] ^= 1 << (bit % 8)
    spliced = base64.urlsafe_b64encode(bytes(decoded)).decode().rstrip("=")
    _refused(".".join([spliced, tail] if part == 0 else [head, spliced]), KEY, scope, sort)


@given(st.sampled_from(SORTS), st.integers(0, 10**15), SCOPES, SCOPES, st.sampled_from(SORTS))
def test_a_cursor_replayed_in_another_scope_sort_or_server_is_refused(
        sort: str, value: int, made_in: str | None, read_in: str | None, read_sort: str,
) -> None:
    text = Cursor(sort, value, "run-1").encode(KEY, made_in)
    if (made_in, sort) == (read_in, read_sort):
        assert Cursor.decode(text, KEY, read_in, read_sort).value == value
        _refused(text, b"another server's key", read_in, read_sort)
        return
    error = _refused(text, KEY, read_in, read_sort)
    if made_in == read_in:
        assert f"made for sort={sort}" in error.message


# -- through the store, on both databases ----------------------------------------------------

@pytest.fixture
def two_scopes(database_url: str) -> Iterator[Store]:
    db = open_database(database_url)
    store = Store(db)
    for scope in ("alpha", "beta"):
        store.ingest(parse_ingest({"executions": [
            {"id": f"{scope}-{i}", "created_at": 1_700_000_000_000 + i * 1000,
             "status": "completed", "started_at": 1_700_000_000_000,
             "completed_at": 1_700_000_000_000 + i * 10} for i in range(5)]}), scope_id=scope)
    yield store
    db.dispose()


def _page(store: Store, scope: str | None, *params: tuple[str, str]) -> dict[str, object]:
    return store.list_executions(parse_list_params(params, scope_id=scope))


def test_pages_of_a_scope_stay_in_it_and_its_cursors_work_nowhere_else(
        two_scopes: Store) -> None:
    for sort in SORTS:
        seen: list[str] = []
        cursor = None
        while True:
            body = _page(two_scopes, "alpha", ("sort", sort), ("limit", "2"),
                         *([("cursor", cursor)] if cursor else []))
            seen += [r["id"] for r in body["executions"]]  # type: ignore[attr-defined]
            cursor = body["next_cursor"]
            if cursor is None:
                break
            assert isinstance(cursor, str)
            for scope in ("beta", None, "default"):
                with pytest.raises(BadParameter) as err:
                    _page(two_scopes, scope, ("sort", sort), ("cursor", cursor))
                assert err.value.detail == {"parameter": "cursor"}
        assert sorted(seen) == [f"alpha-{i}" for i in range(5)], sort


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=CURSOR_TEXT, scope=SCOPES, sort=st.sampled_from(SORTS))
def test_the_store_answers_any_cursor_with_bad_parameter(two_scopes: Store, text: str,
                                                         scope: str | None, sort: str) -> None:
    if not text or "\x00" in text:
        return  # no cursor at all, or refused by the parameter parser (tested there)
    with pytest.raises(BadParameter) as err:
        _page(two_scopes, scope, ("sort", sort), ("cursor", text))
    assert err.value.detail == {"parameter": "cursor"}
