"""Access tokens and the server's secret key (issue 7).

A token is ``ryd_`` followed by 43 URL-safe characters: 256 random bits from
``secrets.token_urlsafe(32)``. Only its SHA-256 (hex) is stored. A fast hash
is the right one here: slow password hashes (bcrypt, scrypt, argon2) exist to
make guessing a *low-entropy* secret from its hash expensive, but nobody can
enumerate 2**256 candidates, so the hash only has to be one-way; and a fast
hash lets every request look its token up by an indexed equality match.

Token writes append no feed events: tokens are not runs, and nothing live
watches them.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, update

from app.auth.principal import ROLES
from app.db.dialect import Dialect, insert_ignoring_conflicts
from app.db.models import api_tokens, server_keys
from app.ids import new_id
from app.store.errors import Conflict, Invalid, NotFound
from app.times import now_ms

TOKEN_PREFIX = "ryd_"
# "ryd_" and 4 characters of the secret: enough to tell tokens apart in a list,
# far too few to help guess one.
SHOWN_CHARS = len(TOKEN_PREFIX) + 4
NAME_MAX = 64
SECRET_KEY_NAME = "secret"


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _row_out(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"],
        "roles": [r for r in row["roles"].split(",") if r],
        "scope_id": row["scope_id"], "prefix": row["prefix"],
        "created_at": row["created_at"], "revoked_at": row["revoked_at"],
    }


def check_roles(roles: Sequence[str]) -> list[str]:
    """The roles, deduplicated in ``ROLES`` order; ``Invalid`` naming a bad one."""
    wanted = [r.strip() for r in roles if r.strip()]
    if not wanted:
        raise Invalid(f"give at least one role: {', '.join(ROLES)}", {"path": ["roles"]})
    for role in wanted:
        if role not in ROLES:
            raise Invalid(f"unknown role {role!r}: use {', '.join(ROLES)}",
                          {"path": ["roles"], "role": role})
    return [r for r in ROLES if r in wanted]


def check_name(name: str) -> str:
    """A token name, stripped: 1 to 64 characters."""
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise Invalid(f"a token name has 1 to {NAME_MAX} characters (got {len(name)})",
                      {"path": ["name"]})
    return name


def create(conn: Connection, name: str, roles: Sequence[str],
           scope_id: str | None = None) -> tuple[dict[str, Any], str]:
    """Insert a new token; ``(row, the token itself)``. The token is not stored."""
    name, checked = check_name(name), check_roles(roles)
    if scope_id is not None and not (1 <= len(scope_id) <= 128):
        raise Invalid("a scope id has 1 to 128 characters", {"path": ["scope_id"]})
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = {"id": new_id(), "name": name, "roles": ",".join(checked), "scope_id": scope_id,
           "token_hash": hash_token(token), "prefix": token[:SHOWN_CHARS],
           "created_at": now_ms(), "revoked_at": None}
    conn.execute(api_tokens.insert().values(row))
    return _row_out(row), token


def list_all(conn: Connection) -> list[dict[str, Any]]:
    """Every token, revoked ones included, oldest first."""
    rows = conn.execute(select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.id))
    return [_row_out(r) for r in rows.mappings()]


def revoke(conn: Connection, id_or_name: str) -> dict[str, Any]:
    """Revoke one active token by id, or by name when exactly one active token has it."""
    active = api_tokens.c.revoked_at.is_(None)
    row = conn.execute(select(api_tokens).where(api_tokens.c.id == id_or_name)).mappings().first()
    if row is None:
        named = conn.execute(select(api_tokens).where(
            api_tokens.c.name == id_or_name, active)).mappings().all()
        if len(named) > 1:
            raise Conflict(f"{len(named)} active tokens are named {id_or_name!r}; revoke one "
                           f"by id: {', '.join(r['id'] for r in named)}",
                           {"ids": [r["id"] for r in named]}, code="ambiguous_name")
        if not named:
            raise NotFound(f"no active token with id or name {id_or_name!r}",
                           {"token": id_or_name}, code="token_not_found")
        row = named[0]
    if row["revoked_at"] is not None:
        return _row_out(row)
    at = now_ms()
    conn.execute(update(api_tokens).where(api_tokens.c.id == row["id"])
                 .values(revoked_at=at))
    return {**_row_out(row), "revoked_at": at}


def by_secret(conn: Connection, token: str) -> dict[str, Any] | None:
    """The active token whose secret is ``token``, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 256:
        return None
    row = conn.execute(select(api_tokens).where(
        api_tokens.c.token_hash == hash_token(token),
        api_tokens.c.revoked_at.is_(None))).mappings().first()
    return _row_out(row) if row else None


def by_id(conn: Connection, token_id: str) -> dict[str, Any] | None:
    """A token by id (revoked too: the caller checks ``revoked_at``), or None."""
    row = conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).mappings().first()
    return _row_out(row) if row else None


def any_token(conn: Connection) -> bool:
    """True once any token was created, revoked ones included: revoking the
    last token locks the server rather than opening it to loopback again."""
    return conn.execute(select(api_tokens.c.id).limit(1)).first() is not None


def read_secret(conn: Connection) -> bytes | None:
    """The server's secret key, or None before it is first needed."""
    value = conn.execute(select(server_keys.c.value).where(
        server_keys.c.name == SECRET_KEY_NAME)).scalar()
    return None if value is None else base64.urlsafe_b64decode(value)


def create_secret(conn: Connection, dialect: Dialect) -> bytes:
    """Create the server's secret key unless it exists, and return the one stored.
    Replicas that race here each insert ignoring conflicts, then read the winner."""
    stmt = insert_ignoring_conflicts(dialect, server_keys).values(
        name=SECRET_KEY_NAME, value=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    conn.execute(stmt)
    secret = read_secret(conn)
    assert secret is not None
    return secret
