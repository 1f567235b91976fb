"""Participants: arrival, balancing slots, fixed trial plans, resume, and ending a session.

Balancing slots are rows of the Latin square (``app.experiments.design``). A participant holds a slot while
they count (started or completed); screened-out, failed-attention, returned and abandoned
participants give theirs back, so the next arrival takes over the same row. Slots are unique per
experiment by a database constraint: concurrent arrivals never share one and no table lock is
taken; a loser of the race simply retries with the next free slot. ``max_participants`` caps the
slot numbers, so the cap also holds under concurrency.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from app.core.schema import Experiment, Participant, Trial, utcnow
from app.core.security import new_public_id, new_salt, participant_token, token_hash
from app.experiments.context import ExperimentContext, context_for
from app.experiments.design import NATURAL, plan_trials
from app.participation.recruitment import Arrival

MAX_SLOT_RETRIES = 50
# last_seen_at is refreshed at most this often, to keep the save path to one write (seconds).
TOUCH_INTERVAL_S = 30


@dataclass
class Entry:
    """The outcome of an arrival at ``/e/{slug}``. ``kind``: run | preview | blocked | full |
    not_open | paused | closed | ended | rate_limited. ``token`` is set for run and ended."""

    kind: str
    participant: Participant | None = None
    token: str | None = None


def token_for(secret_key: str, p: Participant) -> str:
    return participant_token(secret_key, p.public_id, p.token_salt)


# Built once: every participant request runs it, and building a statement costs more CPU than
# running it. The experiment comes in the same query (every participant request needs it next),
# minus its spec JSON, which the per-process ExperimentContext cache already holds.
_BY_TOKEN = (
    sa.select(Participant)
    .where(Participant.token_hash == sa.bindparam("token_hash"))
    .options(joinedload(Participant.experiment, innerjoin=True).defer(Experiment.spec))
)


def authenticate(session: Session, token: str) -> Participant | None:
    if not token or len(token) > 200:
        return None
    return session.scalar(_BY_TOKEN, {"token_hash": token_hash(token)})


def touch_due(last_seen_at: dt.datetime, now: dt.datetime) -> bool:
    return (now - last_seen_at).total_seconds() > TOUCH_INTERVAL_S


def touch(p: Participant, now: dt.datetime | None = None) -> None:
    now = now or utcnow()
    if touch_due(p.last_seen_at, now):
        p.last_seen_at = now


def ended_values(status: str, outcome: str | None, reason: str | None, now: Any) -> dict[str, Any]:
    """The participant columns that ending a session sets (``now``: a datetime or a SQL bind
    parameter). Those who no longer count give back their slot."""
    values: dict[str, Any] = {"status": status, "outcome": outcome, "ended_at": now}
    if status == "completed":
        values["completed_at"] = now
    if reason:
        values["screen_reason"] = reason[:200]
    if status != "completed" or outcome == "failed_attention":
        values["slot"] = None
    return values


def end_session(p: Participant, status: str, outcome: str | None, reason: str | None = None) -> None:
    """Move a participant to an ended status (see :func:`ended_values`)."""
    for column, value in ended_values(status, outcome, reason, utcnow()).items():
        setattr(p, column, value)


def sweep_abandoned(session: Session, exp: Experiment, minutes: int, now: dt.datetime | None = None) -> int:
    """Mark participants silent for ``minutes`` as abandoned, freeing their slots. Returns how many."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(minutes=minutes)
    res = session.execute(
        sa.update(Participant)
        .where(Participant.experiment_id == exp.id, Participant.status == "started", Participant.last_seen_at < cutoff)
        .values(status="abandoned", slot=None, ended_at=now)
        .execution_options(synchronize_session=False)
    )
    return res.rowcount or 0


def free_slots(session: Session, exp_id: int, limit: int | None) -> list[int]:
    """Free slots in increasing order (a few, enough to retry on), below ``limit`` if given.

    (Fetching the taken slots is an index-only scan of the unique (experiment, slot) index. A
    gap-finding anti-join in SQL was tried for large studies: with the fresh table statistics of
    a new study, PostgreSQL planned it as a nested loop taking 0.6 s at 800 participants.)"""
    taken = set(session.scalars(sa.select(Participant.slot).where(Participant.experiment_id == exp_id, Participant.slot.is_not(None))))
    out: list[int] = []
    k = 0
    while len(out) < 8 and (limit is None or k < limit):
        if k not in taken:
            out.append(k)
        k += 1
    return out


def _find_existing(session: Session, exp: Experiment, arrival: Arrival) -> list[Participant]:
    if arrival.pid is None:
        return []
    return list(
        session.scalars(
            sa.select(Participant)
            .where(Participant.experiment_id == exp.id, Participant.platform == arrival.platform, Participant.platform_pid == arrival.pid)
            .order_by(Participant.attempt)
        )
    )


def _resume(session: Session, p: Participant, secret_key: str) -> Entry:
    if p.status == "abandoned":
        # They came back: carry on with the same plan; re-take the slot if nobody else has.
        p.status = "started"
        p.ended_at = None
        p.last_seen_at = utcnow()
        try:
            with session.begin_nested():
                p.slot = p.plan_slot
                session.flush()
        except IntegrityError:
            p.slot = None
    if p.status in ("started",):
        touch(p)
        return Entry("run", p, token_for(secret_key, p))
    return Entry("ended", p, token_for(secret_key, p))


def enter(
    session: Session,
    exp: Experiment,
    arrival: Arrival,
    *,
    secret_key: str,
    user_agent: str | None = None,
    existing: Participant | None = None,
    may_create: Callable[[], bool] | None = None,
) -> Entry:
    """Create or resume the participant for an arrival. Commits what it creates.

    ``may_create`` is asked (once, in this session's transaction) before a *new* participant is
    created, e.g. a per-address rate limit; resuming never asks it. False gives ``rate_limited``.
    """
    if exp.status == "draft":
        return Entry("not_open")
    if arrival.is_preview:
        return Entry("preview")
    ctx = context_for(session, exp)
    spec = ctx.spec
    previous = _find_existing(session, exp, arrival) if existing is None else [existing]
    if previous:
        latest = previous[-1]
        same_attempt = arrival.attempt_key is None or arrival.attempt_key == (
            latest.session_id if latest.platform == "prolific" else latest.assignment_id
        )
        if existing is not None or same_attempt:
            entry = _resume(session, latest, secret_key)
            session.commit()
            return entry
        if not spec.allow_repeats:
            return Entry("blocked", latest)
    if exp.status in ("paused", "closed"):
        return Entry(exp.status)
    if may_create is not None and not may_create():
        session.commit()
        return Entry("rate_limited")
    attempt = (previous[-1].attempt + 1) if previous else 1
    sweep_abandoned(session, exp, spec.abandon_after_minutes)
    session.commit()
    for attempt_no in range(MAX_SLOT_RETRIES):
        slots = free_slots(session, exp.id, spec.max_participants)
        if not slots:
            return Entry("full")
        # The lowest free slot, so the first N counting participants fill rows 0..N-1. After a
        # collision (arrivals at the same moment all see the same lowest slot) spread out over the
        # next few free ones, so a burst of arrivals does not retry in lock step; the next
        # arrivals fill any gap left, because they again take the lowest.
        slot = slots[0] if attempt_no == 0 else random.choice(slots[: 2 + attempt_no])
        p = _new_participant(exp, arrival, slot, attempt, user_agent, secret_key)
        session.add(p)
        try:
            session.flush()
            write_plan(session, p, ctx)
            session.commit()
        except IntegrityError:
            session.rollback()
            again = _find_existing(session, exp, arrival)
            if arrival.pid is not None and len(again) >= attempt:
                # A concurrent request (double click, two tabs) created this attempt first.
                entry = _resume(session, again[attempt - 1], secret_key)
                session.commit()
                return entry
            continue
        return Entry("run", p, token_for(secret_key, p))
    raise RuntimeError("could not find a free balancing slot after many retries; try again")


def _new_participant(exp: Experiment, arrival: Arrival, slot: int, attempt: int, user_agent: str | None, secret_key: str) -> Participant:
    public_id, salt = new_public_id(), new_salt()
    return Participant(
        experiment_id=exp.id,
        public_id=public_id,
        token_salt=salt,
        token_hash=token_hash(participant_token(secret_key, public_id, salt)),
        platform=arrival.platform,
        platform_pid=arrival.pid,
        study_id=arrival.study_id,
        session_id=arrival.session_id,
        assignment_id=arrival.assignment_id,
        hit_id=arrival.hit_id,
        turk_submit_to=arrival.turk_submit_to,
        attempt=attempt,
        status="started",
        slot=slot,
        plan_slot=slot,
        seed=secrets.randbits(62),
        user_agent=(user_agent or "")[:512] or None,
    )


def write_plan(session: Session, p: Participant, ctx: ExperimentContext) -> None:
    """Write the participant's complete, final trial plan (one bulk insert)."""
    rows: list[dict[str, Any]] = []
    for t in plan_trials(ctx.design, p.plan_slot, p.seed):
        model = layer = None
        layer_index = None
        if t.condition is not None and t.condition != NATURAL:
            model, layer = t.condition.split("/", 1)
            metamer = t.planned_stimulus or t.stimulus
            layer_index = metamer.layer_index if metamer.kind == "metamer" else None
        rows.append(
            {
                "participant_id": p.id,
                "index": t.index,
                "phase": t.phase,
                "block": t.block,
                "stimulus_id": t.stimulus.id,
                "condition": t.condition,
                "model": model,
                "layer": layer,
                "layer_index": layer_index,
                "source": t.source,
                "label": t.label,
                "swapped": t.swapped,
                "swap_reason": t.swap_reason,
                "planned_stimulus_id": t.planned_stimulus.id if t.planned_stimulus else None,
            }
        )
    # Core executemany: the ORM bulk path costs about twice the CPU for the same statements.
    session.execute(sa.insert(Trial.__table__), rows)

