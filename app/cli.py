"""The ``runyard`` command line: serve, db upgrade, demo."""

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
    from app.demo import seed

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
    from app.demo import seed
    from app.factory import create_app

    settings = _settings(args, host=args.host, port=args.port,
                         demo=False if args.no_demo else None)
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
        finally:
            store.db.dispose()
    print(f"Runyard on http://{settings.host}:{settings.port}  ({settings.database_url})")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="warning", timeout_graceful_shutdown=5)
    return 0


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
    serve.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    with_db(db_sub.add_parser("upgrade", help="migrate the schema to the newest revision")
            ).set_defaults(func=cmd_db_upgrade)

    demo = with_db(sub.add_parser("demo", help="write demo executions"))
    demo.add_argument("--executions", type=int, default=3000, help="how many (default 3000)")
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
