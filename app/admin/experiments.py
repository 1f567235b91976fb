"""Admin: experiments (create, edit, status, preview, study URLs) and monitoring (counts, balance,
participants, exclusions)."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
import yaml
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.admin.auth import audit
from app.admin.guard import AdminContext, admin_guard, form_lists, render, see_other
from app.core.runtime import Runtime, db, runtime
from app.core.schema import PREVIEW_PLATFORM, REAL, Experiment, Participant, ParticipantEvent, ScreeningTrial, Stimulus, StimulusSet, Trial
from app.core.schema import Response as ResponseRow
from app.experiments import spec_form
from app.experiments.service import create_experiment, set_status, spec_of, update_experiment
from app.experiments.spec import NATURAL, ExperimentSpec, SpecError, parse_spec
from app.participation.preview import discard_previews, start_preview
from app.results.monitoring import STATUSES, monitor
from app.results.analysis import SEM_CONVENTIONS
from app.results.options import FILES
from app.results.stats import SCHEMES

router = APIRouter()

PARTICIPANTS_PER_PAGE = 50
PROLIFIC_QUERY = "PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
MTURK_XML = """<ExternalQuestion xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd">
  <ExternalURL>{url}</ExternalURL>
  <FrameHeight>0</FrameHeight>
</ExternalQuestion>"""

DONE = {
    "created": "Experiment created (draft). Preview it, then activate it.",
    "updated": "Settings saved.",
    "active": "The experiment is active: new participants can start.",
    "paused": "The experiment is paused: nobody new can start; people already in can finish.",
    "closed": "The experiment is closed.",
    "draft": "The experiment is back to draft.",
    "excluded": "Participant excluded.",
    "included": "Participant included again.",
    "previews_discarded": "Previews discarded.",
}


def study_urls(base_url: str, slug: str, platform: str) -> dict[str, Any]:
    """What to paste into the recruitment platform."""
    plain = f"{base_url}/e/{slug}"
    out: dict[str, Any] = {"plain": plain, "platform": platform, "warnings": []}
    if platform == "prolific":
        out["prolific"] = f"{plain}?{PROLIFIC_QUERY}"
    if platform == "mturk":
        out["mturk_url"] = plain
        out["mturk_xml"] = MTURK_XML.format(url=plain)
    host = urlsplit(base_url).hostname or ""
    if host in ("127.0.0.1", "localhost", "testserver", "0.0.0.0"):
        out["warnings"].append(f"BASE_URL is {base_url}: participants elsewhere cannot reach it. Set BASE_URL to this server's public address.")
    if platform == "mturk" and not base_url.startswith("https://"):
        out["warnings"].append("MTurk shows ExternalQuestion pages only over HTTPS.")
    return out


def _exp_or_404(session: Session, exp_id: int) -> Experiment:
    exp = session.get(Experiment, exp_id)
    if exp is None:
        raise HTTPException(status_code=404, detail="no such experiment")
    return exp


# ------------------------------------------------------------------------------ form


def available(session: Session) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Stimulus sets and the conditions they offer (natural first, then model/layer in depth order)."""
    sets = []
    conditions: dict[str, dict[str, Any]] = {NATURAL: {"key": NATURAL, "label": "natural (unaltered stimuli)", "sets": []}}
    counts = dict(
        session.execute(sa.select(Stimulus.set_id, sa.func.count()).where(Stimulus.kind == "natural").group_by(Stimulus.set_id)).all()
    )
    for sset in session.scalars(sa.select(StimulusSet).order_by(StimulusSet.name)):
        sets.append({"name": sset.name, "modality": sset.modality, "sources": counts.get(sset.id, 0), "id": sset.id})
        conditions[NATURAL]["sets"].append(sset.name)
        for m in sset.manifest.get("models", []) or []:
            for lay in m.get("layers", []):
                key = f"{m['name']}/{lay}"
                conditions.setdefault(key, {"key": key, "label": key, "sets": []})["sets"].append(sset.name)
    return sets, list(conditions.values())


def _form_page(
    request: Request,
    admin: AdminContext,
    session: Session,
    values: dict[str, Any],
    *,
    exp: Experiment | None,
    problems: list[str] = (),  # type: ignore[assignment]
    status_code: int = 200,
    spec_yaml: str = "",
) -> HTMLResponse:
    fields = spec_form.bind(values, problems)
    sets, conditions = available(session)
    return render(
        request,
        "admin/experiment_form.html",
        admin,
        status_code=status_code,
        exp=exp,
        groups=spec_form.grouped(fields),
        sets=sets,
        conditions=conditions,
        problems=list(problems),
        spec_yaml=spec_yaml,
    )


def _spec_from_form(form: dict[str, list[str]]) -> tuple[dict[str, Any], ExperimentSpec | None, list[str]]:
    """The posted spec: pasted YAML/JSON if given, else the form fields. Returns (values, spec, problems)."""
    text = (form.get("spec_yaml") or [""])[-1].strip()
    if text:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            return {}, None, [f"spec_yaml: not valid YAML/JSON: {exc}"]
        try:
            spec = parse_spec(data, "pasted spec")
            return spec.model_dump(mode="json"), spec, []
        except SpecError as exc:
            return data if isinstance(data, dict) else {}, None, exc.problems
    values, problems = spec_form.parse_form(form)
    try:
        spec = parse_spec(values)
    except SpecError as exc:
        seen = {p.split(":", 1)[0] for p in problems}
        return values, None, problems + [p for p in exc.problems if p.split(":", 1)[0] not in seen]
    if problems:
        return values, None, problems
    return values, spec, []


@router.get("/experiments/new", response_class=HTMLResponse)
def new_form(request: Request, admin: AdminContext = Depends(admin_guard), session: Session = Depends(db)) -> Response:
    return _form_page(request, admin, session, spec_form.default_values(), exp=None)


@router.post("/experiments/new", response_class=HTMLResponse)
async def create(request: Request, admin: AdminContext = Depends(admin_guard), rt: Runtime = Depends(runtime)) -> Response:
    form = form_lists(await request.form())

    def run() -> Response:
        values, spec, problems = _spec_from_form(form)
        with rt.sessions() as s:
            if spec is not None:
                try:
                    exp = create_experiment(s, spec)
                    audit(s, admin.user(s), "experiment_create", f"experiment:{exp.id}", slug=exp.slug)
                    s.commit()
                    return see_other(f"/admin/experiments/{exp.id}?done=created")
                except SpecError as exc:
                    s.rollback()
                    problems = exc.problems
            return _form_page(request, admin, s, values, exp=None, problems=problems, status_code=422, spec_yaml=(form.get("spec_yaml") or [""])[-1])

    return await run_in_threadpool(run)


@router.get("/experiments/{exp_id}/edit", response_class=HTMLResponse)
def edit_form(request: Request, exp_id: int, admin: AdminContext = Depends(admin_guard), session: Session = Depends(db)) -> Response:
    exp = _exp_or_404(session, exp_id)
    return _form_page(request, admin, session, dict(exp.spec), exp=exp)


@router.post("/experiments/{exp_id}/edit", response_class=HTMLResponse)
async def edit(request: Request, exp_id: int, admin: AdminContext = Depends(admin_guard), rt: Runtime = Depends(runtime)) -> Response:
    form = form_lists(await request.form())

    def run() -> Response:
        values, spec, problems = _spec_from_form(form)
        with rt.sessions() as s:
            exp = _exp_or_404(s, exp_id)
            if spec is not None:
                try:
                    # Previews were planned from the old design; they go (and must not freeze it).
                    discard_previews(s, exp.id)
                    before = dict(exp.spec)
                    update_experiment(s, exp, spec)
                    changed = sorted(k for k in set(before) | set(exp.spec) if before.get(k) != exp.spec.get(k))
                    audit(s, admin.user(s), "experiment_update", f"experiment:{exp.id}", slug=exp.slug, changed=changed)
                    s.commit()
                    return see_other(f"/admin/experiments/{exp.id}?done=updated")
                except SpecError as exc:
                    s.rollback()
                    problems = exc.problems
                    exp = _exp_or_404(s, exp_id)
            return _form_page(request, admin, s, values, exp=exp, problems=problems, status_code=422, spec_yaml=(form.get("spec_yaml") or [""])[-1])

    return await run_in_threadpool(run)


# ------------------------------------------------------------------------------ overview


@router.get("/experiments", response_class=HTMLResponse)
def experiments(request: Request, admin: AdminContext = Depends(admin_guard)) -> Response:
    return see_other("/admin")


@router.get("/experiments/{exp_id}", response_class=HTMLResponse)
def overview(request: Request, exp_id: int, admin: AdminContext = Depends(admin_guard), session: Session = Depends(db), rt: Runtime = Depends(runtime)) -> Response:
    exp = _exp_or_404(session, exp_id)
    spec = spec_of(exp)
    mon = monitor(session, exp)
    previews = session.scalar(
        sa.select(sa.func.count()).select_from(Participant).where(Participant.experiment_id == exp.id, Participant.platform == PREVIEW_PLATFORM)
    )
    return render(
        request,
        "admin/experiment.html",
        admin,
        exp=exp,
        spec=spec,
        mon=mon,
        urls=study_urls(rt.settings.base_url, exp.slug, spec.platform),
        previews=previews,
        files=FILES,
        schemes=SCHEMES.values(),
        sem_conventions=SEM_CONVENTIONS,
        done=DONE.get(request.query_params.get("done", "")),
        sets=exp.stimulus_sets,
    )


@router.get("/experiments/{exp_id}/monitor.json")
def monitor_json(exp_id: int, admin: AdminContext = Depends(admin_guard), session: Session = Depends(db)) -> JSONResponse:
    exp = _exp_or_404(session, exp_id)
    return JSONResponse(monitor(session, exp).as_json(), headers={"Cache-Control": "no-store"})


TRANSITIONS = {"active": ("draft", "paused", "closed"), "paused": ("active",), "closed": ("draft", "active", "paused"), "draft": ("active", "paused", "closed")}


@router.post("/experiments/{exp_id}/status")
async def change_status(request: Request, exp_id: int, admin: AdminContext = Depends(admin_guard), rt: Runtime = Depends(runtime)) -> Response:
    form = await request.form()
    status = str(form.get("status") or "")

    def run() -> Response:
        with rt.sessions() as s:
            exp = _exp_or_404(s, exp_id)
            if status not in TRANSITIONS or exp.status not in TRANSITIONS[status]:
                raise HTTPException(status_code=409, detail=f"cannot go from {exp.status} to {status or '(nothing)'}")
            if status == "draft":
                real = s.scalar(sa.select(sa.func.count()).select_from(Participant).where(Participant.experiment_id == exp.id, REAL))
                if real:
                    raise HTTPException(status_code=409, detail="participants have started; an experiment cannot go back to draft")
            before = exp.status
            set_status(exp, status)
            audit(s, admin.user(s), "experiment_status", f"experiment:{exp.id}", slug=exp.slug, before=before, after=status)
            s.commit()
        return see_other(f"/admin/experiments/{exp_id}?done={status}")

    return await run_in_threadpool(run)


@router.post("/experiments/{exp_id}/preview")
def preview(exp_id: int, admin: AdminContext = Depends(admin_guard), session: Session = Depends(db), rt: Runtime = Depends(runtime)) -> Response:
    exp = _exp_or_404(session, exp_id)
    token = start_preview(session, exp, secret_key=rt.secret_key, admin_name=admin.username)
    audit(session, admin.user(session), "experiment_preview", f"experiment:{exp.id}", slug=exp.slug)
    session.commit()
    return see_other(f"/e/{exp.slug}/run#t={token}")


@router.post("/experiments/{exp_id}/preview/discard")
def preview_discard(exp_id: int, admin: AdminContext = Depends(admin_guard), session: Session = Depends(db)) -> Response:
    exp = _exp_or_404(session, exp_id)
    n = discard_previews(session, exp.id)
    audit(session, admin.user(session), "preview_discard", f"experiment:{exp.id}", n=n)
    session.commit()
    return see_other(f"/admin/experiments/{exp_id}?done=previews_discarded")


# ------------------------------------------------------------------------------ participants


@router.get("/experiments/{exp_id}/participants", response_class=HTMLResponse)
def participants(
    request: Request,
    exp_id: int,
    status: str = "",
    page: int = 1,
    admin: AdminContext = Depends(admin_guard),
    session: Session = Depends(db),
) -> Response:
    exp = _exp_or_404(session, exp_id)
    q = sa.select(Participant).where(Participant.experiment_id == exp.id, REAL)
    if status == "excluded":
        q = q.where(Participant.excluded.is_(True))
    elif status:
        q = q.where(Participant.status == status)
    total = session.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
    pages = max(1, math.ceil(total / PARTICIPANTS_PER_PAGE))
    page = min(max(1, page), pages)
    people = session.scalars(q.order_by(Participant.id.desc()).offset((page - 1) * PARTICIPANTS_PER_PAGE).limit(PARTICIPANTS_PER_PAGE)).all()
    ids = [p.id for p in people]
    progress: dict[int, tuple[int, int]] = {}
    if ids:
        planned = dict(session.execute(sa.select(Trial.participant_id, sa.func.count()).where(Trial.participant_id.in_(ids)).group_by(Trial.participant_id)).all())
        answered = dict(
            session.execute(sa.select(ResponseRow.participant_id, sa.func.count()).where(ResponseRow.participant_id.in_(ids)).group_by(ResponseRow.participant_id)).all()
        )
        progress = {i: (answered.get(i, 0), planned.get(i, 0)) for i in ids}
    return render(
        request,
        "admin/participants.html",
        admin,
        exp=exp,
        people=people,
        progress=progress,
        status=status,
        statuses=STATUSES,
        page=page,
        pages=pages,
        total=total,
    )


def _participant_or_404(session: Session, exp: Experiment, public_id: str) -> Participant:
    p = session.scalar(sa.select(Participant).where(Participant.experiment_id == exp.id, Participant.public_id == public_id, REAL))
    if p is None:
        raise HTTPException(status_code=404, detail="no such participant in this experiment")
    return p


@router.get("/experiments/{exp_id}/participants/{public_id}", response_class=HTMLResponse)
def participant_detail(
    request: Request, exp_id: int, public_id: str, admin: AdminContext = Depends(admin_guard), session: Session = Depends(db)
) -> Response:
    exp = _exp_or_404(session, exp_id)
    p = _participant_or_404(session, exp, public_id)
    trials = session.execute(
        sa.select(Trial, ResponseRow, Stimulus.key, Stimulus.kind, Stimulus.media_sha256, Stimulus.media_ext)
        .join(Stimulus, Stimulus.id == Trial.stimulus_id)
        .outerjoin(ResponseRow, ResponseRow.trial_id == Trial.id)
        .where(Trial.participant_id == p.id)
        .order_by(Trial.index)
    ).all()
    screening = session.scalars(
        sa.select(ScreeningTrial).where(ScreeningTrial.participant_id == p.id).order_by(ScreeningTrial.check, ScreeningTrial.attempt, ScreeningTrial.index)
    ).all()
    events = session.scalars(sa.select(ParticipantEvent).where(ParticipantEvent.participant_id == p.id).order_by(ParticipantEvent.id).limit(500)).all()
    answered = [r for _, r, *_ in trials if r is not None]
    return render(
        request,
        "admin/participant.html",
        admin,
        exp=exp,
        p=p,
        trials=trials,
        screening=screening,
        events=events,
        n_answered=len(answered),
        n_correct=sum(1 for r in answered if r.correct),
        done=DONE.get(request.query_params.get("done", "")),
    )


@router.post("/experiments/{exp_id}/participants/{public_id}/exclusion")
async def set_exclusion(request: Request, exp_id: int, public_id: str, admin: AdminContext = Depends(admin_guard), rt: Runtime = Depends(runtime)) -> Response:
    form = await request.form()
    action = str(form.get("action") or "")
    reason = str(form.get("reason") or "").strip()[:500]
    if action not in ("exclude", "include"):
        raise HTTPException(status_code=422, detail="action must be exclude or include")
    if action == "exclude" and not reason:
        raise HTTPException(status_code=422, detail="give a reason for the exclusion (it goes into the exports)")

    def run() -> Response:
        with rt.sessions() as s:
            exp = _exp_or_404(s, exp_id)
            p = _participant_or_404(s, exp, public_id)
            before = (p.excluded, p.exclude_reason)
            p.excluded = action == "exclude"
            p.exclude_reason = reason if action == "exclude" else None
            audit(
                s, admin.user(s), f"participant_{action}", f"participant:{p.public_id}",
                experiment=exp.slug, reason=reason or None, before={"excluded": before[0], "reason": before[1]},
            )
            s.commit()
        return see_other(f"/admin/experiments/{exp_id}/participants/{public_id}?done={action}d")

    return await run_in_threadpool(run)
