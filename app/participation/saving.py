"""Saving answers, the practice gate and completion.

Saving is idempotent and insert-only. The unique constraint on (participant, trial index) decides
races: the first insert wins; a retry with the same payload (same sha256) is answered as saved;
a *different* payload for an answered trial is a conflict (HTTP 409) and changes nothing.

**One save flow, two runners.** Saving an answer is the hot path (one request per trial per
participant). Its sequence of statements and every decision between them are written once, in
:func:`save_steps`: a generator that does no I/O. It yields each step to take (a
:class:`Statement` to run, or :class:`NeedContext` when the experiment's version is not cached in
this process), is sent the result (the statement's first row, or None), and returns the
:class:`SaveResult`. Two runners execute the steps:

* :func:`save_response`, threaded: SQLAlchemy Core on one connection (SQLite: inside one
  ``BEGIN IMMEDIATE`` transaction; PostgreSQL: autocommit), used on SQLite and wherever the
  PostgreSQL pool does not serve the running event loop;
* :func:`save_async`, on the event loop: async psycopg on the per-process autocommit pool
  (:class:`~app.core.db.AsyncPool`), PostgreSQL only, with no thread hop and no SQLAlchemy
  execution (profiled under the load benchmark, those were most of a save's CPU).

A runner only translates: it executes the statement on its driver, adapts values (JSON
parameters, UTC datetimes) and maps its driver's connection failures to 503. A fix to what a save
decides belongs in :func:`save_steps` and applies to both.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, NamedTuple

import anyio
import psycopg
import sqlalchemy as sa
from psycopg.types.json import Json
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import AsyncPool, SaveDb
from app.core.schema import Experiment, Participant, Response, Trial, UTCDateTime, as_utc, utcnow
from app.core.security import token_hash
from app.experiments.context import ExperimentContext, cached_context, context_by_id
from app.participation.arrival import end_session, ended_values, touch_due
from app.participation.schemas import ResponseIn
from app.participation.stage import ParticipantState, answered_indices, ended_info, headphone_pending, stage_of

UNKNOWN_TOKEN = "unknown participant token; reopen the study link"
GATE_FAILED_REASON = "failed the practice gate"
DATABASE_UNAVAILABLE = "the database is unavailable; please retry"


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


# ------------------------------------------------------------------------------- the flow


class Op(enum.Enum):
    """The statements a save may run, each defined once above as SQLAlchemy Core."""

    FACTS = "facts"  # FACTS: everything a save decides on, found from the token's hash
    INSERT = "insert"  # INSERT … ON CONFLICT DO NOTHING RETURNING id (built per dialect)
    STORED = "stored"  # STORED: the answer a concurrent request stored first
    TOUCH = "touch"  # TOUCH: refresh last_seen_at
    END_ON_FAILED_GATE = "end_on_failed_gate"  # END_ON_FAILED_GATE: end the session on a failed gate


class Statement(NamedTuple):
    """A step of the save: run ``op`` with ``params`` and send back its first row (None when it
    returns no row or returns nothing). (Tuples: a save makes two or three of these.)"""

    op: Op
    params: dict[str, Any]


class NeedContext(NamedTuple):
    """A step of the save: send back the :class:`ExperimentContext` of experiment
    ``experiment_id`` (its version is not cached in this process; once per version)."""

    experiment_id: int


Step = Statement | NeedContext


def save_steps(token: str, data: ResponseIn) -> Generator[Step, Any, SaveResult]:
    """Store one answer (or recognize a retry), as steps for a runner; raises SaveError for
    anything that must not be stored, including an unknown token (401, before any step).

    Two statements on the hot path: :data:`FACTS`, then ``INSERT … ON CONFLICT DO NOTHING``
    (no savepoint, no ORM); when a concurrent request stored the trial first, the insert returns
    nothing and the request is answered as that retry would be. ``last_seen_at`` is refreshed at
    most every ``TOUCH_INTERVAL_S``. A gate answer may be followed by :data:`END_ON_FAILED_GATE`.
    """
    if not token or len(token) > 200:
        raise SaveError(401, UNKNOWN_TOKEN)
    digest = data.payload_sha256()
    row = yield Statement(Op.FACTS, {"th": token_hash(token), "idx": data.trial_index})
    if row is None:
        raise SaveError(401, UNKNOWN_TOKEN)
    ctx = cached_context(row.experiment_id, row.design_seed, row.updated_at)
    if ctx is None:
        ctx = yield NeedContext(row.experiment_id)
    if row.payload_sha256 is not None:
        return repeat_result(row, ctx, row.payload_sha256, row.correct, row.phase, data.trial_index, digest, row.next_phase)
    check_answer(row, ctx, data)
    now = utcnow()
    values = response_values(row, data, digest, now)
    if (yield Statement(Op.INSERT, values)) is None:
        # Another request (a second tab, a retry racing the first try) stored this trial first.
        existing = yield Statement(Op.STORED, {"pid": row.id, "idx": data.trial_index})
        if existing is None:
            raise SaveError(503, "the answer could not be stored; please retry")
        return repeat_result(row, ctx, existing.payload_sha256, existing.correct, row.phase, data.trial_index, digest, row.next_phase)
    if touch_due(row.last_seen_at, now):
        yield Statement(Op.TOUCH, {"pid": row.id, "now": now})
    gate = gate_check_params(row, ctx, values["correct"], now)
    if gate is not None and (ended := (yield Statement(Op.END_ON_FAILED_GATE, gate))) is not None:
        return gate_ended_result(ended, ctx)
    return first_answer_result(row, ctx, values["correct"])


# --------------------------------------------------------------------- threaded runner

# Every statement but the INSERT, which is built per dialect (:func:`_insert_response`).
CORE_STATEMENTS = {Op.FACTS: FACTS, Op.STORED: STORED, Op.TOUCH: TOUCH, Op.END_ON_FAILED_GATE: END_ON_FAILED_GATE}


def _run_core(conn: Connection, step: Statement) -> Any:
    stmt = _insert_response(conn.dialect.name) if step.op is Op.INSERT else CORE_STATEMENTS[step.op]
    result = conn.execute(stmt, step.params)
    return result.first() if result.returns_rows else None


def save_response(db: SaveDb, token: str, data: ResponseIn) -> SaveResult:
    """:func:`save_steps` run in this thread with SQLAlchemy Core, on one connection of ``db``
    (SQLite: one ``BEGIN IMMEDIATE`` transaction). Raises SaveError."""
    steps = save_steps(token, data)
    step = next(steps)  # an invalid token fails here, before any I/O
    with db.unit() as conn:
        while True:
            if isinstance(step, NeedContext):
                # A session on this connection: a second connection would wait on SQLite's write
                # lock, which this one holds.
                with Session(bind=conn) as session:
                    value: Any = context_by_id(session, step.experiment_id)
            else:
                value = _run_core(conn, step)
            try:
                step = steps.send(value)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


# ------------------------------------------------------------------------- async runner

_DIALECT = postgresql.psycopg.dialect()  # type: ignore[attr-defined]


class _PgStatement:
    """A Core statement compiled once to PostgreSQL text with ``%(name)s`` parameters, with the
    values of the literals SQLAlchemy turned into parameters (``LIMIT 1``, ``'gate'``) and the
    result columns that UTCDateTime would read as aware UTC."""

    def __init__(self, stmt: Any) -> None:
        compiled = stmt.compile(dialect=_DIALECT)
        self.text = str(compiled)
        self.required = {name for name, bind in compiled.binds.items() if bind.required}
        self.literals = {k: v for k, v in compiled.params.items() if k not in self.required}
        self.utc = tuple(i for i, c in enumerate(stmt.exported_columns) if isinstance(c.type, UTCDateTime))

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        assert values.keys() == self.required, (sorted(values), sorted(self.required))
        return {**self.literals, **values}

    def row(self, row: Any) -> Any:
        """As UTCDateTime reads it, so that cache keys and comparisons match the ORM's values."""
        if not self.utc:
            return row
        values = list(row)
        for i in self.utc:
            values[i] = as_utc(values[i])
        return row._make(values)


class _PgInsert:
    """The INSERT, written for psycopg: every column but the id (``response_values`` fills them
    all), JSON columns adapted."""

    columns = tuple(c.name for c in Response.__table__.c if not c.primary_key)
    json = frozenset(c.name for c in Response.__table__.c if isinstance(c.type, sa.JSON))
    text = (
        f"INSERT INTO responses ({', '.join(columns)}) "
        f"VALUES ({', '.join(f'%({c})s' for c in columns)}) ON CONFLICT DO NOTHING RETURNING id"
    )

    def params(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: (Json(v) if k in self.json else v) for k, v in values.items()}

    def row(self, row: Any) -> Any:
        return row


_PG: dict[Op, _PgStatement | _PgInsert] = {op: _PgStatement(stmt) for op, stmt in CORE_STATEMENTS.items()} | {Op.INSERT: _PgInsert()}


async def _run_pg(conn: psycopg.AsyncConnection[Any], step: Statement) -> Any:
    sql = _PG[step.op]
    cursor = await conn.execute(sql.text, sql.params(step.params))
    if cursor.description is None:
        return None
    row = await cursor.fetchone()
    return None if row is None else sql.row(row)


def _load_context(sessions: sessionmaker[Session], exp_id: int) -> ExperimentContext:
    with sessions() as session:
        return context_by_id(session, exp_id)


async def save_async(pool: AsyncPool, sessions: sessionmaker[Session], token: str, data: ResponseIn) -> SaveResult:
    """:func:`save_steps` run on the event loop with async psycopg, on a connection of ``pool``
    (autocommit: each statement commits by itself; the INSERT is the only write that matters and
    it is atomic). The one step that needs the ORM (:class:`NeedContext`) goes to a worker thread
    with a session of its own. Raises SaveError.

    A connection that breaks (PostgreSQL restarted) fails its request with 503, which clients
    retry, and the pool replaces it; whether the INSERT landed or not, the retry is answered
    correctly (201 or an identical-retry 200)."""
    steps = save_steps(token, data)
    step = next(steps)  # an invalid token fails here, before any I/O
    try:
        async with pool.pool.connection() as conn:
            while True:
                if isinstance(step, NeedContext):
                    value: Any = await anyio.to_thread.run_sync(_load_context, sessions, step.experiment_id)
                else:
                    value = await _run_pg(conn, step)
                try:
                    step = steps.send(value)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
    except psycopg.OperationalError as exc:
        raise SaveError(503, DATABASE_UNAVAILABLE) from exc


# ---------------------------------------------------------------------------- completion


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
