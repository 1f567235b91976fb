"""Rate limits shared by every app process, kept in the database (``rate_limits`` table).

A limit is a fixed window: at most ``limit`` hits per ``key`` in each window of ``window_s``
seconds (windows start at multiples of ``window_s`` since the Unix epoch). Counting is one atomic
``INSERT … ON CONFLICT DO UPDATE … RETURNING`` statement, so concurrent requests in different
uvicorn workers (or on different machines) never both slip under the limit, and no lock is held
beyond that single row.

Usage (the caller commits; the hit counts even if the request later fails)::

    from app.core.ratelimit import hit
    if not hit(session, f"login-ip:{ip}", limit=20, window_s=600):
        ...  # answer 429

Keys are free-form strings up to 200 characters; prefix them with what is being limited
(``participant-ip:``, ``login-ip:``, ``login-user:``) so different limits never share a counter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.core.schema import RateLimit, utcnow

# Fraction of hits that also delete counters of long-past windows, so the table stays small
# without a scheduled job.
CLEANUP_PROBABILITY = 0.01
# Counters older than this are deleted by the occasional clean-up (seconds).
CLEANUP_AFTER_S = 24 * 3600


def _key(key: str) -> str:
    """Keys longer than the column are hashed (an attacker controls e.g. the username)."""
    if len(key) <= 200:
        return key
    return key[:100] + ":" + hashlib.sha256(key.encode()).hexdigest()


def window_start(now: dt.datetime, window_s: int) -> dt.datetime:
    epoch = int(now.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % window_s, tz=dt.timezone.utc)


def seconds_left(window_s: int, now: dt.datetime | None = None) -> int:
    """Seconds until the current window ends (for a ``Retry-After`` header)."""
    now = now or utcnow()
    return max(1, int(window_s - (now - window_start(now, window_s)).total_seconds()))


def _insert(session: Session):  # type: ignore[no-untyped-def]
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the app supports these two
        raise RuntimeError(f"rate limits need PostgreSQL or SQLite, not {name}")
    return insert


def count(session: Session, key: str, window_s: int, now: dt.datetime | None = None) -> int:
    """Record one hit for ``key`` in the current window and return the window's count (≥ 1)."""
    now = now or utcnow()
    start = window_start(now, window_s)
    insert = _insert(session)
    stmt = insert(RateLimit).values(key=_key(key), window_start=start, count=1)
    table = RateLimit.__table__
    same_window = table.c.window_start == stmt.excluded.window_start
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.key],
        set_={
            "count": sa.case((same_window, table.c.count + 1), else_=1),
            "window_start": stmt.excluded.window_start,
        },
    ).returning(table.c.count)
    n = int(session.execute(stmt).scalar_one())
    if random.random() < CLEANUP_PROBABILITY:
        cleanup(session, now)
    return n


def hit(session: Session, key: str, *, limit: int, window_s: int, now: dt.datetime | None = None) -> bool:
    """Count one hit; True while ``key`` is within ``limit`` hits in this window.

    ``limit <= 0`` disables the limit (nothing is written).
    """
    if limit <= 0:
        return True
    return count(session, key, window_s, now) <= limit


def peek(session: Session, key: str, window_s: int, now: dt.datetime | None = None) -> int:
    """Hits counted for ``key`` in the current window, without counting one more."""
    now = now or utcnow()
    row = session.get(RateLimit, _key(key))
    if row is None or row.window_start != window_start(now, window_s):
        return 0
    return row.count


def reset(session: Session, key: str) -> None:
    """Forget ``key``'s counter (e.g. after a successful login)."""
    session.execute(sa.delete(RateLimit).where(RateLimit.key == _key(key)))


def cleanup(session: Session, now: dt.datetime | None = None) -> int:
    """Delete counters whose window started more than a day ago; returns how many."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=CLEANUP_AFTER_S)
    res = session.execute(sa.delete(RateLimit).where(RateLimit.window_start < cutoff).execution_options(synchronize_session=False))
    return res.rowcount or 0
