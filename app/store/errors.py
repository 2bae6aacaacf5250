"""Errors the store raises; the API layer maps each ``code`` to an HTTP status."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exc as sa_exc


class StoreError(Exception):
    """A request the store refuses, with a stable machine-readable code."""

    code = "store_error"

    def __init__(self, message: str, detail: dict[str, Any] | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}
        if code:
            self.code = code


class NotFound(StoreError):
    code = "not_found"


class Conflict(StoreError):
    code = "conflict"


class Invalid(StoreError):
    """Valid JSON that the data makes impossible (a field path goes in ``detail``)."""

    code = "invalid_body"


class BadParameter(StoreError):
    """A query parameter that is unknown or cannot be parsed."""

    code = "bad_parameter"


def execution_not_found(execution_id: str) -> NotFound:
    return NotFound(f"no execution with id {execution_id!r}", {"execution_id": execution_id},
                    code="execution_not_found")


# -- the database itself failing (issue 7) -----------------------------------
# Every driver error that is the storage's fault, not the request's, becomes
# one of three 503s, here and nowhere else: the API, OTLP and the page answer
# them (``app.api.errors``); anything not listed stays a logged 500.

#: What a route may see when the database fails (SQLAlchemy wraps every driver
#: error in ``DBAPIError``; ``TimeoutError`` is a pool that had no connection).
STORAGE_EXCEPTIONS: tuple[type[Exception], ...] = (sa_exc.DBAPIError, sa_exc.TimeoutError)


class StorageFailure(StoreError):
    """The database cannot do what was asked right now (HTTP 503).

    ``code`` is ``storage_full``, ``storage_read_only`` or
    ``storage_unavailable``; ``retry_after_s`` is a hint for the client.
    """

    code = "storage_unavailable"

    def __init__(self, code: str, message: str, driver_code: str,
                 retry_after_s: int) -> None:
        super().__init__(message, {"reason": code.removeprefix("storage_"),
                                   "driver_code": driver_code}, code=code)
        self.retry_after_s = retry_after_s


_FULL = ("storage_full",
         "the database's disk is full, so nothing was written: free space on the "
         "disk that holds the database (or raise its quota), then retry; reads still work", 30)
_READ_ONLY = ("storage_read_only",
              "the database is read-only, so nothing was written: make the database "
              "(its file and folder, or the PostgreSQL database) writable again, then "
              "retry; reads still work", 30)
_UNAVAILABLE = ("storage_unavailable",
                "the database is unavailable ({what}): retry in a few seconds; "
                "a retried create with the same id is safe", 2)

# SQLite primary result codes (``sqlite_errorname`` without its extended part).
_SQLITE = {
    "SQLITE_FULL": (_FULL, ""),
    "SQLITE_READONLY": (_READ_ONLY, ""),
    "SQLITE_IOERR": (_UNAVAILABLE, "its file could not be read or written"),
    "SQLITE_CANTOPEN": (_UNAVAILABLE, "its file could not be opened"),
    "SQLITE_BUSY": (_UNAVAILABLE, "it stayed locked by another writer"),
    "SQLITE_LOCKED": (_UNAVAILABLE, "it stayed locked by another writer"),
    "SQLITE_PROTOCOL": (_UNAVAILABLE, "its lock protocol failed"),
    "SQLITE_NOLFS": (_UNAVAILABLE, "its file is too large for this system"),
    "SQLITE_CORRUPT": (_UNAVAILABLE, "its file is damaged; restore it from a backup"),
    "SQLITE_NOTADB": (_UNAVAILABLE, "its file is not a database"),
}
# Messages of SQLite builds whose errors carry no code name.
_SQLITE_MESSAGES = {
    "database or disk is full": "SQLITE_FULL",
    "attempt to write a readonly database": "SQLITE_READONLY",
    "disk i/o error": "SQLITE_IOERR",
    "unable to open database file": "SQLITE_CANTOPEN",
    "database is locked": "SQLITE_BUSY",
}
# PostgreSQL SQLSTATEs (exact, then by class: the first two characters).
_POSTGRES = {
    "53100": (_FULL, ""),                       # disk_full
    "25006": (_READ_ONLY, ""),                  # read_only_sql_transaction
    "57P01": (_UNAVAILABLE, "the server is shutting down"),      # admin_shutdown
    "57P02": (_UNAVAILABLE, "the server is restarting"),         # crash_shutdown
    "57P03": (_UNAVAILABLE, "the server is not accepting connections yet"),
    "57P04": (_UNAVAILABLE, "the database was dropped"),
    "57P05": (_UNAVAILABLE, "the connection timed out"),
    "53": (_UNAVAILABLE, "the server is out of resources"),      # memory, connections
    "08": (_UNAVAILABLE, "the connection to the server failed"),
    "58": (_UNAVAILABLE, "the server had an I/O error"),
    "XX": (_UNAVAILABLE, "the server reported an internal error"),
}


def storage_failure(exc: BaseException) -> StorageFailure | None:
    """The 503 that ``exc`` amounts to when it is the database failing (disk
    full, read-only, unreachable, restarting, locked for too long), else None:
    a constraint violation or a bad query is a bug or the request's fault."""
    if isinstance(exc, sa_exc.TimeoutError):
        return _failure(_UNAVAILABLE, "no connection was free in time", "pool_timeout")
    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    orig = exc.orig
    name = getattr(orig, "sqlite_errorname", None)
    if name is None and type(orig).__module__ == "sqlite3":
        text = str(orig).lower()
        name = next((n for m, n in _SQLITE_MESSAGES.items() if m in text), None)
    if name is not None or type(orig).__module__ == "sqlite3":
        # Extended codes (SQLITE_IOERR_WRITE) are read by their primary code.
        kind = _SQLITE.get("_".join((name or "").split("_")[:2]))
        return _failure(*kind, name) if kind and name else None
    state = getattr(orig, "sqlstate", None)
    if state:
        kind = _POSTGRES.get(state) or _POSTGRES.get(state[:2])
        return _failure(*kind, state) if kind else None
    if exc.connection_invalidated or isinstance(
            exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        # A connection that broke or could not be made has no SQLSTATE.
        return _failure(_UNAVAILABLE, "the connection to the server failed", "connection")
    return None


def _failure(kind: tuple[str, str, int], what: str, driver_code: str) -> StorageFailure:
    code, message, retry = kind
    return StorageFailure(code, message.format(what=what), driver_code, retry)
