"""Credentials to a principal: Bearer tokens and session cookies, with a cache.

Every request that needs a token would otherwise read the database once or
twice before doing its own work; lookups are kept for ``Settings.auth_cache_s``
(2 s) per process instead. So a revoke (or a new first token) takes effect on
every replica within that time, never later. ``auth_cache_s=0`` turns the
cache off (the tests do).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool

from app.auth.policy import effective_roles
from app.auth.principal import Principal, Via
from app.auth.session import MAX_AGE_S, Signer
from app.store import Store
from app.store.tokens import hash_token

T = TypeVar("T")
# Bounded: a flood of made-up tokens must not grow the cache for ever.
_MAX_ENTRIES = 4096


class _Cache:
    """Values for ``ttl_s``; one load per key at a time: when an entry runs out
    under load, the requests in flight share one query instead of each running
    their own (the soak benchmark saw that stampede cost ~8 % of the server)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._items: dict[str, tuple[float, Any]] = {}
        self._loading: dict[str, asyncio.Task[Any]] = {}

    async def get(self, key: str, load: Callable[[], T]) -> T:
        if self.ttl_s <= 0:
            return await run_in_threadpool(load)
        hit = self._items.get(key)
        if hit is not None and hit[0] > time.monotonic():
            value: T = hit[1]
            return value
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(key, load))
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        # Shielded: one caller's cancellation (a client gone) must not cancel
        # the load the others wait for.
        result: T = await asyncio.shield(task)
        return result

    async def _load(self, key: str, load: Callable[[], T]) -> T:
        value = await run_in_threadpool(load)
        if len(self._items) >= _MAX_ENTRIES:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl_s, value)
        return value


def principal_of_token(row: dict[str, Any], via: Via, csrf: str | None = None) -> Principal:
    """The principal a token row acts as."""
    return Principal(roles=effective_roles(row["roles"]), scope_id=row["scope_id"],
                     token_id=row["id"], name=row["name"], via=via, csrf=csrf)


class Authenticator:
    """Looks up tokens and sessions for the auth middleware and the sign-in page."""

    def __init__(self, store: Store, secret: bytes, cache_s: float,
                 cookie_secure: bool) -> None:
        self.store = store
        self.signer = Signer(secret)
        self.cookie_secure = cookie_secure
        self._cache = _Cache(cache_s)

    async def has_tokens(self) -> bool:
        """True once any token exists, revoked or not (cached)."""
        return await self._cache.get("any", self.store.has_tokens)

    async def by_secret(self, token: str) -> dict[str, Any] | None:
        """The active token ``token``, or None (cached by its hash, never by itself)."""
        return await self._cache.get("h:" + hash_token(token),
                                     lambda: self.store.token_by_secret(token))

    async def bearer(self, token: str) -> Principal | None:
        """The principal of an ``Authorization: Bearer`` token, or None."""
        row = await self.by_secret(token)
        return principal_of_token(row, "bearer") if row else None

    async def session(self, cookie: str) -> Principal | None:
        """The principal of a session cookie whose token is still active, or None."""
        payload = self.signer.unsign(cookie, MAX_AGE_S)
        if payload is None:
            return None
        token_id, csrf = payload.get("t"), payload.get("c")
        if not isinstance(token_id, str) or not isinstance(csrf, str):
            return None
        row = await self._cache.get("i:" + token_id, lambda: self.store.token_by_id(token_id))
        if row is None or row["revoked_at"] is not None:
            return None
        return principal_of_token(row, "session", csrf)
