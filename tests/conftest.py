"""Shared fixtures. Database-backed tests run once per backend: SQLite always, and PostgreSQL when
``TEST_POSTGRES_URL`` names a server (CI sets it). For PostgreSQL a throwaway database is created
for the run and dropped at the end; each test starts from empty, migrated tables.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.core.db import upgrade
from app.core.settings import Settings

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "").strip()
BACKENDS = ["sqlite"] + (["postgresql"] if PG_ADMIN_URL else [])
_outcomes: Counter[tuple[str, str]] = Counter()


def _pg_url(db_name: str) -> sa.engine.URL:
    url = sa.make_url(PG_ADMIN_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.set(database=db_name)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """Create a throwaway PostgreSQL database for this run, migrate it, drop it afterwards."""
    name = f"metamers_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(_pg_url(sa.make_url(PG_ADMIN_URL).database or "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.exit(f"TEST_POSTGRES_URL is set but PostgreSQL is unreachable: {exc}", returncode=3)
    url = _pg_url(name).render_as_string(hide_password=False)
    print(f"\n[db] created throwaway PostgreSQL database {name}")
    upgrade(url)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        print(f"\n[db] dropped throwaway PostgreSQL database {name}")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test gets a copy (much faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _truncate_all(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        tables = [r[0] for r in conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname='public' AND tablename <> 'alembic_version'"))]
        if tables:
            conn.execute(sa.text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(autouse=True)
def _close_pooled_connections() -> Iterator[None]:
    """Dispose every engine a test used once it ends. Apps and studies made in tests are never shut
    down explicitly, and their pools kept idle PostgreSQL connections until garbage collection:
    a whole-suite run piled up ~90 of the server's 100 and failed with "too many clients"."""
    used: weakref.WeakSet[sa.engine.Engine] = weakref.WeakSet()

    def track(conn: sa.engine.Connection) -> None:
        used.add(conn.engine)

    sa.event.listen(sa.engine.Engine, "engine_connect", track)
    try:
        yield
    finally:
        sa.event.remove(sa.engine.Engine, "engine_connect", track)
        from tests.study import STARTED

        while STARTED:
            STARTED.pop().__exit__(None, None, None)  # runs the app's shutdown: closes its pools
        for engine in list(used):
            engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database of each backend."""
    request.node.user_properties.append(("backend", request.param))
    if request.param == "sqlite":
        path = tmp_path / "metamers.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_database")
    _truncate_all(url)
    return url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        var_dir=tmp_path / "var",
        database_url=db_url,
        media_root=tmp_path / "media",
        secret_key="test-secret-key-not-for-production",
        base_url="http://testserver",
        # Small pools: hundreds of tests share one PostgreSQL server (max_connections 100).
        db_pool_size=3,
        db_max_overflow=5,
    )


@pytest.fixture(autouse=True)
def _reset_flush_denormal() -> Iterator[None]:
    """Synthesis sets the CPU's flush-denormals flag for speed; it is process-wide and breaks
    hypothesis's float generation in later tests, so undo it after each test."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        backend = dict(report.user_properties).get("backend")
        if backend:
            _outcomes[(backend, report.outcome)] += 1


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    terminalreporter.section("database backends")
    for backend in ("sqlite", "postgresql"):
        counts = {o: n for (b, o), n in _outcomes.items() if b == backend}
        if counts:
            terminalreporter.write_line(f"{backend}: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))
        elif backend == "postgresql" and not PG_ADMIN_URL:
            terminalreporter.write_line("postgresql: not run (set TEST_POSTGRES_URL, as .ci/run does)")
