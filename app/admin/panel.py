"""The admin panel (HTML under /admin): login, dashboard and audit log; stimulus sets, experiments,
monitoring and exports live in the ``admin_*`` modules and are mounted here behind the guard.

``router`` is what the app includes. It holds the public login routes and the ``protected``
router, whose router-level dependency (:func:`app.admin.guard.admin_guard`) applies to
every route added under it, now or later.
"""

from __future__ import annotations

import datetime as dt
import secrets

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.admin import experiments as admin_experiments
from app.admin import exports as admin_exports
from app.admin import sets as admin_sets
from app.admin.auth import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    SESSION_HOURS,
    attempt_login,
    audit,
    end_admin_session,
    start_session,
    tokens_match,
)
from app.admin.guard import AdminContext, admin_guard, client_ip, render, safe_next, see_other
from app.core.runtime import Runtime, db, runtime
from app.core.schema import REAL, AdminUser, AuditLog, Experiment, Participant, StimulusSet
from app.core.templating import templates

router = APIRouter(include_in_schema=False)
protected = APIRouter(prefix="/admin", dependencies=[Depends(admin_guard)])


# ------------------------------------------------------------------------------- login


def _login_page(request: Request, next_url: str, *, error: str | None = None, status_code: int = 200, username: str = "") -> HTMLResponse:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    resp = templates.TemplateResponse(
        request,
        "admin/login.html",
        {"admin": None, "login_token": token, "next": next_url, "error": error, "username": username},
        status_code=status_code,
    )
    rt: Runtime = request.app.state.runtime
    # Double-submit token against login CSRF (someone logging your browser into their account).
    resp.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, httponly=True, samesite="strict", secure=rt.settings.secure_cookies, path="/admin/login")
    return resp


@router.get("/admin/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    return _login_page(request, safe_next(next))


@router.post("/admin/login", response_class=HTMLResponse)
async def login(request: Request, rt: Runtime = Depends(runtime)) -> Response:
    form = await request.form()
    username = str(form.get("username") or "")[:100]
    password = str(form.get("password") or "")[:1000]
    next_url = safe_next(str(form.get("next") or ""))
    if not tokens_match(request.cookies.get(LOGIN_CSRF_COOKIE), str(form.get("login_token") or "")):
        return _login_page(request, next_url, error="The login form expired. Please try again.", status_code=403, username=username)
    ip = client_ip(request)

    def check() -> tuple[str | None, dt.datetime | None]:
        with rt.sessions() as s:
            result = attempt_login(s, username, password, ip)
            token = None
            if result.user is not None:
                token, _ = start_session(s, result.user)
                audit(s, result.user, "login", ip=ip)
            else:
                audit(s, None, "login_locked" if result.locked_until else "login_failed", username[:100], ip=ip)
            s.commit()
            return token, result.locked_until

    token, locked_until = await run_in_threadpool(check)
    if token is None:
        if locked_until is not None:
            when = locked_until.strftime("%H:%M UTC")
            return _login_page(request, next_url, error=f"Too many failed logins. Try again after {when}.", status_code=429, username=username)
        return _login_page(request, next_url, error="Wrong username or password.", status_code=401, username=username)
    resp = see_other(next_url)
    resp.set_cookie(
        SESSION_COOKIE, token, max_age=SESSION_HOURS * 3600, httponly=True, samesite="lax", secure=rt.settings.secure_cookies, path="/admin"
    )
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin/login")
    return resp


@protected.post("/logout")
def logout(request: Request, admin: AdminContext = Depends(admin_guard), session: Session = Depends(db)) -> Response:
    end_admin_session(session, request.cookies.get(SESSION_COOKIE))
    audit(session, admin.user(session), "logout")
    session.commit()
    resp = see_other("/admin/login")
    resp.delete_cookie(SESSION_COOKIE, path="/admin")
    return resp


# ------------------------------------------------------------------------------- pages


@protected.get("", response_class=HTMLResponse)
def dashboard(request: Request, admin: AdminContext = Depends(admin_guard), session: Session = Depends(db)) -> Response:
    experiments = session.scalars(sa.select(Experiment).order_by(Experiment.id.desc())).all()
    counts: dict[int, dict[str, int]] = {}
    for exp_id, status, n in session.execute(
        sa.select(Participant.experiment_id, Participant.status, sa.func.count()).where(REAL).group_by(Participant.experiment_id, Participant.status)
    ):
        counts.setdefault(exp_id, {})[status] = n
    sets = session.scalars(sa.select(StimulusSet).order_by(StimulusSet.id.desc())).all()
    return render(request, "admin/dashboard.html", admin, experiments=experiments, counts=counts, sets=sets)


@protected.get("/audit", response_class=HTMLResponse)
def audit_log(request: Request, page: int = 1, admin: AdminContext = Depends(admin_guard), session: Session = Depends(db)) -> Response:
    per = 100
    page = max(1, page)
    rows = session.execute(
        sa.select(AuditLog, AdminUser.username)
        .outerjoin(AdminUser, AdminUser.id == AuditLog.admin_user_id)
        .order_by(AuditLog.id.desc())
        .offset((page - 1) * per)
        .limit(per + 1)
    ).all()
    return render(request, "admin/audit.html", admin, rows=rows[:per], page=page, has_next=len(rows) > per)


protected.include_router(admin_sets.router)
protected.include_router(admin_experiments.router)
protected.include_router(admin_exports.router)
router.include_router(protected)
