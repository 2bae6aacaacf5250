"""Who may run commands: the one check in front of every job route, JSON and HTML.

Running commands is remote code execution by design, so besides the switch
(``--allow-exec`` / ``RUNYARD_ALLOW_EXEC=1``) two browser attacks are refused
while there are no tokens to tell a user from a web page:

- cross-site requests: a page on another site can make the browser POST to
  ``http://127.0.0.1:8000`` (a form, or a ``no-cors`` fetch with a text body).
  Browsers send ``Origin`` with such a POST; one that is not this server's own
  is refused. Clients that are not browsers (curl, ``runyard run``) send none.
- DNS rebinding: a hostile name that resolves to 127.0.0.1 makes the page
  same-origin with us. Its ``Host`` header still carries the hostile name; the
  auth middleware refuses such a request (every request, not only these)
  before it reaches a route, so there is no second check here.

Once tokens exist these checks give way to the token's ``exec`` role: a Bearer
token is never sent by a browser on its own, and a session's unsafe requests
must carry its CSRF secret (``app.auth.middleware``). The role is checked here
too, not only by the route policy, because answering a job's approval gate
through the generic resolve route (a ``write`` route) also runs a command.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.requests import Request

from app.auth.principal import principal_of

ENABLE_HINT = ("start the server with --allow-exec (runyard serve --allow-exec) or set "
               "RUNYARD_ALLOW_EXEC=1")


def is_loopback(host: str) -> bool:
    """True for a loopback name or address (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exec_refusal(request: Request) -> tuple[str, dict[str, str]] | None:
    """Why this request may not run commands (message, detail), or None."""
    settings = request.app.state.settings
    if not settings.allow_exec:
        return (f"running commands is disabled on this server: {ENABLE_HINT}",
                {"reason": "exec_disabled", "enable": ENABLE_HINT})
    principal = principal_of(request)
    if not principal.can("exec"):
        return (f"running commands needs a token with the 'exec' role; {principal.name!r} "
                f"has {', '.join(sorted(principal.roles)) or 'none'} (create one with "
                "`runyard token create --role exec --name NAME`)",
                {"reason": "role_missing", "role": "exec"})
    if principal.via != "local":
        return None
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host", ""):
        return ("refused: a cross-site request may not run commands",
                {"reason": "cross_origin"})
    return None
