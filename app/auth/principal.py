"""The principal: who a request acts as, set once per request by the auth
middleware and read by every layer that must respect roles or scopes.

The web, API and live layers never look at headers or cookies themselves; they
call ``principal_of(request)`` and use ``read_scope`` for what they may see and
``write_scope`` for where their writes land.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ROLES = ("read", "write", "exec")
DEFAULT_SCOPE = "default"
# Where the middleware leaves the principal in the ASGI scope.
SCOPE_KEY = "runyard.principal"

Via = Literal["bearer", "session", "local"]


@dataclass(frozen=True)
class Principal:
    """A token's identity, or the local user while no token exists."""

    roles: frozenset[str]
    # None: every scope (an unscoped token, or the local user).
    scope_id: str | None = None
    token_id: str | None = None
    name: str = "local"
    via: Via = "local"
    # The session's CSRF secret (only for via="session").
    csrf: str | None = None

    def can(self, role: str) -> bool:
        """True when this principal holds ``role``."""
        return role in self.roles

    @property
    def read_scope(self) -> str | None:
        """The scope reads are limited to; None means all scopes."""
        return self.scope_id

    @property
    def write_scope(self) -> str:
        """The scope new rows are written to."""
        return self.scope_id if self.scope_id is not None else DEFAULT_SCOPE

    @property
    def actor(self) -> dict[str, str]:
        """Who acted, as a job's record keeps it: the token's name and id (never
        its secret), and how it came (``bearer``, ``session`` or ``local``)."""
        who = {"name": self.name, "via": self.via}
        if self.token_id is not None:
            who["token_id"] = self.token_id
        return who

    def sees(self, row_scope: str) -> bool:
        """True when a row of ``row_scope`` is visible to this principal."""
        return self.scope_id is None or self.scope_id == row_scope


# While no token exists, a loopback client may read and write; running
# commands is still gated by --allow-exec and the exec policy.
LOCAL = Principal(roles=frozenset(ROLES))


def principal_of(request: Any) -> Principal:
    """The principal of a Starlette request (or an ASGI scope dict).

    Without the auth middleware (a bare app in a unit test) this is the local
    user, the same as a server with no tokens.
    """
    scope = request if isinstance(request, dict) else request.scope
    return scope.get(SCOPE_KEY, LOCAL)
