"""The page's session: a signed cookie holding a token id and a CSRF secret.

Signing is HMAC-SHA256 over the JSON payload with the server's secret
(``store.server_secret()`` or ``RUNYARD_SECRET_KEY``), which is all
itsdangerous or Starlette's ``SessionMiddleware`` would add, minus a
dependency; and ``SessionMiddleware`` wants its key when the app is built,
before the lifespan has opened the database that holds it.

The cookie names the token rather than carrying its rights: every request
looks the token up again (through the auth cache), so revoking a token ends
its sessions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from app.times import now_ms

COOKIE_NAME = "runyard_session"
MAX_AGE_S = 7 * 24 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs and checks small JSON payloads with an issue time."""

    def __init__(self, secret: bytes, salt: str = "runyard.session") -> None:
        # A per-purpose key: a value signed for one use never verifies for another.
        self._key = hmac.new(secret, salt.encode(), hashlib.sha256).digest()

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest())

    def sign(self, payload: dict[str, Any]) -> str:
        """``payload`` (plus its issue time) as ``body.signature``."""
        body = _b64(json.dumps({**payload, "iat": now_ms()}, separators=(",", ":")).encode())
        return f"{body}.{self._mac(body)}"

    def unsign(self, value: str, max_age_s: float) -> dict[str, Any] | None:
        """The payload of a value this signer made less than ``max_age_s`` ago, else None."""
        body, _, mac = value.partition(".")
        if not body or not mac or len(value) > 4096:
            return None
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("iat"), int):
            return None
        if now_ms() - payload["iat"] > max_age_s * 1000:
            return None
        return payload


def new_session(signer: Signer, token_id: str) -> tuple[str, str]:
    """A fresh session for ``token_id``: ``(cookie value, its CSRF secret)``."""
    csrf = secrets.token_urlsafe(32)
    return signer.sign({"t": token_id, "c": csrf}), csrf


def cookie_header(value: str, *, secure: bool, max_age_s: int = MAX_AGE_S) -> str:
    """The ``Set-Cookie`` value: HttpOnly (no script reads it), SameSite=Lax (no
    cross-site POST carries it), Path=/, and Secure behind TLS."""
    parts = [f"{COOKIE_NAME}={value}", "Path=/", f"Max-Age={max_age_s}", "HttpOnly",
             "SameSite=Lax"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def clear_cookie_header(*, secure: bool) -> str:
    """A ``Set-Cookie`` value that deletes the session cookie."""
    return cookie_header("", secure=secure, max_age_s=0)
