"""Saving answers, the practice gate and completion.

Saving is idempotent and insert-only. The unique constraint on (participant, trial index) decides
races: the first insert wins; a retry with the same payload (same sha256) is answered as saved;
a *different* payload for an answered trial is a conflict (HTTP 409) and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.core.db import SaveDb
from app.core.schema import Experiment, Participant, Response, Trial, utcnow
from app.core.security import token_hash
from app.experiments.context import ExperimentContext, cached_context, context_by_id
from app.participation.arrival import end_session, ended_values, touch_due
from app.participation.schemas import ResponseIn
from app.participation.stage import ParticipantState, answered_indices, ended_info, headphone_pending, stage_of

UNKNOWN_TOKEN = "unknown participant token; reopen the study link"
GATE_FAILED_REASON = "failed the practice gate"


class SaveError(Exception):
    """A response that cannot be saved. ``status`` is the HTTP status; ``message`` says why."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass
class SaveResult:
    duplicate: bool
    correct: bool | None  # only revealed for practice trials with feedback
    stage: str
    ended: dict[str, Any] | None


def _epoch_ms(v: float | None) -> dt.datetime | None:
    if v is None:
        return None
    return dt.datetime.fromtimestamp(v / 1000.0, tz=dt.timezone.utc)


def allowed_answers(ctx: ExperimentContext) -> set[str]:
    return {c["id"] for c in ctx.categories}


_T = Trial.__table__
_R = Response.__table__
_P = Participant.__table__
_E = Experiment.__table__


def _gate_tally() -> tuple[Any, Any]:
    """Scalar subqueries counting the participant's stored gate answers and the correct ones,
    correlated to the outer query's ``participants`` row (the save's facts, ending on a failed gate)."""
    t2, r2 = _T.alias("gt"), _R.alias("gr")
    rows = t2.join(r2, sa.and_(r2.c.participant_id == t2.c.participant_id, r2.c.trial_index == t2.c.index))
    mine = sa.and_(t2.c.participant_id == _P.c.id, t2.c.phase == "gate")
    answered = sa.select(sa.func.count(r2.c.id)).select_from(rows).where(mine).correlate(_P).scalar_subquery()
    correct = sa.select(sa.func.count(r2.c.id)).select_from(rows).where(mine, r2.c.correct.is_(True)).correlate(_P).scalar_subquery()
    return answered, correct


def _save_facts() -> sa.Select[Any]:
    """One query for everything a save needs to decide, found from the token's hash: the
    participant's state, the experiment's version (the key of the cached context), the trial, any
    answer already stored for it, the gate tally (answered, correct) and the phase of the first
    *other* unanswered trial (the next stage once this one is answered). Saves are the hot path:
    one round trip here replaces four. Parameters ``th`` (token hash) and ``idx`` (trial index);
    every lookup goes through a unique or (participant_id, index) index, so a save costs the same
    at any study size."""
    th, idx = sa.bindparam("th", type_=sa.String), sa.bindparam("idx", type_=sa.Integer)
    t3, r3 = _T.alias("nt"), _R.alias("nr")
    next_phase = (
        sa.select(t3.c.phase)
        .select_from(t3.outerjoin(r3, sa.and_(r3.c.participant_id == t3.c.participant_id, r3.c.trial_index == t3.c.index)))
        .where(t3.c.participant_id == _P.c.id, r3.c.id.is_(None), t3.c.index != idx)
        .order_by(t3.c.index)
        .limit(1)
        .correlate(_P)
        .scalar_subquery()
    )
    gate_answered, gate_correct = _gate_tally()
    return (
        sa.select(
            _P.c.id, _P.c.status, _P.c.outcome, _P.c.consent_at, _P.c.instructions_at, _P.c.headphone_passed,
            _P.c.last_seen_at, _P.c.platform, _P.c.assignment_id, _P.c.turk_submit_to,
            _P.c.experiment_id, _E.c.design_seed, _E.c.updated_at,
            _T.c.id.label("trial_id"), _T.c.phase, _T.c.label, _R.c.payload_sha256, _R.c.correct,
            next_phase.label("next_phase"), gate_answered.label("gate_answered"), gate_correct.label("gate_correct"),
        )  # fmt: skip
        .select_from(
            _P.join(_E, _E.c.id == _P.c.experiment_id)
            .outerjoin(_T, sa.and_(_T.c.participant_id == _P.c.id, _T.c.index == idx))
            .outerjoin(_R, _R.c.trial_id == _T.c.id)
        )
        .where(_P.c.token_hash == th)
    )


FACTS = _save_facts()


@functools.cache
def _insert_response(dialect: str) -> Any:
    """``INSERT INTO responses … ON CONFLICT DO NOTHING RETURNING id`` for PostgreSQL or SQLite,
    built once per dialect (values are bound at execution)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(_R).on_conflict_do_nothing().returning(_R.c.id)


TOUCH = sa.update(_P).where(_P.c.id == sa.bindparam("pid")).values(last_seen_at=sa.bindparam("now"))
STORED = sa.select(_R.c.payload_sha256, _R.c.correct).where(_R.c.participant_id == sa.bindparam("pid"), _R.c.trial_index == sa.bindparam("idx"))


def check_answer(facts: Any, ctx: ExperimentContext, data: ResponseIn) -> None:
    """Raise SaveError unless a first answer to this trial may be stored now. ``facts`` is a row of
    :func:`_save_facts` (the participant's state, trial_id, phase, gate_answered, gate_correct)."""
    p: ParticipantState = facts
    if p.status != "started":
        raise SaveError(409, f"this session has ended ({p.status.replace('_', ' ')}); no more answers are accepted")
    if facts.trial_id is None:
        raise SaveError(422, f"trial_index {data.trial_index} is not one of your trials")
    phase, gate_n = facts.phase, ctx.spec.gate.trials
    if phase in ("main", "catch") and gate_n:
        if facts.gate_answered < gate_n or facts.gate_correct < ctx.spec.gate.min_correct:
            raise SaveError(409, "the practice gate has not been passed yet")
    if headphone_pending(p, ctx) and (ctx.spec.headphone.position != "before_main" or phase in ("main", "catch")):
        raise SaveError(409, "the headphone check has not been passed yet")
    if data.answer not in allowed_answers(ctx):
        raise SaveError(422, f"answer {data.answer[:50]!r} is not one of the response options")


def response_values(row: Any, data: ResponseIn, digest: str, now: dt.datetime) -> dict[str, Any]:
    """The ``responses`` row for a first answer (keys are the column names)."""
    return {
        "participant_id": row.id,
        "trial_id": row.trial_id,
        "trial_index": data.trial_index,
        "answer": data.answer,
        "correct": data.answer == row.label,
        "rt_ms": data.rt_ms,
        "shown_at": _epoch_ms(data.shown_at),
        "responded_at": _epoch_ms(data.responded_at),
        "received_at": now,
        "durations": data.durations,
        "events": [e.model_dump(exclude_none=True) for e in data.events] if data.events else None,
        "client": data.client,
        "payload_sha256": digest,
    }


def first_answer_result(row: Any, ctx: ExperimentContext, correct: bool) -> SaveResult:
    """The answer to a stored first answer that did not end the session."""
    reveal = row.phase == "practice" and ctx.spec.practice.feedback
    return SaveResult(duplicate=False, correct=correct if reveal else None, stage=stage_of(None, row, ctx, next_phase=row.next_phase), ended=None)


def save_response(db: SaveDb, token: str, data: ResponseIn) -> SaveResult:
    """Store one answer (or recognize a retry). Raises SaveError for anything that must not be
    stored, including an unknown token (401).

    Two statements on the hot path: :func:`_save_facts`, then ``INSERT … ON CONFLICT DO NOTHING``
    (no savepoint, no ORM); when a concurrent request stored the trial first, the insert returns
    nothing and the request is answered as that retry would be. ``last_seen_at`` is refreshed at
    most every ``TOUCH_INTERVAL_S``. A gate answer may be followed by :data:`END_ON_FAILED_GATE`.
    ``app.participation.save_async`` is the same flow on PostgreSQL without threads.
    """
    if not token or len(token) > 200:
        raise SaveError(401, UNKNOWN_TOKEN)
    digest = data.payload_sha256()
    with db.unit() as conn:
        row = conn.execute(FACTS, {"th": token_hash(token), "idx": data.trial_index}).first()
        if row is None:
            raise SaveError(401, UNKNOWN_TOKEN)
        ctx = cached_context(row.experiment_id, row.design_seed, row.updated_at)
        if ctx is None:
            with Session(bind=conn) as session:
                ctx = context_by_id(session, row.experiment_id)
        if row.payload_sha256 is not None:
            return repeat_result(row, ctx, row.payload_sha256, row.correct, row.phase, data.trial_index, digest, row.next_phase)
        check_answer(row, ctx, data)
        now = utcnow()
        values = response_values(row, data, digest, now)
        if conn.execute(_insert_response(conn.dialect.name), values).first() is None:
            # Another request (a second tab, a retry racing the first try) stored this trial first.
            existing = conn.execute(STORED, {"pid": row.id, "idx": data.trial_index}).first()
            if existing is None:
                raise SaveError(503, "the answer could not be stored; please retry")
            return repeat_result(row, ctx, existing.payload_sha256, existing.correct, row.phase, data.trial_index, digest, row.next_phase)
        if touch_due(row.last_seen_at, now):
            conn.execute(TOUCH, {"pid": row.id, "now": now})
        gate = gate_check_params(row, ctx, values["correct"], now)
        if gate is not None and (ended := conn.execute(END_ON_FAILED_GATE, gate).first()) is not None:
            return gate_ended_result(ended, ctx)
    return first_answer_result(row, ctx, values["correct"])


def _end_on_failed_gate() -> sa.Update:
    """End the session when the gate is complete and failed, in one atomic statement that returns
    what the answer needs (``ended_info``), or nothing. Parameters ``pid``, ``n`` (gate trials),
    ``min_ok`` and ``now``. It runs *after* the answer committed, so of two tabs answering the
    last gate trials at once, the later statement counts both answers; ``status = 'started'``
    keeps it from ending a session twice."""
    answered, correct = _gate_tally()
    now = sa.bindparam("now", type_=_P.c.ended_at.type)
    return (
        sa.update(_P)
        .where(_P.c.id == sa.bindparam("pid"), _P.c.status == "started", answered >= sa.bindparam("n"), correct < sa.bindparam("min_ok"))
        .values(ended_values("screened_out", "screened_out", GATE_FAILED_REASON, now))
        .returning(_P.c.status, _P.c.outcome, _P.c.platform, _P.c.assignment_id, _P.c.turk_submit_to)
    )


END_ON_FAILED_GATE = _end_on_failed_gate()


def gate_check_params(row: Any, ctx: ExperimentContext, correct: bool, now: dt.datetime) -> dict[str, Any] | None:
    """Parameters of :data:`END_ON_FAILED_GATE` after a first gate answer, or None when the gate
    cannot fail any more (enough correct answers are already stored: they never go away)."""
    if row.phase != "gate" or row.gate_correct + int(correct) >= ctx.spec.gate.min_correct:
        return None
    return {"pid": row.id, "n": ctx.spec.gate.trials, "min_ok": ctx.spec.gate.min_correct, "now": now}


def gate_ended_result(ended: Any, ctx: ExperimentContext) -> SaveResult:
    return SaveResult(duplicate=False, correct=None, stage="ended", ended=ended_info(ended, ctx))


def repeat_result(p: ParticipantState, ctx: ExperimentContext, stored_sha: str, stored_correct: bool, phase: str, index: int, digest: str, next_phase: str | None) -> SaveResult:
    if stored_sha != digest:
        raise SaveError(409, f"trial {index} was already answered with a different response; the first answer is kept")
    reveal = phase == "practice" and ctx.spec.practice.feedback
    ended = ended_info(p, ctx) if p.status != "started" else None
    return SaveResult(duplicate=True, correct=stored_correct if reveal else None, stage=stage_of(None, p, ctx, next_phase=next_phase), ended=ended)


def complete(session: Session, p: Participant, ctx: ExperimentContext) -> dict[str, Any]:
    """Finish the session once every trial is answered; idempotent. Raises SaveError otherwise."""
    if p.status in ("completed", "screened_out"):
        return ended_info(p, ctx)
    if p.status != "started":
        raise SaveError(409, f"this session has ended ({p.status})")
    if stage_of(session, p, ctx) not in ("debrief",):
        total = session.scalar(sa.select(sa.func.count()).select_from(Trial).where(Trial.participant_id == p.id)) or 0
        answered = answered_indices(session, p)
        missing = sorted(set(range(total)) - set(answered))
        raise SaveError(409, f"{len(missing)} trial(s) are not answered yet", missing=missing[:50])
    outcome = "completed"
    min_catch = ctx.spec.catch.min_correct
    if min_catch is not None:
        n_ok = session.scalar(
            sa.select(sa.func.count())
            .select_from(Response)
            .join(Trial, Trial.id == Response.trial_id)
            .where(Response.participant_id == p.id, Trial.participant_id == p.id, Trial.phase == "catch", Response.correct.is_(True))
        ) or 0
        if n_ok < min_catch:
            outcome = "failed_attention"
    end_session(p, "completed", outcome)
    return ended_info(p, ctx)
