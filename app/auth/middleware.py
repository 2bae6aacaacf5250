"""Who is asking, and may they: the one gate in front of every route.

Pure ASGI (not ``BaseHTTPMiddleware``), so SSE streams pass through unbuffered.
It leaves the principal at ``scope["runyard.principal"]`` and the role the
request needs at ``scope["runyard.role"]`` for every later layer.

- **No active token** (a fresh install): a loopback client is ``LOCAL`` (all
  roles; running commands still needs ``--allow-exec``). Any other client is
  refused: tokens are needed first. So is a request whose ``Host`` is neither a
  loopback name nor the configured host: a hostile name resolving to 127.0.0.1
  (DNS rebinding) would otherwise make its page same-origin with us and read
  every run.
- **Tokens exist**: ``Authorization: Bearer <token>``, else the session
  cookie; else 401 (a page is redirected to ``/signin``). A missing role is a
  403 naming it (``app.auth.policy`` says which role a request needs).
- **CSRF**: a request authenticated by the session cookie with an unsafe
  method must carry the session's CSRF secret in ``X-CSRF-Token`` or, for a
  form post, a ``csrf_token`` field. A Bearer request needs none (a browser
  never adds that header by itself). ``asgi-csrf`` would fit a plain cookie
  app, but here the secret lives in our own session and Bearer requests are
  exempt; the check is twenty lines.
"""

from __future__ import annotations

import functools
import hmac
from urllib.parse import quote, urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import ApiError, error_response, storage_response
from app.auth.authenticator import Authenticator
from app.auth.policy import PUBLIC, ROLE_KEY, required_role
from app.auth.principal import LOCAL, SCOPE_KEY, Principal
from app.auth.session import COOKIE_NAME, CSRF_FIELD, CSRF_HEADER
from app.exec_policy import is_loopback
from app.store.errors import STORAGE_EXCEPTIONS, storage_failure

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Who a request to a public path is, without credentials, once tokens exist.
ANONYMOUS = Principal(roles=frozenset(), name="anonymous", via="local")
# A form post that carries its CSRF field is one of ours: small.
_FORM_MAX_BYTES = 1024 * 1024


def create_hint(role: str) -> str:
    """How to get a token with ``role``."""
    return f"runyard token create --role {role} --name NAME"


class AuthMiddleware:
    """Sets the principal of each request, or answers 401/403 itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        auth: Authenticator | None = getattr(scope["app"].state, "auth", None)
        if auth is None:  # the lifespan has not run: nothing to check against
            await error_response("unavailable", "the server is starting")(scope, receive, send)
            return
        try:
            refusal, receive = await self._gate(auth, scope, receive)
        except STORAGE_EXCEPTIONS as exc:
            # The token lookup failed because the database did: a 503 like the
            # routes' (the app's exception handlers sit inside this middleware).
            failure = storage_failure(exc)
            if failure is None:
                raise
            refusal = storage_response(failure)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _gate(self, auth: Authenticator, scope: Scope,
                    receive: Receive) -> tuple[Response | None, Receive]:
        """The refusal (or None, the principal then set in ``scope``), and the
        ``receive`` to go on with (a form read for its CSRF field is replayed)."""
        method, path = scope["method"], scope["path"]
        role = scope[ROLE_KEY] = required_role(method, path)
        headers = Headers(scope=scope)
        if not await auth.has_tokens():
            if role != PUBLIC and (refusal := _local_refusal(scope, headers)) is not None:
                return refusal, receive
            scope[SCOPE_KEY] = LOCAL
            return None, receive

        principal, bad_bearer = await _credentials(auth, headers)
        if role != PUBLIC:
            if principal is None:
                return _unauthorized(scope, headers, role, bad_bearer), receive
            if not principal.can(role):
                return error_response(
                    "forbidden",
                    f"this needs a token with the {role!r} role; {principal.name!r} has "
                    f"{', '.join(sorted(principal.roles))} (create one with "
                    f"`{create_hint(role)}`)",
                    {"role": role, "token": principal.name}), receive
        if principal is None:
            # A public path without credentials: no roles (never the LOCAL default).
            scope[SCOPE_KEY] = ANONYMOUS
            return None, receive
        if (principal.via == "session" and method not in SAFE_METHODS
                and path.rstrip("/") != "/signin"):
            ok, receive = await _csrf_ok(scope, receive, headers, principal.csrf or "")
            if isinstance(ok, Response):
                return ok, receive
            if not ok:
                return error_response(
                    "csrf_failed", "this form or request is missing its CSRF token (or it is "
                    "stale): reload the page and try again", status=403), receive
        scope[SCOPE_KEY] = principal
        return None, receive


def _local_refusal(scope: Scope, headers: Headers) -> Response | None:
    """Why a request may not act as the local user (no token exists), or None."""
    client = scope.get("client")
    host_header = headers.get("host", "")
    reason = _local_reason(None if client is None else str(client[0]), host_header,
                           scope["app"].state.settings.host)
    if reason == "tokens_needed":
        return error_response(
            "forbidden", "this server has no access tokens yet, so only this machine may "
            f"use it; create one with `{create_hint('read')}` and send it as "
            "Authorization: Bearer <token>", {"reason": "tokens_needed"})
    if reason == "host_not_allowed":
        return error_response(
            "forbidden", f"refused: {host_header!r} is not this server's address (only "
            "loopback names and the configured host are served)",
            {"reason": "host_not_allowed"})
    return None


# A client sends the same address and Host on every request: parsing them
# (ipaddress, urlsplit) cost ~5 µs a request. Bounded.
@functools.lru_cache(maxsize=1024)
def _local_reason(client: str | None, host_header: str, configured: str) -> str | None:
    """``tokens_needed``, ``host_not_allowed`` or None (the request may act locally)."""
    if client is None or not is_loopback(client):
        return "tokens_needed"
    host = urlsplit(f"//{host_header}").hostname or ""
    if not (is_loopback(host) or host == configured):
        return "host_not_allowed"
    return None


async def _credentials(auth: Authenticator, headers: Headers,
                       ) -> tuple[Principal | None, bool]:
    """``(principal or None, True when a Bearer token was sent but is not valid)``."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        principal = await auth.bearer(token.strip())
        return principal, principal is None
    cookie = _cookie(headers)
    if cookie:
        return await auth.session(cookie), False
    return None, False


def _cookie(headers: Headers) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE_NAME and value:
            return value
    return None


def _unauthorized(scope: Scope, headers: Headers, role: str, bad_bearer: bool) -> Response:
    target = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}"
                              if scope.get("query_string") else "")
    signin = "/signin?next=" + quote(target, safe="")
    htmx = headers.get("hx-request") == "true"
    page = (scope["method"] in ("GET", "HEAD") and "text/html" in headers.get("accept", "")
            and not bad_bearer)
    if page and not htmx:
        return RedirectResponse(signin, status_code=303)
    message = ("the token sent is not valid (unknown or revoked)" if bad_bearer else
               f"this needs a token with the {role!r} role")
    response = error_response(
        "unauthorized", f"{message}: send Authorization: Bearer <token>, or sign in at "
        f"/signin (create a token with `{create_hint(role)}`)", {"role": role})
    if htmx:
        response.headers["HX-Redirect"] = signin
    return response


async def _csrf_ok(scope: Scope, receive: Receive, headers: Headers,
                   expected: str) -> tuple[bool | Response, Receive]:
    """Whether the request carries the session's CSRF secret, and the ``receive``
    to hand on (a form's body is read here, then replayed to the route)."""
    sent = headers.get(CSRF_HEADER)
    if sent is not None:
        return bool(expected) and hmac.compare_digest(sent, expected), receive
    if headers.get("content-type", "").split(";")[0].strip().lower() not in FORM_TYPES:
        return False, receive
    messages: list[Message] = []
    size = 0
    try:
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > _FORM_MAX_BYTES:
                return error_response("body_too_large", "a form post is at most 1 MB",
                                      {"max_bytes": _FORM_MAX_BYTES}), receive
            if message["type"] != "http.request" or not message.get("more_body"):
                break
    except ApiError as exc:  # the body limit, raised from inside receive()
        return error_response(exc.code, exc.message, exc.detail), receive

    def replayer() -> Receive:
        queue = list(messages)

        async def replay() -> Message:
            return queue.pop(0) if queue else await receive()
        return replay

    try:
        form = await Request(scope, replayer()).form()
    except Exception:  # a malformed multipart body: it carries no token either
        return False, replayer()
    try:
        field = form.get(CSRF_FIELD)
    finally:
        await form.close()
    ok = isinstance(field, str) and bool(expected) and hmac.compare_digest(field, expected)
    return ok, replayer()
