"""The page's renderings for live streams (``format=html``): list rows and trace events.

The live layer calls these without knowing templates: it is handed this object
by the app factory. Renderings use only the row or event they are given (they
run on the event loop and must not read the database).
"""

from __future__ import annotations

from typing import Any

from app.live.messages import EventRenderer, RowRenderer
from app.times import now_ms
from app.web.context import PageContext, parse_state
from app.web.drawer import events_view
from app.web.templating import templates


def _render(name: str, context: dict[str, Any]) -> str:
    return templates.env.get_template(name).render(context)


class LiveHtml:
    """Row and event partials, as the live streams' message data."""

    def row_renderer(self, items: list[tuple[str, str]]) -> tuple[str, RowRenderer]:
        """Rows as the page showing ``items`` draws them (links keep its filters)."""
        ctx = PageContext(state=parse_state(items), now=now_ms())
        href_base = ctx.run_href_base

        def render(row: dict[str, Any]) -> str:
            return _render("_row.html", {"rows": [row], "open_run": None, "slow": None,
                                         "href_base": href_base, "now": now_ms()})

        return href_base, render

    def event_renderer(self, execution_id: str) -> EventRenderer:
        """Console rows (and header pieces) for the drawer of ``execution_id``."""

        def render(event: dict[str, Any]) -> str:
            data = event.get("data") if isinstance(event.get("data"), dict) else {}
            return _render("_live_event.html", {
                "e": events_view(execution_id, [event])[0],
                "status": data.get("to"), "pct": data.get("pct"), "stage": data.get("stage"),
            })

        return render


live_html = LiveHtml()
