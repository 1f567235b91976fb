"""Helpers for admin-panel tests: an admin account, logging a TestClient in, reading CSRF tokens."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from app.auth import create_admin
from tests.study import Study

USERNAME = "alice"
PASSWORD = "correct horse battery staple"


def add_admin(study: Study, username: str = USERNAME, password: str = PASSWORD) -> None:
    with study.sessions() as s:
        create_admin(s, username, password)
        s.commit()


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
