"""The ``runyard`` command line: serve, worker, run, db upgrade, demo."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence

from app.settings import Settings

log = logging.getLogger("runyard")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    import uvicorn

    from app.db.migrate import upgrade
    from app.demo import demo_jobs, seed
    from app.factory import create_app

    settings = _settings(args, host=args.host, port=args.port,
                         demo=False if args.no_demo else None,
                         allow_exec=True if args.allow_exec else None)
    if not _is_loopback(settings.host):
        print(
            f"runyard: refusing to listen on {settings.host}: without access tokens anyone "
            "who can reach that address could read and write every run. Listen on "
            "127.0.0.1 (the default) and put an authenticating proxy in front; token "
            "support (`runyard token create`) is not in this version yet.",
            file=sys.stderr,
        )
        return 2
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
    print(f"Runyard on http://{settings.host}:{settings.port}  ({settings.database_url})")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="warning", timeout_graceful_shutdown=5)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade
    from app.runner.pool import worker_main

    settings = _settings(args, worker_concurrency=args.concurrency)
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
    return run(_base_url(settings.host, settings.port), body, args.follow)


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
