"""FastAPI dependencies: the database session and the participant behind a bearer token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from app.models import Participant
from app.participants import authenticate
from app.settings import Settings
from app.store import MediaStore


@dataclass
class Runtime:
    """Per-process handles, built once at start-up (no per-request state lives here)."""

    settings: Settings
    sessions: sessionmaker[Session]
    store: MediaStore
    secret_key: str


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def db(rt: Runtime = Depends(runtime)) -> Iterator[Session]:
    session = rt.sessions()
    try:
        yield session
    finally:
        session.close()


def current_participant(
    authorization: str | None = Header(default=None, description="`Bearer <participant token>`"),
    session: Session = Depends(db),
) -> Participant:
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(status_code=401, detail="missing participant token (Authorization: Bearer …)")
    p = authenticate(session, authorization[len("Bearer ") :].strip())
    if p is None:
        raise HTTPException(status_code=401, detail="unknown participant token; reopen the study link")
    return p
