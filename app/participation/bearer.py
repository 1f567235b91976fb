"""FastAPI dependencies of participant requests: the bearer token and the participant behind it."""

from __future__ import annotations

from fastapi import Depends, Header, HTTPException
from sqlalchemy.orm import Session

from app.core.runtime import db
from app.core.schema import Participant
from app.participation.arrival import authenticate


async def participant_token(authorization: str | None = Header(default=None, description="`Bearer <participant token>`")) -> str:
    """The bearer token of a participant request (checked against the database by
    :func:`require_participant`, inside the endpoint)."""
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(status_code=401, detail="missing participant token (Authorization: Bearer …)")
    return authorization[len("Bearer ") :].strip()


def require_participant(session: Session, token: str) -> Participant:
    p = authenticate(session, token)
    if p is None:
        raise HTTPException(status_code=401, detail="unknown participant token; reopen the study link")
    return p


def current_participant(token: str = Depends(participant_token), session: Session = Depends(db)) -> Participant:
    """The participant behind the bearer token, for endpoints off the hot path.

    A sync dependency runs in the thread pool *before* the endpoint, in another thread. Holding a
    pooled connection across that hop can deadlock under load: every pool thread waits for a
    connection while the requests that hold the connections wait for a thread. So the lookup's
    transaction ends here (the loaded participant stays usable) and the endpoint takes a
    connection of its own. Busy endpoints call :func:`require_participant` inside themselves
    instead, which needs one connection and one thread hop in all.
    """
    p = require_participant(session, token)
    session.commit()
    return p
