"""Processes: a job's environment, its process group, and a worker's identity.

Linux-specific by design: process groups and ``/proc``. Killing a group is
how no grandchild outlives its job; ``/proc/<pid>/stat``'s start time is how
a worker makes sure a pid it read from the database still names the same
process before it kills it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
from typing import Any

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a command inherits from the worker: enough to find programs and print
# text. Nothing else, so RUNYARD_DATABASE_URL (and its password) never leaks.
INHERITED = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE",
             "TZ", "TMPDIR")
# Output reaches Runyard through a pipe, where Python would block-buffer it.
DEFAULTS = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}


def job_env(extra: dict[str, str] | None, source: dict[str, str] | None = None,
            ) -> dict[str, str]:
    """The minimal environment of a job, with the job's own ``env`` on top."""
    parent = os.environ if source is None else source
    env = dict(DEFAULTS)
    env.update({k: parent[k] for k in INHERITED if k in parent})
    env.update(extra or {})
    return env


def job_argv(command: dict[str, Any]) -> list[str]:
    """``argv`` as given, or a ``shell`` string under ``/bin/sh -c``."""
    if command.get("argv") is not None:
        return [str(a) for a in command["argv"]]
    return ["/bin/sh", "-c", str(command["shell"])]


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat[stat.rindex(b")") + 2:].split()
    return int(fields[19])   # field 22, starttime


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to every process of group ``pgid``; False when none is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Only a recycled pgid we do not own answers this: not ours to kill.
        return False
    return True


def kill_orphans(pgid: int | None, started: int | None) -> bool:
    """SIGKILL what a lost worker's job left running, unless ``pgid`` now names
    another process. (While any process of a group lives, Linux does not hand
    its id to a new process; so when ``/proc/<pgid>`` is gone, whatever still
    answers to the group is the old job's.)"""
    if pgid is None:
        return False
    now = start_ticks(pgid)
    if now is not None and started is not None and now != started:
        return False
    return kill_group(pgid, signal.SIGKILL)


def hostname() -> str:
    """This machine's name, as it appears in lease owner ids."""
    return socket.gethostname().replace("/", "_")


def new_owner_id() -> str:
    """A worker's lease owner id: ``host/pid/random``."""
    return f"{hostname()}/{os.getpid()}/{secrets.token_hex(4)}"


def owner_pid(owner: str, host: str) -> int | None:
    """The pid in an owner id from ``host`` (None for another host or a bad id)."""
    parts = owner.rsplit("/", 2)
    if len(parts) != 3 or parts[0] != host:
        return None
    with contextlib.suppress(ValueError):
        return int(parts[1])
    return None
