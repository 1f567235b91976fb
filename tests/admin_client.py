"""Helpers for admin-panel tests: an admin account, logging a TestClient in, reading CSRF tokens."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.admin.auth import SESSION_COOKIE, hash_password, start_session
from app.core.schema import AdminUser
from tests.study import Study

USERNAME = "alice"
PASSWORD = "correct horse battery staple"


@lru_cache
def _stored_hash(password: str) -> str:
    return hash_password(password)


def add_admin(study: Study, username: str = USERNAME, password: str = PASSWORD) -> None:
    """An admin account whose argon2 hash is computed once per test run (hashing is slow on purpose)."""
    with study.sessions() as s:
        s.add(AdminUser(username=username, password_hash=_stored_hash(password)))
        s.commit()


def fast_login(study: Study, username: str = USERNAME, password: str = PASSWORD) -> str:
    """Create the admin (reusing one argon2 hash per run) and a session directly, set the cookie,
    and return the CSRF token: for tests of the panel itself, which need not pay for the login
    form each time (test_admin_auth.py tests the real login)."""
    with study.sessions() as s:
        user = s.scalar(sa.select(AdminUser).where(AdminUser.username == username))
        if user is None:
            user = AdminUser(username=username, password_hash=_stored_hash(password))
            s.add(user)
            s.flush()
        token, row = start_session(s, user)
        csrf = row.csrf_token
        s.commit()
    study.client.cookies.set(SESSION_COOKIE, token, domain="testserver.local", path="/admin")
    return csrf


def login_token(client: TestClient) -> str:
    r = client.get("/admin/login")
    assert r.status_code == 200, r.text
    m = re.search(r'name="login_token" value="([^"]+)"', r.text)
    assert m, "login form has no login_token"
    return m.group(1)


def try_login(client: TestClient, username: str = USERNAME, password: str = PASSWORD, **headers: Any):  # type: ignore[no-untyped-def]
    token = login_token(client)
    return client.post(
        "/admin/login",
        data={"username": username, "password": password, "login_token": token, "next": "/admin"},
        follow_redirects=False,
        headers=headers or None,
    )


def csrf_from(html: str) -> str:
    m = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert m, "page has no CSRF meta tag"
    return m.group(1)


def login(client: TestClient, username: str = USERNAME, password: str = PASSWORD) -> str:
    """Log in and return the session's CSRF token."""
    r = try_login(client, username, password)
    assert r.status_code == 303, r.text
    page = client.get("/admin")
    assert page.status_code == 200
    return csrf_from(page.text)


def admin_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every route under /admin, however the FastAPI version nests routers."""
    out: list[tuple[str, str]] = []

    def visit(route: Any) -> None:
        if hasattr(route, "effective_route_contexts"):  # FastAPI >= 0.16x keeps included routers lazy
            for ctx in route.effective_route_contexts():
                for m in getattr(ctx.original_route, "methods", None) or ():
                    out.append((m, ctx.path))
            return
        path = getattr(route, "path", "")
        for m in getattr(route, "methods", None) or ():
            out.append((m, path))

    for r in app.routes:
        visit(r)
    return sorted({(m, p) for m, p in out if p == "/admin" or p.startswith("/admin/")})
