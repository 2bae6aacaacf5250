"""Who a limit counts against: the token a request acts as, else its address."""

from __future__ import annotations

from starlette.types import Scope

from app.auth.principal import principal_of


def client_key(scope: Scope) -> str:
    """``token:<id>`` for a request with a token (bearer or a session signed in
    with one), else ``addr:<client host>``.

    A token is one client wherever it connects from, so its requests share a
    limit; without tokens (loopback only) the address is all there is. The
    address is the socket's peer as the server reports it: behind a proxy it is
    the proxy's unless the server is told to trust forwarded headers
    (uvicorn's ``--forwarded-allow-ips``).
    """
    token_id = principal_of(scope).token_id
    if token_id is not None:
        return f"token:{token_id}"
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}"
