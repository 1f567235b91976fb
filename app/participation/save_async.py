"""The save endpoint on PostgreSQL: async psycopg on the event loop, no ORM, no thread hop.

Saving answers is the hot path (one request per trial per participant). The synchronous
:func:`app.participation.saving.save_response` pays for a thread-pool hop, SQLAlchemy's statement
execution and the GIL traffic of many threads; profiled under the load benchmark those were most
of a save's CPU. This module runs the same flow, with the same statements (compiled once from
``app.participation.saving``) and the same decisions (``check_answer``, ``repeat_result``, ...), on a small
pool of autocommit psycopg connections owned by the worker's event loop. Each statement commits by
itself: the INSERT is the only write that matters and it is atomic. The one case that needs the
ORM (an experiment version not yet cached in this process) goes to a worker thread.

A connection that breaks (PostgreSQL restarted) fails its request with 503, which clients retry,
and the pool replaces it.
"""

from __future__ import annotations

from typing import Any

import anyio
import psycopg
import sqlalchemy as sa
from psycopg.types.json import Json
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import AsyncPool
from app.core.schema import Response, as_utc, utcnow
from app.core.security import token_hash
from app.experiments.context import ExperimentContext, cached_context, context_by_id
from app.participation.arrival import touch_due
from app.participation.saving import (
    END_ON_FAILED_GATE,
    FACTS,
    STORED,
    TOUCH,
    UNKNOWN_TOKEN,
    SaveError,
    SaveResult,
    check_answer,
    first_answer_result,
    gate_check_params,
    gate_ended_result,
    repeat_result,
    response_values,
)
from app.participation.schemas import ResponseIn

_DIALECT = postgresql.psycopg.dialect()  # type: ignore[attr-defined]


class _Sql:
    """A Core statement compiled once to PostgreSQL text with ``%(name)s`` parameters, plus the
    values of the literals SQLAlchemy turned into parameters (``LIMIT 1``, ``'gate'``)."""

    def __init__(self, stmt: Any) -> None:
        compiled = stmt.compile(dialect=_DIALECT)
        self.text = str(compiled)
        self.required = {name for name, bind in compiled.binds.items() if bind.required}
        self.literals = {k: v for k, v in compiled.params.items() if k not in self.required}

    def params(self, **values: Any) -> dict[str, Any]:
        assert values.keys() == self.required, (sorted(values), sorted(self.required))
        return {**self.literals, **values}


FACTS_SQL = _Sql(FACTS)
STORED_SQL = _Sql(STORED)
TOUCH_SQL = _Sql(TOUCH)
GATE_SQL = _Sql(END_ON_FAILED_GATE)
# Every column but the id: ``response_values`` fills them all.
RESPONSE_COLUMNS = tuple(c.name for c in Response.__table__.c if not c.primary_key)
_JSON_COLUMNS = frozenset(c.name for c in Response.__table__.c if isinstance(c.type, sa.JSON))
INSERT_SQL = (
    f"INSERT INTO responses ({', '.join(RESPONSE_COLUMNS)}) "
    f"VALUES ({', '.join(f'%({c})s' for c in RESPONSE_COLUMNS)}) ON CONFLICT DO NOTHING RETURNING id"
)


async def save_async(pool: AsyncPool, sessions: sessionmaker[Session], token: str, data: ResponseIn) -> SaveResult:
    """:func:`app.participation.saving.save_response`, on ``pool``. Raises SaveError."""
    if not token or len(token) > 200:
        raise SaveError(401, UNKNOWN_TOKEN)
    digest = data.payload_sha256()
    try:
        async with pool.pool.connection() as conn:
            row = await (await conn.execute(FACTS_SQL.text, FACTS_SQL.params(th=token_hash(token), idx=data.trial_index))).fetchone()
            if row is None:
                raise SaveError(401, UNKNOWN_TOKEN)
            # As UTCDateTime reads them, so that cache keys and comparisons match the ORM's values.
            row = row._replace(last_seen_at=as_utc(row.last_seen_at), updated_at=as_utc(row.updated_at))
            ctx = await _context(sessions, row)
            if row.payload_sha256 is not None:
                return repeat_result(row, ctx, row.payload_sha256, row.correct, row.phase, data.trial_index, digest, row.next_phase)
            check_answer(row, ctx, data)
            now = utcnow()
            values = response_values(row, data, digest, now)
            params = {k: (Json(v) if k in _JSON_COLUMNS else v) for k, v in values.items()}
            if await (await conn.execute(INSERT_SQL, params)).fetchone() is None:
                # Another request (a second tab, a retry racing the first try) stored it first.
                existing = await (await conn.execute(STORED_SQL.text, STORED_SQL.params(pid=row.id, idx=data.trial_index))).fetchone()
                if existing is None:
                    raise SaveError(503, "the answer could not be stored; please retry")
                return repeat_result(row, ctx, existing.payload_sha256, existing.correct, row.phase, data.trial_index, digest, row.next_phase)
            if touch_due(row.last_seen_at, now):
                await conn.execute(TOUCH_SQL.text, TOUCH_SQL.params(pid=row.id, now=now))
            gate = gate_check_params(row, ctx, values["correct"], now)
            if gate is not None:
                ended = await (await conn.execute(GATE_SQL.text, GATE_SQL.params(**gate))).fetchone()
                if ended is not None:
                    return gate_ended_result(ended, ctx)
    except psycopg.OperationalError as exc:
        # The database went away mid-request; whether the INSERT landed or not, a retry is
        # answered correctly (201 or an identical-retry 200).
        raise SaveError(503, "the database is unavailable; please retry") from exc
    return first_answer_result(row, ctx, values["correct"])

def _load_context(sessions: sessionmaker[Session], exp_id: int) -> ExperimentContext:
    with sessions() as session:
        return context_by_id(session, exp_id)

async def _context(sessions: sessionmaker[Session], row: Any) -> ExperimentContext:
    ctx = cached_context(row.experiment_id, row.design_seed, row.updated_at)
    if ctx is None:
        ctx = await anyio.to_thread.run_sync(_load_context, sessions, row.experiment_id)
    return ctx
