"""The participant JSON API used by the runner page. Authenticated by the participant's bearer token."""

from __future__ import annotations

from typing import Any

import anyio
import sqlalchemy as sa
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app.core.runtime import Runtime, db, runtime
from app.core.schema import Experiment, Participant, ParticipantEvent, Stimulus, Trial, utcnow
from app.core.templating import markdown
from app.experiments.context import ExperimentContext, context_by_id, context_for
from app.participation.arrival import end_session, touch
from app.participation.bearer import participant_token, require_participant
from app.participation.saving import SaveError, complete, save_async, save_response
from app.participation.schemas import (
    ERRORS,
    CategoryOut,
    ConsentIn,
    EndedOut,
    ErrorOut,
    EventsIn,
    ExperimentOut,
    ResponseIn,
    SaveOut,
    SessionOut,
    StageOut,
)
from app.participation.stage import answered_indices, ended_info, stage_of

router = APIRouter(prefix="/api", tags=["participant"])


def media_url(sha: str, ext: str) -> str:
    return f"/media/{sha}{ext}"


def experiment_out(exp_slug: str, ctx: ExperimentContext) -> ExperimentOut:
    spec = ctx.spec
    cats = []
    for c in ctx.categories:
        icon = media_url(c["icon_sha256"], ".png") if c.get("icon_sha256") else None
        cats.append(CategoryOut(id=c["id"], label=c["label"], icon=icon))
    return ExperimentOut(
        slug=exp_slug,
        title=spec.title,
        modality=ctx.modality,  # type: ignore[arg-type]
        response=spec.response.model_dump(),
        categories=cats,
        timing=spec.timing.model_dump(),
        image_px=spec.image_px,
        practice_timing=spec.practice.timing.model_dump(),
        practice_feedback=spec.practice.feedback,
        play_once=spec.audio.play_once,
        breaks=spec.breaks,
        gate=spec.gate.model_dump(exclude_none=True),
        headphone=spec.headphone.model_dump(),
        texts={k: str(markdown(v)) for k, v in spec.texts.model_dump().items()},
        estimated_minutes=spec.estimated_minutes,
        allow_mobile=spec.allow_mobile,
    )


_EXPERIMENT_JSON: dict[int, tuple[ExperimentContext, dict[str, Any]]] = {}


def experiment_json(exp_slug: str, ctx: ExperimentContext) -> dict[str, Any]:
    """:func:`experiment_out` as JSON, built once per experiment version and process (it renders
    the Markdown texts, and every state request needs it). Keyed by the cached context object,
    which the entry keeps alive, so a key is never reused for another version."""
    hit = _EXPERIMENT_JSON.get(id(ctx))
    if hit is not None and hit[0] is ctx:
        return hit[1]
    if len(_EXPERIMENT_JSON) > 64:
        _EXPERIMENT_JSON.clear()
    out = experiment_out(exp_slug, ctx).model_dump(mode="json")
    _EXPERIMENT_JSON[id(ctx)] = (ctx, out)
    return out


def _ok(model: BaseModel) -> JSONResponse:
    """The model as a finished response. A sync endpoint that *returns* a model has FastAPI
    validate it again in a second thread-pool hop; under load every hop queues for a thread (the
    load benchmark saw state requests time out at 30 s), so these endpoints answer directly."""
    return JSONResponse(content=model.model_dump(mode="json"))


def _error(exc: SaveError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"detail": exc.message, **exc.extra})


@router.get("/session", response_model=SessionOut, responses=ERRORS)
def get_session(token: str = Depends(participant_token), session: Session = Depends(db)) -> Any:
    """Everything the runner needs to show the participant's next screen, also after a reload."""
    p = require_participant(session, token)
    exp = session.get(Experiment, p.experiment_id)
    assert exp is not None
    ctx = context_for(session, exp)
    rows = session.execute(
        sa.select(Trial.index, Trial.phase, Trial.block, Trial.label, Stimulus.media_sha256, Stimulus.media_ext)
        .join(Stimulus, Stimulus.id == Trial.stimulus_id)
        .where(Trial.participant_id == p.id)
        .order_by(Trial.index)
    ).all()
    feedback = ctx.spec.practice.feedback
    # Plain dicts in TrialOut's shape (the response model documents them): a state request is
    # the runner's heaviest, and 72 model instances per request cost more than the query.
    trials = [
        {"index": i, "phase": ph, "block": b, "media": media_url(sha, ext), "answer": label if (ph == "practice" and feedback) else None}
        for i, ph, b, label, sha, ext in rows
    ]
    answered = answered_indices(session, p)
    done = set(answered)
    first_open = next((ph for i, ph, *_ in rows if i not in done), None)
    stage = stage_of(session, p, ctx, next_phase=first_open)
    if p.status == "started":
        touch(p)
    session.commit()
    ended = ended_info(p, ctx) if p.status != "started" else None
    return JSONResponse(
        content={
            "participant": p.public_id,
            "status": p.status,
            "stage": stage,
            "experiment": experiment_json(exp.slug, ctx),
            "trials": trials,
            "answered": answered,
            "ended": EndedOut(**ended).model_dump(mode="json") if ended else None,
        }
    )


def _require_started(p: Participant) -> None:
    if p.status != "started":
        raise SaveError(409, f"this session has ended ({p.status.replace('_', ' ')})")


@router.post("/session/consent", response_model=StageOut, responses=ERRORS)
def give_consent(body: ConsentIn, token: str = Depends(participant_token), session: Session = Depends(db)) -> Any:
    """Record consent (once; repeating it is harmless) and the browser's properties."""
    p = require_participant(session, token)
    try:
        _require_started(p)
    except SaveError as exc:
        return _error(exc)
    if p.consent_at is None:
        p.consent_at = utcnow()
        p.browser = body.browser.model_dump(exclude_none=True) if body.browser else None
    touch(p)
    stage = stage_of(session, p, context_by_id(session, p.experiment_id))
    session.commit()
    return _ok(StageOut(stage=stage))  # type: ignore[arg-type]


@router.post("/session/decline", response_model=EndedOut, responses=ERRORS)
def decline_consent(token: str = Depends(participant_token), session: Session = Depends(db)) -> Any:
    """The participant does not consent: end the session and free their balancing slot at once
    (instead of holding it until the abandonment sweep). Only possible before consenting."""
    p = require_participant(session, token)
    ctx = context_by_id(session, p.experiment_id)
    if p.status == "returned" and p.outcome == "declined":
        return _ok(EndedOut(**ended_info(p, ctx)))
    try:
        _require_started(p)
        if p.consent_at is not None:
            raise SaveError(409, "consent was already given; close the page to stop taking part")
    except SaveError as exc:
        return _error(exc)
    end_session(p, "returned", "declined", "declined consent")
    session.commit()
    return _ok(EndedOut(**ended_info(p, ctx)))


@router.post("/session/instructions", response_model=StageOut, responses=ERRORS)
def finish_instructions(token: str = Depends(participant_token), session: Session = Depends(db)) -> Any:
    """Mark the instructions as read, so a reload does not show them again."""
    p = require_participant(session, token)
    try:
        _require_started(p)
        if p.consent_at is None:
            raise SaveError(409, "consent has not been given yet")
    except SaveError as exc:
        return _error(exc)
    if p.instructions_at is None:
        p.instructions_at = utcnow()
    touch(p)
    stage = stage_of(session, p, context_by_id(session, p.experiment_id))
    session.commit()
    return _ok(StageOut(stage=stage))  # type: ignore[arg-type]


@router.post(
    "/session/responses",
    response_model=SaveOut,
    status_code=201,
    responses={**ERRORS, 200: {"model": SaveOut, "description": "an identical retry of a stored response"}, 422: {"model": ErrorOut}},
)
async def post_response(body: ResponseIn, token: str = Depends(participant_token), rt: Runtime = Depends(runtime)) -> Any:
    """Save one answer as it happens. Idempotent: an identical retry returns 200 and changes nothing;
    a different answer to an answered trial returns 409 and changes nothing."""
    try:
        if rt.async_pool is not None and rt.async_pool.serves_this_loop():
            result = await save_async(rt.async_pool, rt.sessions, token, body)
        else:
            result = await anyio.to_thread.run_sync(save_response, rt.saves, token, body)
    except SaveError as exc:
        return _error(exc)
    out = SaveOut(duplicate=result.duplicate, correct=result.correct, stage=result.stage, ended=EndedOut(**result.ended) if result.ended else None)  # type: ignore[arg-type]
    return JSONResponse(status_code=200 if result.duplicate else 201, content=out.model_dump())


@router.post("/session/complete", response_model=EndedOut, responses=ERRORS)
def post_complete(token: str = Depends(participant_token), session: Session = Depends(db)) -> Any:
    """Finish the session when every answer is stored; returns where the browser should go."""
    p = require_participant(session, token)
    try:
        info = complete(session, p, context_by_id(session, p.experiment_id))
        session.commit()
    except SaveError as exc:
        session.rollback()
        return _error(exc)
    return _ok(EndedOut(**info))


@router.post("/session/events", responses=ERRORS)
def post_events(body: EventsIn, token: str = Depends(participant_token), session: Session = Depends(db)) -> Any:
    """Store browser reports that are not answers, e.g. a stimulus that failed to load."""
    p = require_participant(session, token)
    for e in body.events:
        session.add(
            ParticipantEvent(
                participant_id=p.id,
                kind=e.kind,
                trial_index=e.trial_index,
                data={"detail": e.detail, "events": [x.model_dump() for x in e.events or []]},
            )
        )
    touch(p)
    session.commit()
    return JSONResponse(content={"stored": len(body.events)})
