"""The ``metamers`` command line.

Each package registers its own sub-commands (``register(sub)`` in its ``cli`` module): ``bank``
(:mod:`app.stimuli.cli`), ``experiment`` (:mod:`app.experiments.cli`), ``export``
(:mod:`app.results.cli`), ``admin`` (:mod:`app.admin.cli`) and ``synth`` (:mod:`synthesis.cli`).
The commands that concern the whole app (``db``, ``serve``, ``demo``) are here. The synthesis
commands import torch only when they run, so ``metamers bank import`` and the web app work
without the synthesis extras.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.core.commands import fail
from app.core.settings import get_settings

# ------------------------------------------------------------------------------------- db


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from app.core.db import upgrade

    settings = get_settings()
    upgrade(settings.sqlalchemy_url, args.revision)
    print(f"database is at revision {args.revision}")
    return 0


def cmd_db_check(args: argparse.Namespace) -> int:
    from app.core.db import NotMigratedError, check_migrated, make_engine

    try:
        check_migrated(make_engine(get_settings()))
    except NotMigratedError as exc:
        return fail(str(exc), 1)
    print("database schema is up to date")
    return 0


# ----------------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.core.db import NotMigratedError, check_migrated, make_engine

    try:
        check_migrated(make_engine(get_settings()))
    except NotMigratedError as exc:
        return fail(str(exc), 1)
    uvicorn.run("app.asgi:app", host=args.host, port=args.port, workers=args.workers, proxy_headers=True, log_level="info")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(host=args.host, port=args.port, serve=not args.no_serve)


def build_parser() -> argparse.ArgumentParser:
    from app.admin import cli as admin_cli
    from app.experiments import cli as experiments_cli
    from app.results import cli as results_cli
    from app.stimuli import cli as stimuli_cli
    from synthesis import cli as synth_cli

    parser = argparse.ArgumentParser(prog="metamers", description="Metamer Lab: model metamer experiments end to end.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database schema (migrations)").add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    p = db.add_parser("upgrade", help="apply migrations (the only way the schema changes)")
    p.add_argument("--revision", default="head")
    p.set_defaults(func=cmd_db_upgrade)
    db.add_parser("check", help="exit 1 unless the schema is up to date").set_defaults(func=cmd_db_check)

    stimuli_cli.register(sub)
    experiments_cli.register(sub)

    p = sub.add_parser("serve", help="run the web app with uvicorn")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="set up the demo (SQLite, demo banks and experiments, admin) and serve it")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-serve", action="store_true", help="set up only")
    p.set_defaults(func=cmd_demo)

    admin_cli.register(sub)
    results_cli.register(sub)
    synth_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI says what went wrong, not a traceback
        from app.core.db import NotMigratedError

        if isinstance(exc, NotMigratedError):
            return fail(str(exc), 1)
        raise


if __name__ == "__main__":
    sys.exit(main())
