"""Statements built once per filter shape and reused, for the list, ``meta`` and
the page's counts.

Building a SQLAlchemy statement and its cache key costs 0.05-0.3 ms of Python
(~1.5 ms per page's ``meta``), as much as SQLite takes to run the small ones.
SQLAlchemy's ``lambda_stmt`` caches by the code of a lambda and cannot follow a
filter whose number of conditions varies, so the statements are kept here,
keyed by what they are for and the filter without its moving values.

The memo is process-wide: a statement holds no connection, no data and no
value of a request (those are bind parameters), so sharing it is like sharing
SQLAlchemy's own compiled cache. It is bounded, and a dict's get and set are
atomic under the GIL; two threads building the same statement at once both
get a correct one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from sqlalchemy import BigInteger, ColumnElement, bindparam

from app.db.dialect import Dialect
from app.db.models import executions
from app.store.filters import ExecutionFilter

S = TypeVar("S")
# The values of a filter that change from one load of a view to the next (a
# 24 h window moves every millisecond), as named bind parameters.
FROM_MS = bindparam("from_ms", type_=BigInteger)
_BINDS = {"from_ms": FROM_MS, "to_ms": bindparam("to_ms", type_=BigInteger),
          "scope_id": bindparam("scope_id", type_=executions.c.scope_id.type)}
_KEPT = 256
_memo: dict[tuple[Any, ...], Any] = {}


def bound(kind: str, dialect: Dialect, flt: ExecutionFilter,
          build: Callable[[list[ColumnElement[bool]]], S]) -> tuple[S, dict[str, Any]]:
    """``build(flt's conditions)``, and the parameters to execute it with.

    The time range and the scope go in as bind parameters, so a statement is
    built once per ``kind`` and filter shape, and reused. ``build`` may depend
    on nothing but its conditions and ``kind``; other values are bind
    parameters of its own, given at execution.
    """
    params = {name: value for name, value in (
        ("from_ms", flt.from_ms), ("to_ms", flt.to_ms), ("scope_id", flt.scope_id))
        if value is not None}
    key = (kind, dialect, replace(flt, from_ms=None, to_ms=None, scope_id=None), *params)
    stmt = _memo.get(key)
    if stmt is None:
        stmt = build(replace(flt, **{n: _BINDS[n] for n in params}).conditions(dialect))
        if len(_memo) >= _KEPT:    # only many distinct searches get here
            _memo.clear()
        _memo[key] = stmt
    return stmt, params
