"""The headphone-check JSON API (``app.headphone``), authenticated by the participant's bearer token.

The server decides everything: which part of the check is due, whether an answer is accepted,
and pass or fail. Correct answers and per-trial correctness are never sent to the browser.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from app import headphone
from app.deps import Runtime, current_participant, db, runtime
from app.experiments import ExperimentContext, context_for
from app.models import Experiment, Participant
from app.responses import SaveError, ended_info, stage_of
from app.routes.api import ERRORS, EndedOut, ErrorOut, Stage

router = APIRouter(prefix="/api/session/headphone", tags=["headphone check"])

Status = Literal["not_required", "pending", "passed", "failed"]


class ScreeningTrialOut(BaseModel):
    index: int
    media: str


class CheckSummaryOut(BaseModel):
    """What the participant may know about a check: attempts finished and whether it is passed."""

    attempts_done: int
    max_attempts: int
    passed: bool | None


class HeadphoneStateOut(BaseModel):
    status: Status
    stage: Stage
    checks: list[Literal["antiphase", "huggins"]]
    # The part now due (while pending): its check, attempt, trials and which are stored.
    check: Literal["antiphase", "huggins"] | None = None
    attempt: int | None = None
    trials: list[ScreeningTrialOut] = []
    answered: list[int] = []
    # Where the three sounds of a trial lie in its file (ms), to show which one is playing.
    intervals_ms: list[tuple[float, float]] = []
    calibration: str | None = None
    results: dict[str, CheckSummaryOut] = {}
    ended: EndedOut | None = None


class HeadphoneSaveOut(BaseModel):
    saved: Literal[True] = True
    duplicate: bool
    status: Status
    stage: Stage
    check: Literal["antiphase", "huggins"] | None = None
    attempt: int | None = None
    ended: EndedOut | None = None


def _context(session: Session, p: Participant) -> ExperimentContext:
    exp = session.get(Experiment, p.experiment_id)
    assert exp is not None
    return context_for(session, exp)


def _ended(p: Participant, ctx: ExperimentContext) -> EndedOut | None:
    return EndedOut(**ended_info(p, ctx)) if p.status != "started" else None


@router.get("", response_model=HeadphoneStateOut, responses=ERRORS)
def get_state(p: Participant = Depends(current_participant), session: Session = Depends(db), rt: Runtime = Depends(runtime)) -> HeadphoneStateOut:
    """The check's state: the trials of the part now due (also after a reload) and the calibration noise."""
    ctx = _context(session, p)
    prog = headphone.settle(session, p, ctx)
    session.commit()
    out = HeadphoneStateOut(
        status=prog.status,
        stage=stage_of(session, p, ctx),  # type: ignore[arg-type]
        checks=headphone.checks_for(ctx.spec.headphone),
        results={
            c: CheckSummaryOut(attempts_done=len(r.attempts), max_attempts=r.max_attempts, passed=r.passed) for c, r in prog.results.items()
        },
        ended=_ended(p, ctx),
    )
    if prog.status == "pending" and prog.check is not None and prog.attempt is not None and p.status == "started":
        n, _, _ = headphone.rule(ctx.spec.headphone, prog.check)
        plan = headphone.plan_attempt(prog.check, p.seed, prog.attempt, n)
        urls = headphone.MEDIA.url_for(rt.store, [headphone.CALIBRATION, *(t.stimulus for t in plan)])
        out.check = prog.check
        out.attempt = prog.attempt
        out.trials = [ScreeningTrialOut(index=t.index, media=urls[t.stimulus]) for t in plan]
        out.answered = prog.answered
        out.intervals_ms = headphone.intervals(prog.check)
        out.calibration = urls[headphone.CALIBRATION]
    # End the transaction stage_of opened before FastAPI validates the model in another thread
    # hop: a pooled connection held across that hop can deadlock the pool under load.
    session.commit()
    return out


@router.post(
    "/responses",
    response_model=HeadphoneSaveOut,
    status_code=201,
    responses={**ERRORS, 200: {"model": HeadphoneSaveOut, "description": "an identical retry of a stored answer"}, 422: {"model": ErrorOut}},
)
def post_answer(body: headphone.ScreeningAnswerIn, p: Participant = Depends(current_participant), session: Session = Depends(db)) -> Any:
    """Save one check answer as it happens. Idempotent like main-trial responses: an identical retry
    returns 200, a different answer to a stored trial 409; neither changes anything."""
    ctx = _context(session, p)
    try:
        result = headphone.save_answer(session, p, ctx, body)
        session.commit()
    except SaveError as exc:
        session.rollback()
        return JSONResponse(status_code=exc.status, content={"detail": exc.message, **exc.extra})
    prog = result.progress
    out = HeadphoneSaveOut(
        duplicate=result.duplicate,
        status=prog.status,
        stage=stage_of(session, p, ctx),  # type: ignore[arg-type]
        check=prog.check,
        attempt=prog.attempt,
        ended=_ended(p, ctx),
    )
    return JSONResponse(status_code=200 if result.duplicate else 201, content=out.model_dump())
