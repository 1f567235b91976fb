"""Participant pages: the study link ``/e/{slug}`` and the runner shell ``/e/{slug}/run``."""

from __future__ import annotations

import re

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app.core import ratelimit
from app.core.runtime import Runtime, db, runtime
from app.core.schema import Experiment
from app.core.templating import templates
from app.experiments.service import spec_of
from app.participation.arrival import authenticate, enter
from app.participation.recruitment import ArrivalError, parse_arrival

router = APIRouter(tags=["pages"])

MOBILE_UA = re.compile(r"Mobi|Android|iPhone|iPad|iPod|Windows Phone|Opera Mini", re.I)

MESSAGES = {
    "not_open": ("Not open yet", "This study has not started yet. Please try again later."),
    "paused": ("Study paused", "This study is paused at the moment and is not taking new participants. Please try again later."),
    "closed": ("Study closed", "This study is closed and no longer takes participants. Thank you for your interest."),
    "full": ("Study full", "This study has all the participants it needs. Please return the study on the recruitment site; thank you for your interest."),
    "blocked": ("Already taken part", "Our records show you have already taken part in this study, which can be done only once. Thank you!"),
    "rate_limited": ("Too many new sessions", "Too many new sessions were started from your network in a short time. Please wait a while and open the study link again."),
    "mobile": ("Computer needed", "This study needs a desktop or laptop computer with a keyboard and mouse. It cannot run on phones or tablets. Please open the link on a computer."),
}


def message_page(request: Request, kind: str, status_code: int = 200, detail: str | None = None) -> HTMLResponse:
    title, body = MESSAGES.get(kind, ("Study unavailable", detail or ""))
    return templates.TemplateResponse(request, "participant/message.html", {"title": title, "body": detail or body}, status_code=status_code)


def _cookie_name(exp: Experiment) -> str:
    return f"mm_p{exp.id}"


@router.get("/e/{slug}", response_class=HTMLResponse, summary="Study link: create or resume the participant")
def study_link(slug: str, request: Request, session: Session = Depends(db), rt: Runtime = Depends(runtime)) -> Response:
    exp = session.scalar(sa.select(Experiment).where(Experiment.slug == slug))
    if exp is None:
        return message_page(request, "missing", 404, "There is no study at this address. Please check the link.")
    spec = spec_of(exp)
    params = dict(request.query_params)
    try:
        arrival = parse_arrival(spec, params)
    except ArrivalError as exc:
        return message_page(request, "bad_link", 400, str(exc))
    if arrival.is_preview:
        return templates.TemplateResponse(request, "participant/preview.html", {"spec": spec})
    ua = request.headers.get("user-agent", "")
    if not spec.allow_mobile and MOBILE_UA.search(ua):
        return message_page(request, "mobile")
    existing = None
    if arrival.platform == "none":
        existing = authenticate(session, request.cookies.get(_cookie_name(exp), ""))
        if existing is not None and existing.experiment_id != exp.id:
            existing = None
    settings = rt.settings
    ip = request.client.host if request.client else "unknown"

    def may_create() -> bool:
        # Per client address, shared by all processes through the database (app.core.ratelimit).
        return ratelimit.hit(session, f"participant-ip:{ip}", limit=settings.participant_rate_limit, window_s=settings.participant_rate_window_s)

    entry = enter(session, exp, arrival, secret_key=rt.secret_key, user_agent=ua, existing=existing, may_create=may_create)
    if entry.kind in ("run", "ended"):
        resp = RedirectResponse(f"/e/{slug}/run#t={entry.token}", status_code=303)
        if arrival.platform == "none" and entry.token:
            resp.set_cookie(
                _cookie_name(exp), entry.token, max_age=30 * 24 * 3600, httponly=True, samesite="lax",
                secure=rt.settings.secure_cookies, path=f"/e/{slug}",
            )
        return resp
    if entry.kind == "rate_limited":
        resp = message_page(request, "rate_limited", 429)
        resp.headers["Retry-After"] = str(ratelimit.seconds_left(settings.participant_rate_window_s))
        return resp
    return message_page(request, entry.kind, 200 if entry.kind in ("blocked", "full") else 403 if entry.kind == "closed" else 200)


@router.get("/e/{slug}/run", response_class=HTMLResponse, summary="The experiment runner page")
def runner(slug: str, request: Request, session: Session = Depends(db)) -> Response:
    exp = session.scalar(sa.select(Experiment).where(Experiment.slug == slug))
    if exp is None:
        return message_page(request, "missing", 404, "There is no study at this address. Please check the link.")
    return templates.TemplateResponse(request, "participant/run.html", {"title": exp.title, "slug": slug})
