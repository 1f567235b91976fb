"""The per-process :class:`Runtime` and the FastAPI dependencies every package shares: the runtime
itself and a database session per request. (The participant behind a bearer token is
:mod:`app.participation.bearer`.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import AsyncPool, SaveDb
from app.core.media_store import MediaStore
from app.core.settings import Settings


@dataclass
class Runtime:
    """Per-process handles, built once at start-up (no per-request state lives here)."""

    settings: Settings
    sessions: sessionmaker[Session]
    store: MediaStore
    secret_key: str
    saves: SaveDb  # the save endpoint's ORM-free hot path
    async_pool: AsyncPool | None = None  # the same on PostgreSQL, on the event loop


# The dependencies here (and ``participant_token`` in app.participation.bearer) are ``async``
# although they do no I/O of their own: FastAPI runs a sync dependency in the thread pool, and every
# hop there and back costs a thread wake-up, which on a busy server adds latency to every request
# (the load benchmark measured it on the save path).


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
