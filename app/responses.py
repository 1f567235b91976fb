"""Saving answers, the practice gate, completion, and the participant's progress state.

Saving is idempotent and insert-only. The unique constraint on (participant, trial index) decides
races: the first insert wins; a retry with the same payload (same sha256) is answered as saved;
a *different* payload for an answered trial is a conflict (HTTP 409) and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from app.experiments import ExperimentContext
from app.models import Participant, Response, Trial, utcnow
from app.participants import end_session, touch
from app.recruitment import completion_target

Short = Annotated[str, Field(max_length=200)]


class ClientEvent(BaseModel):
    """Something that happened in the page during a trial, e.g. the window lost focus."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]
    t: Annotated[float, Field(ge=-1e7, le=1e13)]  # ms, performance.now() of the page
    detail: Short | None = None


class ResponseIn(BaseModel):
    """One answer, as the runner posts it. Times from the client are ms."""

    model_config = ConfigDict(extra="forbid", strict=True)
    trial_index: Annotated[int, Field(ge=0, le=100_000)]
    answer: Annotated[str, Field(min_length=1, max_length=200)]
    rt_ms: Annotated[float, Field(ge=0, le=1e8)] | None = None
    # Client wall-clock times (ms since the Unix epoch).
    shown_at: Annotated[float, Field(ge=0, le=1e14)] | None = None
    responded_at: Annotated[float, Field(ge=0, le=1e14)] | None = None
    # Measured on-screen durations, e.g. fixation_ms, stimulus_ms, mask_ms, audio_ms.
    durations: Annotated[dict[Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")], Annotated[float, Field(ge=0, le=1e8)]], Field(max_length=16)] | None = None
    events: Annotated[list[ClientEvent], Field(max_length=500)] | None = None
    client: Annotated[dict[Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")], float | int | bool | Short | None], Field(max_length=32)] | None = None

    @field_validator("answer")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("answer is empty")
        return v

    def payload_sha256(self) -> str:
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


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


def gate_status(session: Session, p: Participant, ctx: ExperimentContext) -> Literal["passed", "failed", "pending"]:
    n = ctx.spec.gate.trials
    if n == 0:
        return "passed"
    rows = session.execute(
        sa.select(Response.correct)
        .join(Trial, Trial.id == Response.trial_id)
        # Trial.participant_id too, so the trials index is used (not a scan of every plan).
        .where(Response.participant_id == p.id, Trial.participant_id == p.id, Trial.phase == "gate")
    ).all()
    if len(rows) < n:
        return "pending"
    return "passed" if sum(1 for (c,) in rows if c) >= ctx.spec.gate.min_correct else "failed"


_T = Trial.__table__
_R = Response.__table__


def _trial_facts(with_gate: bool) -> sa.Select[Any]:
    """One query for everything a save needs to decide: the trial, any answer already stored for
    it, the gate tally (answered, correct) and the phase of the first *other* unanswered trial
    (the next stage once this one is answered). Saves are the hot path: one round trip here
    replaces five. Parameters ``pid`` (participant id) and ``idx`` (trial index); every lookup
    goes through the (participant_id, index) indexes, so it costs the same at any study size."""
    pid, idx = sa.bindparam("pid", type_=sa.Integer), sa.bindparam("idx", type_=sa.Integer)
    t3, r3 = _T.alias("nt"), _R.alias("nr")
    next_phase = (
        sa.select(t3.c.phase)
        .select_from(t3.outerjoin(r3, sa.and_(r3.c.participant_id == t3.c.participant_id, r3.c.trial_index == t3.c.index)))
        .where(t3.c.participant_id == pid, r3.c.id.is_(None), t3.c.index != idx)
        .order_by(t3.c.index)
        .limit(1)
        .scalar_subquery()
    )
    cols: list[Any] = [_T.c.id, _T.c.phase, _T.c.label, _R.c.payload_sha256, _R.c.correct, next_phase.label("next_phase")]
    joined = _T.outerjoin(_R, _R.c.trial_id == _T.c.id)
    if with_gate:
        t2, r2 = _T.alias("gt"), _R.alias("gr")
        g = (
            sa.select(sa.func.count(r2.c.id).label("gate_answered"), sa.func.count(r2.c.id).filter(r2.c.correct.is_(True)).label("gate_correct"))
            .select_from(t2.join(r2, sa.and_(r2.c.participant_id == t2.c.participant_id, r2.c.trial_index == t2.c.index)))
            .where(t2.c.participant_id == pid, t2.c.phase == "gate")
            .subquery("gate")
        )
        cols += [g.c.gate_answered, g.c.gate_correct]
        joined = joined.join(g, sa.true())
    return sa.select(*cols).select_from(joined).where(_T.c.participant_id == pid, _T.c.index == idx)


_FACTS = {True: _trial_facts(True), False: _trial_facts(False)}


@functools.cache
def _insert_response(dialect: str) -> Any:
    """``INSERT INTO responses … ON CONFLICT DO NOTHING RETURNING id`` for PostgreSQL or SQLite,
    built once per dialect (values are bound at execution)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(_R).on_conflict_do_nothing().returning(_R.c.id)


def save_response(session: Session, p: Participant, ctx: ExperimentContext, data: ResponseIn) -> SaveResult:
    """Store one answer (or recognize a retry). Raises SaveError for anything that must not be stored.

    Two statements: :func:`_trial_facts`, then ``INSERT … ON CONFLICT DO NOTHING`` (no savepoint);
    when a concurrent request stored the trial first, the insert returns nothing and the request
    is answered as that retry would be.
    """
    digest = data.payload_sha256()
    gate_n = ctx.spec.gate.trials
    row = session.execute(_FACTS[gate_n > 0], {"pid": p.id, "idx": data.trial_index}).first()
    if row is not None and row.payload_sha256 is not None:
        return _repeat(p, ctx, row.payload_sha256, row.correct, row.phase, data.trial_index, digest, row.next_phase)
    if p.status != "started":
        raise SaveError(409, f"this session has ended ({p.status.replace('_', ' ')}); no more answers are accepted")
    if row is None:
        raise SaveError(422, f"trial_index {data.trial_index} is not one of your trials")
    phase = row.phase
    if phase in ("main", "catch") and gate_n:
        if row.gate_answered < gate_n or row.gate_correct < ctx.spec.gate.min_correct:
            raise SaveError(409, "the practice gate has not been passed yet")
    if headphone_pending(p, ctx) and (ctx.spec.headphone.position != "before_main" or phase in ("main", "catch")):
        raise SaveError(409, "the headphone check has not been passed yet")
    if data.answer not in allowed_answers(ctx):
        raise SaveError(422, f"answer {data.answer[:50]!r} is not one of the response options")
    correct = data.answer == row.label
    values = {
        "participant_id": p.id,
        "trial_id": row.id,
        "trial_index": data.trial_index,
        "answer": data.answer,
        "correct": correct,
        "rt_ms": data.rt_ms,
        "shown_at": _epoch_ms(data.shown_at),
        "responded_at": _epoch_ms(data.responded_at),
        "received_at": utcnow(),
        "durations": data.durations,
        "events": [e.model_dump(exclude_none=True) for e in data.events] if data.events else None,
        "client": data.client,
        "payload_sha256": digest,
    }
    if session.execute(_insert_response(session.get_bind().dialect.name), values).first() is None:
        # Another request (a second tab, a retry racing the first try) stored this trial first.
        existing = session.execute(sa.select(_R.c.payload_sha256, _R.c.correct).where(_R.c.participant_id == p.id, _R.c.trial_index == data.trial_index)).first()
        if existing is None:
            raise SaveError(503, "the answer could not be stored; please retry")
        return _repeat(p, ctx, existing.payload_sha256, existing.correct, phase, data.trial_index, digest, row.next_phase)
    touch(p)
    ended = None
    if phase == "gate" and gate_status(session, p, ctx) == "failed":
        end_session(p, "screened_out", "screened_out", "failed the practice gate")
        ended = ended_info(p, ctx)
    reveal = phase == "practice" and ctx.spec.practice.feedback
    return SaveResult(duplicate=False, correct=correct if reveal else None, stage=stage_of(session, p, ctx, next_phase=row.next_phase), ended=ended)


def _repeat(p: Participant, ctx: ExperimentContext, stored_sha: str, stored_correct: bool, phase: str, index: int, digest: str, next_phase: str | None) -> SaveResult:
    if stored_sha != digest:
        raise SaveError(409, f"trial {index} was already answered with a different response; the first answer is kept")
    reveal = phase == "practice" and ctx.spec.practice.feedback
    ended = ended_info(p, ctx) if p.status != "started" else None
    return SaveResult(duplicate=True, correct=stored_correct if reveal else None, stage=stage_of(None, p, ctx, next_phase=next_phase), ended=ended)


def headphone_pending(p: Participant, ctx: ExperimentContext) -> bool:
    return ctx.spec.headphone.check != "none" and p.headphone_passed is None


def answered_indices(session: Session, p: Participant) -> list[int]:
    return list(session.scalars(sa.select(Response.trial_index).where(Response.participant_id == p.id).order_by(Response.trial_index)))


def next_unanswered_phase(session: Session, p: Participant, answered: list[int] | None = None) -> str | None:
    """Phase of the participant's first unanswered trial (None when all are answered); one query."""
    if answered is not None:
        done = set(answered)
        for index, phase in session.execute(sa.select(Trial.index, Trial.phase).where(Trial.participant_id == p.id).order_by(Trial.index)):
            if index not in done:
                return str(phase)
        return None
    missing = (
        sa.select(Trial.phase)
        .outerjoin(Response, sa.and_(Response.participant_id == Trial.participant_id, Response.trial_index == Trial.index))
        .where(Trial.participant_id == p.id, Response.id.is_(None))
        .order_by(Trial.index)
        .limit(1)
    )
    return session.scalar(missing)


_UNKNOWN: Any = object()


def stage_of(session: Session | None, p: Participant, ctx: ExperimentContext, answered: list[int] | None = None, *, next_phase: str | None = _UNKNOWN) -> str:
    """Where the participant is: consent | instructions | headphone | practice | gate | main | debrief | ended.

    Derived from stored facts only, so a reload (or another tab) always lands in the same place.
    ``next_phase``, when the caller already knows it, is the phase of the first unanswered trial
    (None: all answered); otherwise it is queried.
    """
    if p.status != "started":
        return "ended"
    hp = ctx.spec.headphone
    if p.consent_at is None:
        return "consent"
    if hp.position == "before_instructions" and headphone_pending(p, ctx):
        return "headphone"
    if p.instructions_at is None:
        return "instructions"
    if hp.position == "before_practice" and headphone_pending(p, ctx):
        return "headphone"
    if next_phase is _UNKNOWN:
        assert session is not None
        phase = next_unanswered_phase(session, p, answered)
    else:
        phase = next_phase
    if phase is None:
        return "debrief"
    if phase in ("main", "catch"):
        if hp.position == "before_main" and headphone_pending(p, ctx):
            return "headphone"
        return "main"
    return phase


def ended_info(p: Participant, ctx: ExperimentContext) -> dict[str, Any]:
    outcome = p.outcome or ("completed" if p.status == "completed" else p.status)
    info: dict[str, Any] = {"status": p.status, "outcome": outcome}
    if p.status in ("completed", "screened_out"):
        info["target"] = completion_target(
            ctx.spec, outcome, platform=p.platform, assignment_id=p.assignment_id, turk_submit_to=p.turk_submit_to
        )
    return info


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
