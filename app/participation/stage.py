"""Where a participant is (consent, instructions, headphone, practice, gate, main, debrief, ended)
and what an ended session answers, derived from stored facts only, so that a reload or a second
tab always lands in the same place.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.core.schema import Participant, Response, Trial
from app.experiments.context import ExperimentContext
from app.participation.recruitment import completion_target


class ParticipantState(Protocol):
    """What deciding a participant's stage reads: an ORM ``Participant`` or a row of the save
    path's query (which loads no ORM object)."""

    @property
    def id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def consent_at(self) -> dt.datetime | None: ...
    @property
    def instructions_at(self) -> dt.datetime | None: ...
    @property
    def headphone_passed(self) -> bool | None: ...
    @property
    def platform(self) -> str: ...
    @property
    def assignment_id(self) -> str | None: ...
    @property
    def turk_submit_to(self) -> str | None: ...


def headphone_pending(p: ParticipantState, ctx: ExperimentContext) -> bool:
    return ctx.spec.headphone.check != "none" and p.headphone_passed is None


def answered_indices(session: Session, p: Participant) -> list[int]:
    return list(session.scalars(sa.select(Response.trial_index).where(Response.participant_id == p.id).order_by(Response.trial_index)))


def next_unanswered_phase(session: Session, p: ParticipantState, answered: list[int] | None = None) -> str | None:
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


def stage_of(session: Session | None, p: ParticipantState, ctx: ExperimentContext, answered: list[int] | None = None, *, next_phase: str | None = _UNKNOWN) -> str:
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


def ended_info(p: ParticipantState, ctx: ExperimentContext) -> dict[str, Any]:
    outcome = p.outcome or ("completed" if p.status == "completed" else p.status)
    info: dict[str, Any] = {"status": p.status, "outcome": outcome}
    if p.status in ("completed", "screened_out"):
        info["target"] = completion_target(
            ctx.spec, outcome, platform=p.platform, assignment_id=p.assignment_id, turk_submit_to=p.turk_submit_to
        )
    return info
