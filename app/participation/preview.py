"""Researcher previews: run an experiment exactly as a participant would, without being recorded.

A preview is a real participant row, so the real runner, API, media and headphone check are
exercised end to end, but it is marked three ways so that it can never count:

* ``platform = "preview"``: every admin view, count and export filters it out (:data:`REAL`);
* ``slot = None``: it never holds a balancing slot, so the Latin square and ``max_participants``
  are untouched (its trial plan is the one the *next* real participant would get);
* ``excluded = True`` with a reason, for any code that only honours exclusions.

Previews are deleted when the researcher discards them, starts another preview of the same
experiment, or edits the experiment (an edit may change the design they were planned from).
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.core.schema import PREVIEW_PLATFORM, Experiment, Participant
from app.core.security import new_public_id, new_salt, participant_token, token_hash
from app.experiments.context import context_for
from app.participation.arrival import free_slots, token_for, write_plan


def discard_previews(session: Session, exp_id: int) -> int:
    """Delete the experiment's preview participants (their trials and answers cascade)."""
    ids = list(session.scalars(sa.select(Participant.id).where(Participant.experiment_id == exp_id, Participant.platform == PREVIEW_PLATFORM)))
    for p in session.scalars(sa.select(Participant).where(Participant.id.in_(ids))):
        session.delete(p)
    session.flush()
    return len(ids)


def start_preview(session: Session, exp: Experiment, *, secret_key: str, admin_name: str) -> str:
    """Create a fresh preview participant (replacing earlier previews); return its token.

    Works for experiments in any status, drafts included (caller commits).
    """
    discard_previews(session, exp.id)
    ctx = context_for(session, exp)
    slots = free_slots(session, exp.id, None)
    public_id, salt = new_public_id(), new_salt()
    p = Participant(
        experiment_id=exp.id,
        public_id=public_id,
        token_salt=salt,
        token_hash=token_hash(participant_token(secret_key, public_id, salt)),
        platform=PREVIEW_PLATFORM,
        platform_pid=f"admin:{admin_name}"[:128],
        attempt=1,
        status="started",
        slot=None,
        plan_slot=slots[0] if slots else 0,
        seed=secrets.randbits(62),
        excluded=True,
        exclude_reason="researcher preview (never counted)",
    )
    session.add(p)
    session.flush()
    write_plan(session, p, ctx)
    session.flush()
    return token_for(secret_key, p)
