"""``metamers experiment create|status|list``: experiments from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.core.commands import fail, migrated_sessions


def cmd_experiment_create(args: argparse.Namespace) -> int:
    from app.experiments.service import create_experiment
    from app.experiments.spec import SpecError, load_spec_file

    try:
        spec = load_spec_file(args.file)
    except SpecError as exc:
        return fail(str(exc))
    settings, sessions = migrated_sessions()
    with sessions() as session:
        try:
            exp = create_experiment(session, spec, status="active" if args.activate else "draft")
            session.commit()
        except SpecError as exc:
            return fail(str(exc))
        print(f"created experiment {exp.slug!r} ({exp.status})")
        print(f"  study link: {settings.base_url}/e/{exp.slug}")
    return 0


def cmd_experiment_status(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from app.core.schema import Experiment
    from app.experiments.service import set_status

    _, sessions = migrated_sessions()
    with sessions() as session:
        exp = session.scalar(sa.select(Experiment).where(Experiment.slug == args.slug))
        if exp is None:
            return fail(f"no experiment with slug {args.slug!r}")
        set_status(exp, args.status)
        session.commit()
        print(f"experiment {exp.slug!r} is now {exp.status}")
    return 0


def cmd_experiment_list(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from app.core.schema import Experiment
    from app.experiments.service import counting

    _, sessions = migrated_sessions()
    with sessions() as session:
        for exp in session.scalars(sa.select(Experiment).order_by(Experiment.id)):
            print(f"{exp.slug:30s} {exp.status:8s} {counting(session, exp.id):5d} counting participants  {exp.title}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
