"""The sign-in page: a token for a session cookie (``/signin``), and sign-out.

Plain forms (no htmx, no script): ``POST /signin`` answers a 303 to ``next``
(only a path on this site: never another host, so the form cannot be used to
bounce a user elsewhere) with the session cookie set, or the form again with
its error. ``POST /signout`` drops the cookie.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from app.auth.authenticator import Authenticator
from app.auth.session import clear_cookie_header, cookie_header, new_session
from app.web.templating import render


def safe_next(target: str | None) -> str:
    """``target`` when it is a path on this site, else ``/``."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\r\n\t\\"):
        return "/"
    return target


def _auth(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


async def _page(request: Request, next_url: str, error: str | None = None,
                status: int = 200) -> Response:
    return render(request, "signin.html", {
        "next_url": next_url, "error": error,
        "no_tokens": not await _auth(request).has_tokens(),
    }, status=status)


async def signin_form(request: Request) -> Response:
    """``GET /signin``: the form."""
    return await _page(request, safe_next(request.query_params.get("next")))


async def signin(request: Request) -> Response:
    """``POST /signin``: check the token, start a session, go to ``next``."""
    form = await request.form()
    token = str(form.get("token") or "").strip()
    next_url = safe_next(str(form.get("next") or ""))
    auth = _auth(request)
    # Straight from the database, not the cache: a token created a moment ago works.
    row = await run_in_threadpool(auth.store.token_by_secret, token) if token else None
    if row is None:
        return await _page(request, next_url, "That token is not valid: it is unknown, "
                           "mistyped or revoked.", status=401)
    if "read" not in row["roles"] and "exec" not in row["roles"]:
        return await _page(request, next_url, f"The token {row['name']!r} may only "
                           f"{', '.join(row['roles'])}: the page needs a token with the "
                           "'read' role.", status=403)
    value, _ = new_session(auth.signer, row["id"])
    response = RedirectResponse(next_url, status_code=303)
    response.headers.append("Set-Cookie", cookie_header(value, secure=auth.cookie_secure))
    return response


async def signout(request: Request) -> Response:
    """``POST /signout``: end the session."""
    response = RedirectResponse("/signin", status_code=303)
    response.headers.append("Set-Cookie",
                            clear_cookie_header(secure=_auth(request).cookie_secure))
    return response


routes = [
    Route("/signin", signin_form, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
]
