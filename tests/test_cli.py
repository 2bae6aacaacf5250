"""The ``runyard`` command, run as a user runs it: a real process on a real database."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, text

from app.db.engine import normalize_url

# The installed console script when there is one, so its entry point is tested too.
_SCRIPT = Path(sys.executable).with_name("runyard")
RUNYARD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "app.cli"]
TABLES = {"execution", "execution_tool_call", "execution_interaction", "execution_event", "job"}


def _env(**extra: str) -> dict[str, str]:
    # The developer's own RUNYARD_* settings must not leak into these runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNYARD_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def runyard(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNYARD, *args], env=_env(**env), capture_output=True, text=True,
                          timeout=120, check=False)


def _scalar(url: str, sql: str) -> Any:
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def test_serve_refuses_a_public_address_without_tokens(tmp_path: Path) -> None:
    db = tmp_path / "runyard.db"
    done = runyard("serve", "--host", "0.0.0.0", "--database-url", f"sqlite:///{db}")
    assert done.returncode != 0
    assert "refusing to listen on 0.0.0.0" in done.stderr
    assert "runyard token create --role read --name NAME" in done.stderr
    assert not db.exists(), "it refused before touching the database"


def test_serve_refuses_a_worker_count_out_of_range(tmp_path: Path) -> None:
    db = tmp_path / "runyard.db"
    for bad in ("0", "65"):
        done = runyard("serve", "--workers", bad, "--database-url", f"sqlite:///{db}")
        assert done.returncode == 2
        assert f"--workers (or RUNYARD_WORKERS) must be 1 to 64, not {bad}" in done.stderr
    done = runyard("serve", "--database-url", f"sqlite:///{db}", RUNYARD_WORKERS="two")
    assert done.returncode == 2
    assert "RUNYARD_WORKERS: invalid literal for int()" in done.stderr
    assert not db.exists(), "it refused before touching the database"


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new/runyard.db"  # the folder does not exist yet
    done = runyard("db", "upgrade", RUNYARD_DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    engine = create_engine(normalize_url(url))
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()
    assert _scalar(url, "SELECT version_num FROM alembic_version")


def test_demo_writes_the_executions_asked_for(database_url: str) -> None:
    done = runyard("demo", "--executions", "200", "--database-url", database_url)
    assert done.returncode == 0, done.stderr
    assert "wrote 200 demo executions" in done.stdout
    assert _scalar(database_url, "SELECT count(*) FROM execution") == 200
    created = "SELECT count(*) FROM execution_event WHERE type = 'execution.created'"
    assert _scalar(database_url, created) == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return json.load(response)


def _wait_until_up(proc: subprocess.Popen[str], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"runyard serve exited {proc.returncode}:\n{log.read_text()}")
        try:
            _get_json(url)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"runyard serve did not answer {url} within 60 s:\n{log.read_text()}")


def test_serve_seeds_an_empty_database_and_answers(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*RUNYARD, "serve", "--port", str(port)],
            env=_env(RUNYARD_DATABASE_URL=f"sqlite:///{tmp_path}/runyard.db",
                     RUNYARD_DEMO_EXECUTIONS="120"),
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )
    try:
        _wait_until_up(proc, f"{base}/healthz", log)
        assert _get_json(f"{base}/healthz") == {"ok": True}
        listed = _get_json(f"{base}/api/executions?limit=5")
        assert len(listed["executions"]) == 5
        assert listed["meta"]["total"] == 120
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught.
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "the database was empty: wrote 120 demo executions" in log.read_text()


# -- tokens (issue 7) ----------------------------------------------------------

def test_token_create_list_revoke(database_url: str) -> None:
    made = runyard("token", "create", "--role", "read,exec", "--name", "ops",
                   "--database-url", database_url)
    assert made.returncode == 0, made.stderr
    token = made.stdout.splitlines()[-1]
    assert re.fullmatch(r"ryd_[A-Za-z0-9_-]{43}", token), made.stdout
    assert "ops" in made.stdout and "read,exec" in made.stdout
    stored = _scalar(database_url, "SELECT token_hash FROM api_token")
    assert stored == hashlib.sha256(token.encode()).hexdigest(), "stored hashed"
    assert runyard("token", "create", "--role", "write", "--name", "ops",
                   "--scope", "team-a", "--database-url", database_url).returncode == 0

    listed = runyard("token", "list", "--database-url", database_url)
    assert listed.returncode == 0, listed.stderr
    assert token not in listed.stdout and token[:8] in listed.stdout
    assert "team-a" in listed.stdout and listed.stdout.count("ops") == 2

    ambiguous = runyard("token", "revoke", "ops", "--database-url", database_url)
    assert ambiguous.returncode == 2
    assert "2 active tokens are named 'ops'" in ambiguous.stderr
    token_id = _scalar(database_url, "SELECT id FROM api_token WHERE roles = 'read,exec'")
    revoked = runyard("token", "revoke", token_id, "--database-url", database_url)
    assert revoked.returncode == 0, revoked.stderr
    assert _scalar(database_url, "SELECT count(*) FROM api_token WHERE revoked_at IS NOT NULL") == 1
    # Now the name is one active token's.
    assert runyard("token", "revoke", "ops", "--database-url", database_url).returncode == 0
    assert runyard("token", "revoke", "nobody",
                   "--database-url", database_url).stderr.strip().endswith("'nobody'")


def test_token_create_refuses_bad_roles_and_names(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/runyard.db"
    bad_role = runyard("token", "create", "--role", "admin", "--name", "x", "--database-url", url)
    assert bad_role.returncode == 2 and "unknown role 'admin'" in bad_role.stderr
    long_name = runyard("token", "create", "--role", "read", "--name", "n" * 65,
                        "--database-url", url)
    assert long_name.returncode == 2 and "1 to 64 characters" in long_name.stderr
    assert _scalar(url, "SELECT count(*) FROM api_token") == 0


def test_serve_listens_on_a_public_address_once_a_token_exists(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/runyard.db"
    token = runyard("token", "create", "--role", "read", "--name", "r",
                    "--database-url", url).stdout.splitlines()[-1]
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*RUNYARD, "serve", "--host", "0.0.0.0", "--port", str(port), "--no-demo",
             "--database-url", url],
            env=_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, f"{base}/healthz", log)
        try:
            urllib.request.urlopen(f"{base}/api/executions", timeout=5)
            raise AssertionError("answered without a token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        request = urllib.request.Request(f"{base}/api/executions",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)["executions"] == []
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
