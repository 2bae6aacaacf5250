"""Per-client request rate: a token bucket per token (or address), in process.

Each key's bucket holds up to ``burst`` requests and refills at ``per_s`` a
second; a request that finds it empty is answered 429 ``rate_limited`` with
``Retry-After`` (whole seconds, at least 1) and never reaches the app: as
JSON on the API's paths, and on the page's as the page's own error (the app's
``state.page_error``), so a person who reloads too fast reads a sentence, not
a JSON document.

Intentional divergences from a "global" limiter:

- **In process.** With several replicas behind a load balancer each one
  limits its own share of a client's traffic, so a client may get up to
  the number of replicas times the rate in all. That is enough for what the limit is for (one
  runaway client must not starve the others on a replica), and a shared
  limiter would cost a database or cache round trip on every request.
- **Bounded memory.** A bucket that has been idle long enough to be full again
  is the same as no bucket, so it is dropped; keys are kept in least recently
  used order, so finding them is O(1) per request. A hard cap on the number
  of keys (many addresses at once) drops the oldest first.
- **After authentication.** The key is the principal's token, so the auth
  middleware runs first; a request it refuses (401) is not counted here.

``/healthz`` (load balancers poll it) and ``/static/`` (a page load fetches
several assets at once, and they cost nothing) are not limited.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import refusal
from app.limits.keys import client_key

MAX_KEYS = 100_000
_EXEMPT_PREFIXES = ("/static/",)
_EXEMPT_PATHS = frozenset({"/healthz"})


class Buckets:
    """Token buckets by key: ``take(key)`` spends one request or says how long
    until one is available."""

    def __init__(self, per_s: float, burst: int, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s, self.burst, self.max_keys, self.clock = per_s, burst, max_keys, clock
        # key -> (tokens left, when last updated), least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._refill_s = burst / per_s

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Spend one request of ``key``'s bucket: 0.0 when allowed, else the
        seconds until the next request would be."""
        now = self.clock()
        self._evict(now)
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.per_s
        self._buckets[key] = (tokens, now)
        return wait

    def _evict(self, now: float) -> None:
        # The front is the least recently used: stop at the first one still needed.
        while self._buckets:
            key, (_, last) = next(iter(self._buckets.items()))
            if now - last < self._refill_s and len(self._buckets) < self.max_keys:
                return
            del self._buckets[key]


class RateLimitMiddleware:
    """Answers 429 ``rate_limited`` once a client is over its request rate."""

    def __init__(self, app: ASGIApp, per_s: float, burst: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        # Either at 0 (or below) turns the limit off.
        self.buckets = Buckets(per_s, burst, clock=clock) if per_s > 0 and burst > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.buckets is None or scope["type"] != "http" or scope["path"] in _EXEMPT_PATHS
                or scope["path"].startswith(_EXEMPT_PREFIXES)):
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(client_key(scope))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        await self._refused(scope, max(1, math.ceil(wait)))(scope, receive, send)

    def _refused(self, scope: Scope, retry: int) -> Response:
        assert self.buckets is not None
        per_s, burst = self.buckets.per_s, self.buckets.burst
        limit = f"the limit is {per_s:g} per second (bursts of {burst}); retry in {retry} s"
        # The page titles it "Too many requests".
        return refusal(scope, "rate_limited", f"too many requests: {limit}",
                       {"limit_per_s": per_s, "burst": burst, "retry_after_s": retry},
                       status=429, retry_after_s=retry, page_message=limit)
