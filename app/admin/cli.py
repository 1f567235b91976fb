"""``metamers admin create|password``: admin accounts from the command line."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

from app.core.commands import fail, migrated_sessions


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
    """Read a password, apply ``change(session, username, password)`` (``app.admin.auth.create_admin``
    or ``set_password``) and audit it as ``action``, done from the command line."""
    from app.admin.auth import audit

    password = _read_password(args)
    if password is None:
        return 2
    _, sessions = migrated_sessions()
    with sessions() as s:
        try:
            user = change(s, args.username, password)
        except ValueError as exc:
            return fail(str(exc))
        audit(s, None, action, f"admin:{user.username}", via="cli")
        s.commit()
    print(done)
    return 0


def cmd_admin_create(args: argparse.Namespace) -> int:
    from app.admin.auth import create_admin

    return _change_admin(args, create_admin, "admin_create", f"created admin {args.username!r}")


def cmd_admin_password(args: argparse.Namespace) -> int:
    from app.admin.auth import set_password

    return _change_admin(args, set_password, "admin_password_reset", f"password of {args.username!r} reset; their sessions are logged out and any lockout is lifted")


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
