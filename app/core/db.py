"""Engine and sessions. One engine per process; all state lives in the database.

SQLite (the embedded default) gets WAL mode, a busy timeout and foreign keys, so that concurrent
participants do not hit "database is locked". PostgreSQL gets a connection pool that pings a
connection before use when it has been idle (:func:`_ping_when_idle`), so a database restart costs
at most one failed request per pooled connection (which the clients retry), not a dead process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from app.core.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class NotMigratedError(RuntimeError):
    """The database schema is missing or older than this code."""


def _ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


def make_engine(settings: Settings) -> Engine:
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # Let SQLAlchemy, not pysqlite, issue BEGIN: needed for SAVEPOINTs to work.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn) -> None:  # type: ignore[no-untyped-def]
            # IMMEDIATE takes the write lock up front, so a read-then-write transaction waits for
            # other writers (busy_timeout) instead of failing with SQLITE_BUSY on lock upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = sa.create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=1800,
    )
    _ping_when_idle(engine)
    return engine


# A pooled connection idle longer than this (s) is pinged before use.
PING_AFTER_IDLE_S = 10.0


def _ping_when_idle(engine: Engine) -> None:
    """Pre-ping, but only connections that sat idle for ``PING_AFTER_IDLE_S``.

    SQLAlchemy's ``pool_pre_ping`` pings on *every* checkout: one more round trip and about a tenth
    of the save endpoint's CPU (profiled under the load benchmark). Under load connections are
    reused within milliseconds and a dead one is caught by the failing statement instead (the
    pool then discards every connection opened before it; the request answers 500 and the client
    retries); after a quiet spell, when a restart most likely happened unseen, the ping replaces
    a stale connection before it can fail a request."""

    @event.listens_for(engine, "checkin")
    def _idle_since(_dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        if time.monotonic() - record.info.get("idle_since", float("inf")) < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # The pool opens a fresh connection in its place (up to three tries).
            raise sa.exc.DisconnectionError(str(exc)) from exc


def libpq_url(engine: Engine) -> str:
    """The engine's PostgreSQL URL as libpq (psycopg's own pool) takes it."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True)
class SaveDb:
    """Where the save endpoint's statements go when they run in a thread. ``engine`` runs the hot
    path without the ORM: on PostgreSQL in autocommit (each statement commits by itself, which
    saves the BEGIN and COMMIT round trips; the single INSERT is the only write that matters and
    it is atomic), on SQLite in one ``BEGIN IMMEDIATE`` transaction."""

    engine: Engine

    @classmethod
    def of(cls, sessions: sessionmaker[Session]) -> SaveDb:
        bind = sessions.kw["bind"]
        return cls(bind.execution_options(isolation_level="AUTOCOMMIT") if bind.dialect.name == "postgresql" else bind)

    @contextmanager
    def unit(self) -> Iterator[Connection]:
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                yield conn
        else:
            with self.engine.begin() as conn:
                yield conn


class AsyncPool:
    """A per-process pool of autocommit psycopg connections on PostgreSQL, owned by the event loop
    that opened it (the app's lifespan). The save endpoint runs on it without a thread hop."""

    def __init__(self, conninfo: str, *, max_size: int) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": namedtuple_row},
            # A request waits at most this long for a connection before failing with 503.
            timeout=20.0,
        )

    async def open(self) -> None:
        """Open the pool on the running loop. An app can be started more than once (test clients
        and fuzzers run its lifespan on loops of their own); the first loop keeps the pool, the
        others use the threaded path (:meth:`serves_this_loop`)."""
        if self._loop is None:
            await self.pool.open()
            self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        if self._loop is asyncio.get_running_loop():
            await self.pool.close()
            self._loop = None

    def serves_this_loop(self) -> bool:
        """The pool belongs to the event loop that opened it (the app's lifespan). A caller on
        another loop (an app driven without its lifespan, e.g. a bare test client) must use the
        threaded path instead."""
        try:
            return self._loop is asyncio.get_running_loop() and not self.pool.closed
        except RuntimeError:
            return False


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (the only way the schema changes)."""
    from alembic import command

    _ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations have {len(heads)} heads {heads}; merge them")
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def check_migrated(engine: Engine) -> None:
    """Refuse to run on a database that is not at the latest migration, saying how to fix it."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        state = "has no schema" if current is None else f"is at revision {current}"
        raise NotMigratedError(
            f"The database {where} {state}, but this version of Metamer Lab needs revision {head}.\n"
            f"Run `metamers db upgrade` (with the same DATABASE_URL) and start again."
        )
