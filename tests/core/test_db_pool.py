"""The PostgreSQL pool pings a connection before use only after it sat idle (``app.core.db``)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app.core import db as app_db
from app.core.db import make_engine
from app.core.settings import Settings


@pytest.fixture
def pg_settings(settings: Settings) -> Settings:
    if not settings.sqlalchemy_url.startswith("postgresql"):
        pytest.skip("only PostgreSQL connections can be dropped by the server")
    return settings


def _backend_pid_then_kill(engine: sa.engine.Engine, admin: sa.engine.Engine) -> int:
    with engine.connect() as conn:
        pid = int(conn.scalar(sa.text("SELECT pg_backend_pid()")))
    with admin.connect() as conn:
        assert conn.scalar(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    return pid


def test_an_idle_connection_killed_by_the_server_is_replaced_before_use(pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_db, "PING_AFTER_IDLE_S", 0.0)
    engine, admin = make_engine(pg_settings), sa.create_engine(pg_settings.sqlalchemy_url)
    try:
        dead = _backend_pid_then_kill(engine, admin)
        with engine.connect() as conn:  # no error: the ping found the dead one and a new one was opened
            assert int(conn.scalar(sa.text("SELECT pg_backend_pid()"))) != dead
    finally:
        engine.dispose()
        admin.dispose()


def test_a_recently_used_connection_is_not_pinged(pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side of the trade: without the ping the dead connection fails one statement, and
    that failure discards the pool so that the next use works."""
    monkeypatch.setattr(app_db, "PING_AFTER_IDLE_S", 3600.0)
    engine, admin = make_engine(pg_settings), sa.create_engine(pg_settings.sqlalchemy_url)
    try:
        _backend_pid_then_kill(engine, admin)
        with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
            conn.scalar(sa.text("SELECT 1"))
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT 1")) == 1
    finally:
        engine.dispose()
        admin.dispose()
