"""Admin authentication: every admin route needs a login, state changes need the CSRF token,
sessions are server-side, and repeated failed logins lock the username and the address."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.admin.auth import IP_FAILURE_LIMIT, SESSION_COOKIE, USER_FAILURE_LIMIT
from app.core.schema import AdminSession, AdminUser, AuditLog, Experiment, Participant, RateLimit
from app.core.settings import Settings
from tests.admin_client import PASSWORD, USERNAME, add_admin, admin_routes, login, try_login
from tests.study import Study, build_study

PUBLIC = {("GET", "/admin/login"), ("POST", "/admin/login")}


@pytest.fixture
def study(settings: Settings, tmp_path: Path) -> Study:
    st = build_study(settings, tmp_path)
    add_admin(st)
    return st


def _fill(path: str, study: Study) -> str:
    with study.sessions() as s:
        public_id = s.scalar(sa.select(Participant.public_id)) or "0" * 20
    return path.replace("{exp_id}", "1").replace("{set_id}", "1").replace("{public_id}", public_id)


def _routes(study: Study) -> list[tuple[str, str]]:
    routes = [r for r in admin_routes(study.client.app) if r not in PUBLIC]
    # The enumeration must see the whole panel, or the checks below prove nothing.
    assert len(routes) >= 20, routes
    assert ("POST", "/admin/sets/upload") in routes and ("GET", "/admin/experiments/{exp_id}/export") in routes
    return routes


def test_every_admin_route_refuses_requests_without_a_login(study: Study) -> None:
    study.join("P1")  # so {public_id} names a real participant
    for method, path in _routes(study):
        url = _fill(path, study)
        r = study.client.request(method, url, follow_redirects=False, data={"csrf_token": "x"} if method == "POST" else None)
        if method in ("GET", "HEAD"):
            assert r.status_code == 303 and r.headers["location"].startswith("/admin/login"), (method, url, r.status_code)
        else:
            assert r.status_code == 401, (method, url, r.status_code)


def test_a_logged_out_session_cookie_is_refused_everywhere(study: Study) -> None:
    csrf = login(study.client)
    old = study.client.cookies.get(SESSION_COOKIE)
    assert study.client.post("/admin/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    with study.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AdminSession)) == 0
    study.client.cookies.set(SESSION_COOKIE, old, path="/admin")
    for method, path in _routes(study):
        r = study.client.request(method, _fill(path, study), follow_redirects=False, data={"csrf_token": csrf} if method == "POST" else None)
        assert r.status_code in (303, 401), (method, path, r.status_code)


def test_an_expired_session_is_refused(study: Study) -> None:
    login(study.client)
    with study.sessions() as s:
        s.execute(sa.update(AdminSession).values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
        s.commit()
    r = study.client.get("/admin", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")


def test_every_state_changing_route_rejects_a_missing_or_wrong_csrf_token(study: Study) -> None:
    csrf = login(study.client)
    study.join("P1")
    unsafe = [(m, p) for m, p in _routes(study) if m not in ("GET", "HEAD", "OPTIONS")]
    assert len(unsafe) >= 8
    for method, path in unsafe:
        url = _fill(path, study)
        for data in ({}, {"csrf_token": "wrong-" + csrf}):
            r = study.client.request(method, url, data=data, follow_redirects=False)
            assert r.status_code == 403, (method, url, data, r.status_code, r.text[:200])
        r = study.client.request(method, url, headers={"X-CSRF-Token": "nope"}, follow_redirects=False)
        assert r.status_code == 403, (method, url, "header")
    # Nothing changed: still logged in, experiment still active, nobody excluded.
    assert study.client.get("/admin").status_code == 200
    with study.sessions() as s:
        assert s.scalar(sa.select(Experiment.status)) == "active"
        assert not s.scalar(sa.select(Participant.excluded).where(Participant.platform_pid == "P1"))


def test_a_correct_csrf_token_in_form_or_header_is_accepted(study: Study) -> None:
    csrf = login(study.client)
    r = study.client.post("/admin/experiments/1/status", data={"status": "paused", "csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    r = study.client.post("/admin/experiments/1/status", data={"status": "active"}, headers={"X-CSRF-Token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    with study.sessions() as s:
        assert s.scalar(sa.select(Experiment.status)) == "active"


def test_session_cookie_is_httponly_samesite_and_scoped_to_admin(study: Study) -> None:
    r = try_login(study.client)
    assert r.status_code == 303
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE + "="))
    attrs = {a.strip().split("=")[0].lower(): a for a in cookie.split(";")}
    assert "httponly" in attrs and "samesite" in attrs and "path" in attrs
    assert attrs["samesite"].split("=")[1].strip().lower() in ("lax", "strict")
    assert attrs["path"].split("=")[1].strip() == "/admin"
    assert "secure" not in attrs
    # The database holds only a hash of the cookie value.
    value = cookie.split(";")[0].split("=", 1)[1]
    with study.sessions() as s:
        assert s.scalar(sa.select(AdminSession.token_hash)) != value


def test_session_cookie_is_secure_when_configured(settings: Settings, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    st = build_study(settings.model_copy(update={"secure_cookies": True}), tmp_path)
    add_admin(st)
    client = TestClient(st.client.app, base_url="https://testserver")  # Secure cookies travel over HTTPS only
    r = try_login(client)
    assert r.status_code == 303
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE + "="))
    assert "secure" in cookie.lower()


def test_login_needs_the_login_form_token(study: Study) -> None:
    r = study.client.post("/admin/login", data={"username": USERNAME, "password": PASSWORD, "next": "/admin"}, follow_redirects=False)
    assert r.status_code == 403
    assert SESSION_COOKIE not in study.client.cookies


def test_login_never_redirects_off_site(study: Study) -> None:
    token = re.search(r'name="login_token" value="([^"]+)"', study.client.get("/admin/login").text).group(1)  # type: ignore[union-attr]
    r = study.client.post(
        "/admin/login", data={"username": USERNAME, "password": PASSWORD, "login_token": token, "next": "https://evil.example/admin"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin"


def test_wrong_password_is_refused_and_audited(study: Study) -> None:
    r = try_login(study.client, password="not the password")
    assert r.status_code == 401 and "Wrong username or password" in r.text
    assert SESSION_COOKIE not in study.client.cookies
    with study.sessions() as s:
        assert s.scalar(sa.select(AuditLog.action)) == "login_failed"
        assert s.scalar(sa.select(AdminUser.failed_logins)) == 1


def test_username_is_locked_after_repeated_failures_even_for_the_right_password(study: Study) -> None:
    for i in range(USER_FAILURE_LIMIT):
        r = try_login(study.client, password=f"wrong {i}")
        assert r.status_code in (401, 429)
    assert r.status_code == 429
    r = try_login(study.client)  # the right password, but locked
    assert r.status_code == 429 and "Too many failed logins" in r.text
    assert SESSION_COOKIE not in study.client.cookies
    with study.sessions() as s:
        assert s.scalar(sa.select(AdminUser.locked_until)) is not None
        # The window passes...
        s.execute(sa.update(RateLimit).values(window_start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)))
        s.commit()
    assert try_login(study.client).status_code == 303


def test_the_lock_holds_from_another_address_and_for_unknown_usernames(study: Study) -> None:
    for i in range(USER_FAILURE_LIMIT):
        try_login(study.client, username="mallory", password=f"guess {i}")
    r = try_login(study.client, username="mallory", password="guess again")
    assert r.status_code == 429


def test_an_address_is_locked_after_many_failures_across_usernames(study: Study, monkeypatch: pytest.MonkeyPatch) -> None:
    assert IP_FAILURE_LIMIT > USER_FAILURE_LIMIT  # one account's lock comes first in real use
    monkeypatch.setattr("app.admin.auth.IP_FAILURE_LIMIT", USER_FAILURE_LIMIT + 2)  # fewer logins, same logic
    for i in range(USER_FAILURE_LIMIT + 2):
        try_login(study.client, username=f"user{i}", password="guess")
    r = try_login(study.client)  # a real account, from the same address
    assert r.status_code == 429


def test_cli_password_reset_lifts_the_lockout_and_ends_sessions(study: Study, monkeypatch: pytest.MonkeyPatch) -> None:
    from app import cli
    from app.core import commands
    from app.core.settings import get_settings

    login(study.client)
    for i in range(USER_FAILURE_LIMIT):
        try_login(study.client, password=f"wrong {i}")
    monkeypatch.setattr(commands, "get_settings", lambda: study.settings)
    get_settings.cache_clear()
    monkeypatch.setattr("sys.stdin", io.StringIO("a brand new password\n"))
    assert cli.main(["admin", "password", USERNAME, "--password-stdin"]) == 0
    with study.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(AdminSession)) == 0
        assert s.scalar(sa.select(AdminUser.locked_until)) is None
    assert study.client.get("/admin", follow_redirects=False).status_code == 303
    assert try_login(study.client, password="a brand new password").status_code == 303


def test_cli_admin_create_makes_an_account_that_can_log_in(study: Study, monkeypatch: pytest.MonkeyPatch) -> None:
    from app import cli
    from app.core import commands

    monkeypatch.setattr(commands, "get_settings", lambda: study.settings)
    monkeypatch.setattr("sys.stdin", io.StringIO("bob's long password\n"))
    assert cli.main(["admin", "create", "bob", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["admin", "create", "carol", "--password-stdin"]) == 2
    with study.sessions() as s:
        stored = s.scalar(sa.select(AdminUser.password_hash).where(AdminUser.username == "bob"))
        assert stored is not None and stored.startswith("$argon2id$")
    assert try_login(study.client, "bob", "bob's long password").status_code == 303
