"""After the load: does the database hold every answer the clients had confirmed, exactly once?"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from app.core.schema import Participant, Response
from app.core.security import token_hash
from app.participation.schemas import ResponseIn


@dataclass
class Audit:
    confirmed: int  # answers the clients saw confirmed (201, or 200 for an identical retry)
    stored: int  # response rows in the database
    lost: int  # confirmed but not stored
    duplicated: int  # (participant, trial) stored more than once
    mismatched: int  # stored with a different payload than the client sent
    unexpected: int  # stored although no client ever sent it
    unconfirmed: int  # sent and stored, but the answer never reached the client (run stopped)
    completed: int  # participants with status completed

    @property
    def ok(self) -> bool:
        return self.lost == self.duplicated == self.mismatched == self.unexpected == 0


def audit(url: str, confirmed: list[tuple[str, bytes]], attempted: list[tuple[str, bytes]]) -> Audit:
    """Compare the database with what the clients sent (``(token, body bytes)`` pairs)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            ids = dict(conn.execute(sa.select(Participant.token_hash, Participant.id)).all())
            stored = {(p, i): sha for p, i, sha in conn.execute(sa.select(Response.participant_id, Response.trial_index, Response.payload_sha256))}
            n_rows = conn.scalar(sa.select(sa.func.count()).select_from(Response)) or 0
            dup = conn.execute(
                sa.select(Response.participant_id, Response.trial_index)
                .group_by(Response.participant_id, Response.trial_index)
                .having(sa.func.count() > 1)
            ).all()
            completed = conn.scalar(sa.select(sa.func.count()).select_from(Participant).where(Participant.status == "completed")) or 0
    finally:
        engine.dispose()
    def keyed(pairs: list[tuple[str, bytes]]) -> dict[tuple[int, int], str]:
        out = {}
        for token, sent in pairs:
            pid = ids.get(token_hash(token))
            body = ResponseIn.model_validate_json(sent)
            out[(pid if pid is not None else -1, body.trial_index)] = body.payload_sha256()
        return out

    expected, sent = keyed(confirmed), keyed(attempted)
    lost = sum(1 for k in expected if k not in stored)
    mismatched = sum(1 for k, sha in sent.items() if k in stored and stored[k] != sha)
    unexpected = sum(1 for k in stored if k not in sent)
    unconfirmed = sum(1 for k in stored if k in sent and k not in expected)
    return Audit(
        confirmed=len(confirmed),
        stored=n_rows,
        lost=lost,
        duplicated=len(dup) + (n_rows - len(stored)),
        mismatched=mismatched,
        unexpected=unexpected,
        unconfirmed=unconfirmed,
        completed=completed,
    )
