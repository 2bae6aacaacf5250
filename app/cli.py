"""The ``runyard`` command line: serve, worker, run, db upgrade, demo, token."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from app.exec_policy import is_loopback
from app.process import tune_process
from app.settings import Settings

log = logging.getLogger("runyard")
# `serve --workers`: a bound against typos; past the machine's cores, more
# processes only add contention.
MAX_WORKERS = 64


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
    return Settings.from_env(database_url=getattr(args, "database_url", None), **extra)


def _open_store(settings: Settings):  # type: ignore[no-untyped-def]
    from app.db.engine import open_database
    from app.store import Store

    return Store(open_database(settings.database_url, settings.read_pool_size))


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade

    settings = _settings(args)
    upgrade(settings.database_url)
    print(f"schema is up to date on {settings.database_url}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade
    from app.demo import seed, send_otlp_demo

    if args.otlp:
        # Through a running server's POST /v1/traces, like any instrumented program.
        runs, dropped = send_otlp_demo(args.otlp)
        print(f"sent {runs} demo runs over OTLP to {args.otlp}"
              + (f" ({dropped} spans could not be delivered)" if dropped else ""))
        return 1 if dropped else 0
    settings = _settings(args)
    upgrade(settings.database_url)
    store = _open_store(settings)
    try:
        written = seed(store, args.executions)
    finally:
        store.db.dispose()
    print(f"wrote {written} demo executions to {settings.database_url}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade
    from app.demo import demo_jobs, seed
    from app.serving import serve

    settings = _settings(args, host=args.host, port=args.port,
                         demo=False if args.no_demo else None,
                         allow_exec=True if args.allow_exec else None,
                         workers=args.workers)
    if not 1 <= settings.workers <= MAX_WORKERS:
        raise ValueError(f"--workers (or RUNYARD_WORKERS) must be 1 to {MAX_WORKERS}, "
                         f"not {settings.workers} (the processes that serve; one per core to use)")
    if not is_loopback(settings.host) and not _has_tokens(settings):
        print(
            f"runyard: refusing to listen on {settings.host}: no access token exists, so "
            "anyone who can reach that address could read and write every run. Create "
            "one first (`runyard token create --role read --name NAME`; it is then needed "
            "by every client), or listen on 127.0.0.1 (the default).",
            file=sys.stderr,
        )
        return 2
    tune_process()
    upgrade(settings.database_url)
    if settings.demo:
        store = _open_store(settings)
        try:
            if store.is_empty():
                written = seed(store, settings.demo_executions)
                print(f"the database was empty: wrote {written} demo executions")
                if settings.allow_exec:
                    print(f"queued {len(demo_jobs(store))} demo commands to run")
        finally:
            store.db.dispose()
    if settings.allow_exec:
        print("running commands is ON (--allow-exec): anyone who can reach this address "
              "can run commands as this user")
    processes = f", {settings.workers} worker processes" if settings.workers > 1 else ""
    print(f"Runyard on http://{settings.host}:{settings.port}  "
          f"({settings.database_url}{processes})")
    serve(settings)
    return 0


def _has_tokens(settings: Settings) -> bool:
    """True when the database holds an active token. Looks without creating or
    migrating anything: a server that refuses to start leaves no trace."""
    from sqlalchemy import inspect

    path = settings.sqlite_path()
    if path is not None and not path.exists():
        return False
    store = _open_store(settings)
    try:
        with store.db.read_engine.connect() as conn:
            if not inspect(conn).has_table("api_token"):
                return False
        return store.has_tokens()
    finally:
        store.db.dispose()


def _token_store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from app.db.migrate import upgrade

    settings = _settings(args)
    upgrade(settings.database_url)
    return _open_store(settings)


def _when(ms: int | None) -> str:
    from app.times import format_ms

    return format_ms(ms) or "-"


def cmd_token_create(args: argparse.Namespace) -> int:
    from app.store.errors import StoreError

    roles = [r for part in args.role for r in part.split(",")]
    store = _token_store(args)
    try:
        row, token = store.create_token(args.name, roles, args.scope)
    except StoreError as exc:
        raise ValueError(exc.message) from exc
    finally:
        store.db.dispose()
    print(f"created token {row['name']!r} (id {row['id']}) with roles "
          f"{','.join(row['roles'])}, scope {row['scope_id'] or 'all'}.")
    print("It is shown this once; send it as Authorization: Bearer <token>, or paste it "
          "into the page's sign-in form:")
    print(token)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    store = _token_store(args)
    try:
        rows = store.list_tokens()
    finally:
        store.db.dispose()
    if not rows:
        print("no tokens: the server answers loopback clients only, without a token")
        return 0
    header = ("ID", "NAME", "ROLES", "SCOPE", "PREFIX", "CREATED", "REVOKED")
    table = [header, *[(r["id"], r["name"], ",".join(r["roles"]), r["scope_id"] or "*",
                        r["prefix"] + "…", _when(r["created_at"]), _when(r["revoked_at"]))
                       for r in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from app.store.errors import StoreError

    store = _token_store(args)
    try:
        row = store.revoke_token(args.token)
    except StoreError as exc:
        raise ValueError(exc.message) from exc
    finally:
        store.db.dispose()
    print(f"revoked token {row['name']!r} (id {row['id']}); servers stop accepting it "
          "within RUNYARD_AUTH_CACHE_S (2 s)")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade
    from app.runner.pool import worker_main

    settings = _settings(args, worker_concurrency=args.concurrency)
    tune_process()
    upgrade(settings.database_url)
    return worker_main(settings)


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {value!r}: use KEY=VALUE")
        out[key] = val
    return out


def cmd_run(args: argparse.Namespace) -> int:
    import os

    from app.durations import parse_duration
    from app.run_command import run

    settings = Settings.from_env(host=args.host, port=args.port)
    argv = list(args.cmd)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise ValueError("nothing to run: runyard run [options] -- CMD [ARGS...]")
    body: dict[str, object] = {
        "command": {"shell": " ".join(argv)} if args.shell else {"argv": argv},
        "cwd": args.cwd or os.getcwd(), "trigger_kind": "cli",
        "requires_approval": args.approve,
    }
    if args.name:
        body["name"] = args.name
    if args.timeout:
        body["timeout_s"] = parse_duration(args.timeout)
    if args.label:
        body["labels"] = _pairs(args.label, "--label")
    if args.env:
        body["env"] = _pairs(args.env, "--env")
    if args.idempotency_key:
        body["idempotency_key"] = args.idempotency_key
    if args.attempts:
        body["max_attempts"] = args.attempts
    token = args.token or os.environ.get("RUNYARD_TOKEN") or None
    return run(_base_url(settings.host, settings.port), body, args.follow, token)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="runyard", description="A self-hosted runs dashboard.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--database-url", help="sqlite:///PATH or postgresql://… "
                       "(default: $RUNYARD_DATABASE_URL or sqlite:///data/runyard.db)")
        return p

    serve = with_db(sub.add_parser("serve", help="upgrade the schema and serve the dashboard"))
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument("--no-demo", action="store_true",
                       help="do not seed demo data into an empty database")
    serve.add_argument("--allow-exec", action="store_true",
                       help="allow running commands (jobs) and run them in this process")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="serve from N processes, one per core to use "
                            "(default $RUNYARD_WORKERS or 1; limits count per process)")
    serve.set_defaults(func=cmd_serve)

    worker = with_db(sub.add_parser("worker", help="claim and run queued jobs"))
    worker.add_argument("--concurrency", type=int,
                        help="jobs at a time (default $RUNYARD_WORKER_CONCURRENCY or 4)")
    worker.set_defaults(func=cmd_worker)

    run = sub.add_parser("run", help="run a command as a job on a Runyard server",
                         usage="runyard run [options] -- CMD [ARGS...]")
    run.add_argument("--name", help="a name for the run")
    run.add_argument("--timeout", help="stop it after this long (30s, 10m, 1h; default 10m)")
    run.add_argument("--approve", action="store_true",
                     help="hold it until someone approves it")
    run.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    run.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                     help="an environment variable for the command")
    run.add_argument("--cwd", help="working directory (default: this one)")
    run.add_argument("--shell", action="store_true",
                     help="run the words as one /bin/sh -c string")
    run.add_argument("--idempotency-key", help="submitting the same key again returns "
                     "the existing run")
    run.add_argument("--attempts", type=int, help="tries if a worker is lost (default 1)")
    run.add_argument("--follow", "-f", action="store_true",
                     help="stream the output and exit with the command's exit code")
    run.add_argument("--host", help="the server's address (default $RUNYARD_HOST)")
    run.add_argument("--port", type=int, help="the server's port (default $RUNYARD_PORT)")
    run.add_argument("--token", help="an access token with the exec role, sent as "
                     "Authorization: Bearer (default $RUNYARD_TOKEN; needed once the "
                     "server has tokens)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    run.set_defaults(func=cmd_run)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    with_db(db_sub.add_parser("upgrade", help="migrate the schema to the newest revision")
            ).set_defaults(func=cmd_db_upgrade)

    demo = with_db(sub.add_parser("demo", help="write demo executions"))
    demo.add_argument("--executions", type=int, default=3000, help="how many (default 3000)")
    demo.add_argument("--otlp", metavar="URL",
                      help="instead, send a few runs to the Runyard server at URL through "
                           "the OpenTelemetry exporter (e.g. http://127.0.0.1:8000)")
    demo.set_defaults(func=cmd_demo)
    token = sub.add_parser("token", help="access tokens: create, list, revoke")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = with_db(token_sub.add_parser(
        "create", help="create a token (printed alone on the last line, shown once)"))
    create.add_argument("--role", action="append", required=True, metavar="ROLE[,ROLE]",
                        help="read, write (ingest, OTLP) or exec (run commands); repeatable")
    create.add_argument("--name", required=True, help="a name to tell it by (1-64 characters)")
    create.add_argument("--scope", help="limit it to this scope_id (default: every scope)")
    create.set_defaults(func=cmd_token_create)
    with_db(token_sub.add_parser("list", help="list tokens (never the tokens themselves)")
            ).set_defaults(func=cmd_token_list)
    revoke = with_db(token_sub.add_parser("revoke", help="revoke a token by id or name"))
    revoke.add_argument("token", metavar="ID_OR_NAME")
    revoke.set_defaults(func=cmd_token_revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``runyard`` command."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"runyard: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
