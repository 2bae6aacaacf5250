"""Which role a request needs: one table of (methods, path pattern, role).

The first matching rule wins; a request no rule matches needs ``read`` (an
unknown path then answers 404 to a reader and 401 to anyone else, so probing
for routes tells a stranger nothing). ``PUBLIC`` paths need no token at all.

Roles do not nest, except that ``exec`` also grants ``read`` (an operator must
see what they approve); ``write`` does not (an exporter needs no read access).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

PUBLIC = "public"
_ANY = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_READS = frozenset({"GET", "HEAD"})
_POST = frozenset({"POST"})
_WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})
_JOB_ACTIONS = "(approve|reject|decline|cancel|rerun)"

# (methods, path regex (full match, a trailing slash allowed), role)
RULES: tuple[tuple[frozenset[str], str, str], ...] = (
    (_READS, r"/healthz", PUBLIC),
    (_ANY, r"/static/.*", PUBLIC),
    (_READS | _POST, r"/signin", PUBLIC),
    # Public so that a session whose token was revoked can still be ended.
    (_POST, r"/signout", PUBLIC),
    # Running commands.
    (_POST, r"/api/jobs", "exec"),
    (_POST, rf"/api/executions/[^/]+/{_JOB_ACTIONS}", "exec"),
    (_POST, r"/runs/jobs", "exec"),
    (_POST, rf"/runs/[^/]+/{_JOB_ACTIONS}", "exec"),
    # Recording runs: the JSON API and OTLP. (Answering a job's approval gate
    # through the generic resolve route also needs exec: app.exec_policy.)
    (_WRITES, r"/api/executions(/.*)?", "write"),
    (_WRITES, r"/api/ingest", "write"),
    (_POST, r"/v1/traces", "write"),
)
DEFAULT_ROLE = "read"

_COMPILED = tuple((methods, re.compile(pattern + "/?"), role) for methods, pattern, role in RULES)


# Where the auth middleware leaves the role it looked up, for later layers.
ROLE_KEY = "runyard.role"


def role_of(scope: dict[str, Any]) -> str:
    """The role a request needs, as the auth middleware found it (looked up
    here when it did not run: a bare middleware stack)."""
    role = scope.get(ROLE_KEY)
    return role if role is not None else required_role(scope["method"], scope["path"])


def required_role(method: str, path: str) -> str:
    """The role a request needs (``PUBLIC``: none)."""
    method = method.upper()
    for methods, pattern, role in _COMPILED:
        if method in methods and pattern.fullmatch(path):
            return role
    return DEFAULT_ROLE


def effective_roles(roles: Iterable[str]) -> frozenset[str]:
    """A token's roles with what they imply: ``exec`` grants ``read``."""
    out = set(roles)
    if "exec" in out:
        out.add("read")
    return frozenset(out)
