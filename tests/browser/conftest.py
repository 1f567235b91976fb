"""Fixtures of the browser tests: one real uvicorn server per database backend (SQLite, and
PostgreSQL when ``TEST_POSTGRES_URL`` is set, as in CI) on a fresh, migrated database, and one
headless Debian Chromium driven by Playwright. Each test gets its own browser context (fresh
cookies and localStorage) and creates its own experiment, so tests do not depend on each other.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.core.db import upgrade
from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, LiveServer, start_server, stop_server
from tests.conftest import BACKENDS, PG_ADMIN_URL, _pg_url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test here ``browser`` (``-m "not browser"`` skips them), with a hard time limit
    so a page that hangs fails the run instead of stalling CI."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.timeout(180))


@pytest.fixture(scope="session", autouse=True)
def _fresh_screenshots() -> None:
    """Start each run with an empty screenshot folder, so the CI artifact shows this run only."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip("Chromium is not installed (run `make chromium`; CI installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def _fresh_pg_database() -> tuple[str, sa.Engine, str]:
    name = f"metamers_browser_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(_pg_url(sa.make_url(PG_ADMIN_URL).database or "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return name, admin, _pg_url(name).render_as_string(hide_password=False)


@pytest.fixture(scope="session", params=BACKENDS)
def live_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app in a uvicorn subprocess on a fresh database of each backend (session-wide: tests
    create their own experiments, so they share the server but not their data)."""
    backend = request.param
    workdir = tmp_path_factory.mktemp(f"live-{backend}")
    admin = None
    if backend == "sqlite":
        url = f"sqlite:///{workdir / 'metamers.db'}"
    else:
        name, admin, url = _fresh_pg_database()
    upgrade(url)
    server = start_server(backend, url, workdir)
    try:
        yield server
    finally:
        stop_server(server)
        server.sessions.kw["bind"].dispose()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


@pytest.fixture(autouse=True)
def _backend_label(request: pytest.FixtureRequest) -> None:
    """Label each browser test with its backend for the 'database backends' summary."""
    if "live_server" in request.fixturenames:
        server: LiveServer = request.getfixturevalue("live_server")
        request.node.user_properties.append(("backend", server.backend))


@pytest.fixture
def server(live_server: LiveServer) -> Iterator[LiveServer]:
    """The live server; the test fails with the server's log if the server died during it."""
    yield live_server
    assert live_server.alive(), f"uvicorn died during the test:\n{live_server.log_tail()}"
