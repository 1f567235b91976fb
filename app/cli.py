"""The ``metamers`` command line.

Sub-commands are registered by the module that owns them. The synthesis commands live in
``synthesis.cli`` and import torch only when they run, so ``metamers bank import`` and the web
app work without the synthesis extras.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from app.settings import get_settings


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _sessions():  # type: ignore[no-untyped-def]
    from app.db import check_migrated, make_engine, make_sessionmaker

    settings = get_settings()
    engine = make_engine(settings)
    check_migrated(engine)
    return settings, make_sessionmaker(engine)


# ------------------------------------------------------------------------------------- db


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from app.db import upgrade

    settings = get_settings()
    upgrade(settings.sqlalchemy_url, args.revision)
    print(f"database is at revision {args.revision}")
    return 0


def cmd_db_check(args: argparse.Namespace) -> int:
    from app.db import NotMigratedError, check_migrated, make_engine

    try:
        check_migrated(make_engine(get_settings()))
    except NotMigratedError as exc:
        return _fail(str(exc), 1)
    print("database schema is up to date")
    return 0


# ----------------------------------------------------------------------------------- banks


def cmd_bank_import(args: argparse.Namespace) -> int:
    from app.banks import SetImportError, import_bank
    from app.store import MediaStore
    from synthesis.bank import BankError

    settings, sessions = _sessions()
    try:
        set_id = import_bank(sessions, MediaStore(settings.media_dir), args.path, args.name, imported_by="cli")
    except (BankError, SetImportError) as exc:
        return _fail(str(exc))
    print(f"imported {args.path} as stimulus set {args.name!r} (id {set_id})")
    return 0


def cmd_bank_validate(args: argparse.Namespace) -> int:
    from synthesis.bank import BankError, open_bank

    try:
        with open_bank(args.path) as bank:
            m = bank.manifest
            kinds: dict[str, int] = {}
            for s in m.stimuli:
                kinds[s.kind] = kinds.get(s.kind, 0) + 1
            passed = sum(1 for s in m.stimuli if s.kind == "metamer" and s.passed)
            print(f"{args.path}: valid {m.modality} bank {m.name!r}: " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())))
            if kinds.get("metamer"):
                print(f"  metamers passing the validity criteria: {passed}/{kinds['metamer']}")
    except BankError as exc:
        return _fail(str(exc))
    return 0


# ----------------------------------------------------------------------------- experiments


def cmd_experiment_create(args: argparse.Namespace) -> int:
    from app.experiments import create_experiment
    from app.spec import SpecError, load_spec_file

    try:
        spec = load_spec_file(args.file)
    except SpecError as exc:
        return _fail(str(exc))
    settings, sessions = _sessions()
    with sessions() as session:
        try:
            exp = create_experiment(session, spec, status="active" if args.activate else "draft")
            session.commit()
        except SpecError as exc:
            return _fail(str(exc))
        print(f"created experiment {exp.slug!r} ({exp.status})")
        print(f"  study link: {settings.base_url}/e/{exp.slug}")
    return 0


def cmd_experiment_status(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from app.experiments import set_status
    from app.models import Experiment

    _, sessions = _sessions()
    with sessions() as session:
        exp = session.scalar(sa.select(Experiment).where(Experiment.slug == args.slug))
        if exp is None:
            return _fail(f"no experiment with slug {args.slug!r}")
        set_status(exp, args.status)
        session.commit()
        print(f"experiment {exp.slug!r} is now {exp.status}")
    return 0


def cmd_experiment_list(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from app.models import Experiment
    from app.participants import counting

    _, sessions = _sessions()
    with sessions() as session:
        for exp in session.scalars(sa.select(Experiment).order_by(Experiment.id)):
            print(f"{exp.slug:30s} {exp.status:8s} {counting(session, exp.id):5d} counting participants  {exp.title}")
    return 0


# ----------------------------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.db import NotMigratedError, check_migrated, make_engine

    try:
        check_migrated(make_engine(get_settings()))
    except NotMigratedError as exc:
        return _fail(str(exc), 1)
    uvicorn.run("app.asgi:app", host=args.host, port=args.port, workers=args.workers, proxy_headers=True, log_level="info")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import run_demo

    return run_demo(host=args.host, port=args.port, serve=not args.no_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metamers", description="Metamer Lab: model metamer experiments end to end.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    db = sub.add_parser("db", help="database schema (migrations)").add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    p = db.add_parser("upgrade", help="apply migrations (the only way the schema changes)")
    p.add_argument("--revision", default="head")
    p.set_defaults(func=cmd_db_upgrade)
    db.add_parser("check", help="exit 1 unless the schema is up to date").set_defaults(func=cmd_db_check)

    bank = sub.add_parser("bank", help="stimulus banks").add_subparsers(dest="bank_command", required=True, metavar="BANK_COMMAND")
    p = bank.add_parser("import", help="validate a bank (folder or .zip) and import it as a stimulus set")
    p.add_argument("path")
    p.add_argument("--name", required=True, help="name of the new stimulus set")
    p.set_defaults(func=cmd_bank_import)
    p = bank.add_parser("validate", help="check a bank without importing it")
    p.add_argument("path")
    p.set_defaults(func=cmd_bank_validate)

    exp = sub.add_parser("experiment", help="experiments").add_subparsers(dest="exp_command", required=True, metavar="EXPERIMENT_COMMAND")
    p = exp.add_parser("create", help="create an experiment from a YAML or JSON file (reports every problem at once)")
    p.add_argument("file", type=Path)
    p.add_argument("--activate", action="store_true", help="open it to participants right away")
    p.set_defaults(func=cmd_experiment_create)
    p = exp.add_parser("status", help="activate, pause or close an experiment")
    p.add_argument("slug")
    p.add_argument("status", choices=["draft", "active", "paused", "closed"])
    p.set_defaults(func=cmd_experiment_status)
    exp.add_parser("list", help="list experiments").set_defaults(func=cmd_experiment_list)

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

    from app import admin_cli

    admin_cli.register(sub)

    from synthesis import cli as synth_cli

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
        from app.db import NotMigratedError

        if isinstance(exc, NotMigratedError):
            return _fail(str(exc), 1)
        raise


if __name__ == "__main__":
    sys.exit(main())
