"""The per-client limits as one middleware for the app factory."""

from __future__ import annotations

from starlette.types import ASGIApp

from app.limits.admission import AdmissionMiddleware
from app.limits.rate import RateLimitMiddleware
from app.limits.streams import StreamLimitMiddleware
from app.settings import Settings


def limits(app: ASGIApp, settings: Settings) -> ASGIApp:
    """``app`` behind the request rate limit, the cap on requests in flight,
    then the stream count.

    Starlette's ``Middleware(limits, settings=...)`` calls this like a class.
    It goes after the auth middleware in the list: both limits key on the
    principal it sets. The rate comes first, so a refused stream still costs
    a request (a client retrying in a loop is slowed down too), and a client
    over its own rate hears so (429) before it hears that the server is busy.
    """
    inner = StreamLimitMiddleware(app, settings.max_streams_per_client)
    admitted = AdmissionMiddleware(inner, settings.max_in_flight)
    return RateLimitMiddleware(admitted, settings.rate_limit_per_s, settings.rate_limit_burst)
