"""``metamers admin ...`` and ``metamers export ...``: admin accounts and researcher exports from
the command line. Registered into the ``metamers`` parser by :func:`register`."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _read_password(args: argparse.Namespace) -> str | None:
    """From stdin (``--password-stdin``: one line) or an interactive prompt, typed twice."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        print("error: no terminal to prompt on; pipe the password with --password-stdin", file=sys.stderr)
        return None
    first = getpass.getpass("New password: ")
    if getpass.getpass("Repeat it: ") != first:
        print("error: the passwords differ", file=sys.stderr)
        return None
    return first


def _change_admin(args: argparse.Namespace, change: Callable[[Any, str, str], Any], action: str, done: str) -> int:
    """Read a password, apply ``change(session, username, password)`` (``app.auth.create_admin``
    or ``set_password``) and audit it as ``action``, done from the command line."""
    from app.auth import audit
    from app.cli import _sessions

    password = _read_password(args)
    if password is None:
        return 2
    _, sessions = _sessions()
    with sessions() as s:
        try:
            user = change(s, args.username, password)
        except ValueError as exc:
            return _fail(str(exc))
        audit(s, None, action, f"admin:{user.username}", via="cli")
        s.commit()
    print(done)
    return 0


def cmd_admin_create(args: argparse.Namespace) -> int:
    from app.auth import create_admin

    return _change_admin(args, create_admin, "admin_create", f"created admin {args.username!r}")


def cmd_admin_password(args: argparse.Namespace) -> int:
    from app.auth import set_password

    return _change_admin(args, set_password, "admin_password_reset", f"password of {args.username!r} reset; their sessions are logged out and any lockout is lifted")


def cmd_export(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from app import exports
    from app.cli import _sessions
    from app.models import Experiment

    settings, sessions = _sessions()
    with sessions() as s:
        exp = s.scalar(sa.select(Experiment).where(Experiment.slug == args.slug))
        if exp is None:
            return _fail(f"no experiment with slug {args.slug!r}")
        s.expunge(exp)
    options = exports.ExportOptions(
        pseudonymize=args.pseudonymize or bool(args.pseudonym_key),
        pseudonym_key=args.pseudonym_key,
        include_unanswered=args.all_trials,
        n_boot=args.bootstrap,
        n_permutations=args.permutations,
        seed=args.seed,
    )
    try:
        paths = exports.write_export(sessions, exp, Path(args.out), options, secret_key=settings.resolved_secret_key(), only=args.only or None)
    except ValueError as exc:
        return _fail(str(exc))
    for p in paths:
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    admin = sub.add_parser("admin", help="admin accounts").add_subparsers(dest="admin_command", required=True, metavar="ADMIN_COMMAND")
    for name, func, text in (
        ("create", cmd_admin_create, "create an admin account (prompts for the password)"),
        ("password", cmd_admin_password, "reset an admin's password (also lifts a login lockout)"),
    ):
        p = admin.add_parser(name, help=text)
        p.add_argument("username")
        p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
        p.set_defaults(func=func)

    from app.exports import FILES
    from app.stats import DEFAULT_PERMUTATIONS

    p = sub.add_parser("export", help="write an experiment's results: trials, participants, accuracy by layer, figure, statistics")
    p.add_argument("slug", help="the experiment's slug")
    p.add_argument("--out", default="results", help="output folder (default: ./results)")
    p.add_argument("--only", nargs="+", choices=FILES, metavar="FILE", help=f"write only these files (from: {', '.join(FILES)})")
    p.add_argument("--pseudonymize", action="store_true", help="replace platform ids by keyed-hash pseudonyms")
    p.add_argument("--pseudonym-key", help="key for the pseudonyms (default: derived from the server secret and the experiment)")
    p.add_argument("--all-trials", action="store_true", help="trials.csv: also planned trials nobody answered")
    p.add_argument("--permutations", type=int, default=DEFAULT_PERMUTATIONS, help="permutations per statistical test (default 10000)")
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples per accuracy row (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the permutations (default 0)")
    p.set_defaults(func=cmd_export)
