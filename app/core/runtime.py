"""FastAPI dependencies: the database session and the participant behind a bearer token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from app.models import Participant
from app.participants import authenticate
from app.responses import SaveDb
from app.save_async import AsyncSaves
from app.settings import Settings
from app.store import MediaStore


@dataclass
class Runtime:
    """Per-process handles, built once at start-up (no per-request state lives here)."""

    settings: Settings
    sessions: sessionmaker[Session]
    store: MediaStore
    secret_key: str
    saves: SaveDb  # the save endpoint's ORM-free hot path
    async_saves: AsyncSaves | None = None  # the same on PostgreSQL, on the event loop


# The two dependencies below are ``async`` although they do no I/O of their own: FastAPI runs a
# sync dependency in the thread pool, and every hop there and back costs a thread wake-up, which on a
# busy server adds latency to every request (the load benchmark measured it on the save path).


async def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


async def db(rt: Runtime = Depends(runtime)) -> AsyncIterator[Session]:
    """A session for the request. Creating one does no I/O (connections are taken on first use);
    closing one that is still inside a transaction rolls back over the network, so that case
    runs in a worker thread, never on the event loop.

    Rule for sync endpoints: end the transaction (commit or rollback) before returning anything
    but a ``Response``. FastAPI validates a returned model in a further thread-pool hop, before
    this close runs; a pooled connection held across that hop deadlocks the pool under load
    (every pool thread waits for a connection, every connection waits for a thread; the load
    benchmark hit it)."""
    session = rt.sessions()
    try:
        yield session
    finally:
        if session.in_transaction():
            # Shielded: when the client goes away mid-request the request is cancelled, and an
            # unshielded await here would skip the close and leak the connection for good.
            # Its own limiter, as FastAPI does for sync dependencies' exits: when every pool thread
            # waits for a database connection, the close that frees one must not wait for a thread.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close, limiter=anyio.CapacityLimiter(1))
        else:
            session.close()


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
