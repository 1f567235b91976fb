"""The headphone-check JSON API (:mod:`app.participation.headphone`), authenticated by the
participant's bearer token.

The server decides everything: which part of the check is due, whether an answer is accepted,
and pass or fail. Correct answers and per-trial correctness are never sent to the browser.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from app.core.runtime import Runtime, db, runtime
from app.core.schema import Participant
from app.experiments.context import ExperimentContext, context_by_id
from app.participation.bearer import current_participant
from app.participation.headphone import screening, signals
from app.participation.saving import SaveError
from app.participation.schemas import (
    ERRORS,
    CheckSummaryOut,
    EndedOut,
    ErrorOut,
    HeadphoneSaveOut,
    HeadphoneStateOut,
    ScreeningAnswerIn,
    ScreeningTrialOut,
)
from app.participation.stage import ended_info, stage_of

router = APIRouter(prefix="/api/session/headphone", tags=["headphone check"])


def _ended(p: Participant, ctx: ExperimentContext) -> EndedOut | None:
    return EndedOut(**ended_info(p, ctx)) if p.status != "started" else None


@router.get("", response_model=HeadphoneStateOut, responses=ERRORS)
def get_state(p: Participant = Depends(current_participant), session: Session = Depends(db), rt: Runtime = Depends(runtime)) -> HeadphoneStateOut:
    """The check's state: the trials of the part now due (also after a reload) and the calibration noise."""
    ctx = context_by_id(session, p.experiment_id)
    prog = screening.settle(session, p, ctx)
    session.commit()
    out = HeadphoneStateOut(
        status=prog.status,
        stage=stage_of(session, p, ctx),  # type: ignore[arg-type]
        checks=screening.checks_for(ctx.spec.headphone),
        results={
            c: CheckSummaryOut(attempts_done=len(r.attempts), max_attempts=r.max_attempts, passed=r.passed) for c, r in prog.results.items()
        },
        ended=_ended(p, ctx),
    )
    if prog.status == "pending" and prog.check is not None and prog.attempt is not None and p.status == "started":
        n, _, _ = screening.rule(ctx.spec.headphone, prog.check)
        plan = screening.plan_attempt(prog.check, p.seed, prog.attempt, n)
        urls = signals.MEDIA.url_for(rt.store, [signals.CALIBRATION, *(t.stimulus for t in plan)])
        out.check = prog.check
        out.attempt = prog.attempt
        out.trials = [ScreeningTrialOut(index=t.index, media=urls[t.stimulus]) for t in plan]
        out.answered = prog.answered
        out.intervals_ms = signals.intervals(prog.check)
        out.calibration = urls[signals.CALIBRATION]
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
def post_answer(body: ScreeningAnswerIn, p: Participant = Depends(current_participant), session: Session = Depends(db)) -> Any:
    """Save one check answer as it happens. Idempotent like main-trial responses: an identical retry
    returns 200, a different answer to a stored trial 409; neither changes anything."""
    ctx = context_by_id(session, p.experiment_id)
    try:
        result = screening.save_answer(session, p, ctx, body)
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
