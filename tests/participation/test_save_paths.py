"""Two runners of one save flow: threaded SQLAlchemy Core (``app.participation.saving.save_response``,
used on SQLite) and async psycopg on the event loop (``app.participation.saving.save_async``, used
on PostgreSQL). They must store the same rows and give the same answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.core.db import SaveDb
from app.core.schema import Response
from app.core.settings import Settings
from app.participation import api
from app.participation.saving import save_response
from app.participation.schemas import ResponseIn
from tests.study import Study, build_study


@pytest.fixture
def study(settings: Settings, tmp_path: Path) -> Study:
    return build_study(settings, tmp_path)


def test_each_backend_saves_through_its_own_path(study: Study, monkeypatch: pytest.MonkeyPatch) -> None:
    threaded: list[int] = []

    def spy(db: SaveDb, token: str, data: ResponseIn) -> Any:
        threaded.append(data.trial_index)
        return save_response(db, token, data)

    monkeypatch.setattr(api, "save_response", spy)
    token = study.join("P1")
    study.start(token)
    labels = study.labels(token)
    assert study.answer(token, 0, labels[0]).status_code == 201
    on_pg = study.settings.sqlalchemy_url.startswith("postgresql")
    assert threaded == ([] if on_pg else [0])


def _stored(study: Study, index: int) -> dict[str, Any]:
    with study.sessions() as s:
        r = s.scalar(sa.select(Response).where(Response.trial_index == index))
        assert r is not None
        nulls = s.execute(
            sa.select(Response.durations.is_(None), Response.events.is_(None), Response.client.is_(None)).where(Response.id == r.id)
        ).one()
        return {
            "correct": r.correct, "rt_ms": r.rt_ms, "shown_at": r.shown_at,
            "responded_at": r.responded_at, "durations": r.durations, "events": r.events, "client": r.client,
            "sql_nulls": tuple(nulls), "received_tz": r.received_at.utcoffset(),
        }  # fmt: skip


@pytest.mark.parametrize("extra", [{}, {"shown_at": 1.7e12, "responded_at": 1.7e12 + 812.5, "events": [{"type": "blur", "t": 12.5}], "client": {"frame_ms": 16.7}}])
def test_both_paths_store_identical_rows(study: Study, extra: dict[str, Any]) -> None:
    """Trial 0 through the endpoint (the backend's own path), trial 1 through the threaded path
    called directly: the stored values, SQL NULLs included, are the same."""
    token = study.join("P1")
    study.start(token)
    labels = study.labels(token)
    body = {"rt_ms": 512.0, **extra}
    assert study.answer(token, 0, labels[0], **body).status_code == 201
    direct = save_response(SaveDb.of(study.sessions), token, ResponseIn(trial_index=1, answer=labels[1], durations={"stimulus_ms": 300.0}, **body))
    assert direct.duplicate is False
    a, b = _stored(study, 0), _stored(study, 1)
    assert a == b and a["correct"] is True


def test_both_paths_answer_a_retry_and_a_conflict_alike(study: Study) -> None:
    token = study.join("P1")
    study.start(token)
    labels = study.labels(token)
    first = study.answer(token, 0, labels[0])
    assert first.status_code == 201
    db = SaveDb.of(study.sessions)
    again = save_response(db, token, ResponseIn(trial_index=0, answer=labels[0], rt_ms=500.0, durations={"stimulus_ms": 300.0}))
    assert again.duplicate is True and again.stage == first.json()["stage"] and again.correct == first.json()["correct"]
    assert study.answer(token, 0, labels[0]).status_code == 200
    other = study.wrong(labels[0])
    assert study.answer(token, 0, other).status_code == 409
    from app.participation.saving import SaveError

    with pytest.raises(SaveError) as err:
        save_response(db, token, ResponseIn(trial_index=0, answer=other, rt_ms=500.0, durations={"stimulus_ms": 300.0}))
    assert err.value.status == 409
