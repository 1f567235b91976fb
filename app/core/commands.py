"""Plumbing shared by the packages' ``metamers`` sub-commands: reporting a failure and opening
sessions on a migrated database."""

from __future__ import annotations

import sys

from sqlalchemy.orm import Session, sessionmaker

from app.core.settings import Settings, get_settings


def fail(message: str, code: int = 2) -> int:
    """Print ``error: message`` to stderr and return the exit status ``code`` (2: bad input)."""
    print(f"error: {message}", file=sys.stderr)
    return code


def migrated_sessions() -> tuple[Settings, sessionmaker[Session]]:
    """The settings and a session factory, after checking that the schema is up to date
    (:class:`~app.core.db.NotMigratedError` otherwise, which ``metamers`` reports with exit 1)."""
    from app.core.db import check_migrated, make_engine, make_sessionmaker

    settings = get_settings()
    engine = make_engine(settings)
    check_migrated(engine)
    return settings, make_sessionmaker(engine)
