"""The q substring search: case folding beyond ASCII on both databases."""

from __future__ import annotations

from app.store import Store
from app.store.filters import ExecutionFilter
from app.store.inputs import ExecutionCreate
from app.store.params import ListQuery


def test_q_folds_case_beyond_ascii(store: Store) -> None:
    store.create_execution(ExecutionCreate(id="u1", name="Rapport d'ÉMILE à Zürich"))
    store.create_execution(ExecutionCreate(id="u2", name="plain ascii"))
    for needle in ("émile", "ZÜRICH", "d'émile à"):
        page = store.list_executions(ListQuery(filter=ExecutionFilter(q=needle)))
        assert [r["id"] for r in page["executions"]] == ["u1"], needle
