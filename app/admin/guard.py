"""What every admin route shares: the login guard (with CSRF), page rendering and small helpers.

Every route of the admin routers (:mod:`app.admin.panel`) runs :func:`admin_guard` first, as a
router-level dependency, so a new route cannot forget it:

* no valid session cookie → GET/HEAD are redirected (303) to the login page, anything else gets 401;
* a state-changing method (POST, PUT, PATCH, DELETE) must carry the session's CSRF token, in the
  ``X-CSRF-Token`` header or a ``csrf_token`` form field, or it gets 403. The one streamed route
  (bank upload) checks the form field itself, before writing any byte of the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from app.admin.auth import SESSION_COOKIE, session_for_token, tokens_match
from app.core.runtime import Runtime, runtime
from app.core.schema import AdminUser
from app.core.templating import templates

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Routes that parse their own (streamed) body and check the CSRF field themselves.
STREAMED_PATHS = {"/admin/sets/upload"}


@dataclass
class AdminContext:
    user_id: int
    username: str
    csrf_token: str
    csrf_deferred: bool = False

    def user(self, session: Any) -> AdminUser | None:
        return session.get(AdminUser, self.user_id)  # type: ignore[no-any-return]


def _load(rt: Runtime, token: str | None) -> AdminContext | None:
    with rt.sessions() as s:
        row = session_for_token(s, token)
        if row is None:
            return None
        name = s.scalar(sa.select(AdminUser.username).where(AdminUser.id == row.user_id))
        if name is None:
            return None
        return AdminContext(user_id=row.user_id, username=name, csrf_token=row.csrf_token)


async def admin_guard(request: Request, rt: Runtime = Depends(runtime)) -> AdminContext:
    ctx = await run_in_threadpool(_load, rt, request.cookies.get(SESSION_COOKIE))
    if ctx is None:
        if request.method in ("GET", "HEAD"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(status_code=303, detail="login required", headers={"Location": f"/admin/login?next={quote(target, safe='')}"})
        raise HTTPException(status_code=401, detail="login required")
    if request.method not in SAFE_METHODS:
        supplied = request.headers.get("x-csrf-token")
        ctype = request.headers.get("content-type", "")
        if supplied is None and request.url.path in STREAMED_PATHS and ctype.startswith("multipart/form-data"):
            ctx.csrf_deferred = True
        else:
            if supplied is None:
                if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
                    form = await request.form()
                    value = form.get("csrf_token")
                    supplied = value if isinstance(value, str) else None
            if not tokens_match(ctx.csrf_token, supplied):
                raise HTTPException(status_code=403, detail="missing or wrong CSRF token; reload the page and try again")
    request.state.admin = ctx
    return ctx


def render(request: Request, template: str, ctx: AdminContext | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request,
        template,
        {"admin": ctx, "csrf_token": ctx.csrf_token if ctx else None, **context},
        status_code=status_code,
    )


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str:
    """Only same-site admin paths are allowed after login (no open redirect)."""
    if value and value.startswith("/admin") and not value.startswith("//") and "\\" not in value and "://" not in value:
        return value
    return "/admin"


def form_lists(form: Any) -> dict[str, list[str]]:
    """A Starlette FormData as name → list of string values (files are ignored)."""
    out: dict[str, list[str]] = {}
    for k, v in form.multi_items():
        if isinstance(v, str):
            out.setdefault(k, []).append(v)
    return out


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
