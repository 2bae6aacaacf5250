"""A private PostgreSQL cluster for tests that stop and restart the server.

The shared server (127.0.0.1:5432) serves every other test, so a test that
restarts PostgreSQL gets its own: ``initdb`` into a temporary folder, a free
port, a socket folder of its own, trust authentication. PostgreSQL refuses to
run as root, so as root the commands run as the ``postgres`` user (through
``runuser``) in a folder it owns. ``fsync=off``: these tests kill the server
process, never the machine, and the page cache survives a process.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port


class ClusterUnavailable(RuntimeError):
    """This machine cannot run a private cluster (the message says why)."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                   key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    if found:
        return Path(found[-1])
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise ClusterUnavailable("no PostgreSQL server binaries (initdb, pg_ctl) found")
    return Path(pg_ctl).parent


@dataclass
class Cluster:
    """A running private cluster; its data, socket and log live in ``root``."""

    root: Path
    port: int
    bindir: Path
    as_postgres: bool

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              cwd=self.root)

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        """``pg_ctl -D data ARGS -w``; raises with the server log on failure."""
        done = self._run("pg_ctl", "-D", str(self.root / "data"), "-l",
                         str(self.root / "server.log"), "-w", "-t", str(int(timeout)), *args,
                         timeout=timeout + 10)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {done.stdout}{done.stderr}"
                               f"\n{self.log_tail()}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=60")
        self.pg_ctl("start", "-o", options)

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m MODE`` (``fast``: clean shutdown; ``immediate``:
        the server processes quit at once and the next start recovers from WAL)."""
        self.pg_ctl("restart", "-m", mode)

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("stop", "-m", mode)

    def create_database(self, name: str) -> None:
        done = self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U",
                         "postgres", name)
        if done.returncode != 0:
            raise RuntimeError(f"createdb {name}: {done.stderr}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.root / "server.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    """Create and start a private cluster; stop and remove it afterwards.

    Raises :class:`ClusterUnavailable` when this machine cannot run one."""
    bindir = _bindir()
    as_postgres = os.geteuid() == 0
    if as_postgres and shutil.which("runuser") is None:
        raise ClusterUnavailable("running as root without runuser: PostgreSQL refuses root")
    # Not under pytest's tmp_path: its parent is private to root, and the
    # postgres user must reach the data and socket folders.
    root = Path(tempfile.mkdtemp(prefix="runyard-pg-"))
    cluster = Cluster(root, free_port(), bindir, as_postgres)
    try:
        if as_postgres:
            try:
                shutil.chown(root, "postgres", "postgres")
            except (LookupError, PermissionError) as exc:
                raise ClusterUnavailable(
                    f"cannot hand {root} to the postgres user: {exc}") from None
        init = cluster._run("initdb", "-D", str(root / "data"), "-U", "postgres", "-A", "trust",
                            "--no-sync", "-E", "UTF8", "--locale", "C")
        if init.returncode != 0:
            raise ClusterUnavailable(f"initdb failed: {init.stderr.strip()[:500]}")
        cluster.start()
        try:
            yield cluster
        finally:
            # Already stopped, or stuck: nothing else to do.
            with contextlib.suppress(Exception):
                cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)
