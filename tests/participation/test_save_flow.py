"""The save flow (``app.participation.saving.save_steps``), written once and run by two runners:
its steps are the same whichever runner executes them, and its decisions can be driven step by
step with real rows, including races that are hard to produce over HTTP."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from app.core.schema import Response
from app.core.settings import Settings
from app.experiments.context import context_by_id
from app.participation import saving
from app.participation.saving import CORE_STATEMENTS, NeedContext, Op, SaveError, SaveResult, Statement, Step, save_steps
from app.participation.schemas import ResponseIn
from tests.study import Study, build_study


@pytest.fixture
def study(settings: Settings, tmp_path: Path) -> Study:
    return build_study(settings, tmp_path)


def body(index: int, answer: str) -> ResponseIn:
    return ResponseIn(trial_index=index, answer=answer, rt_ms=500.0, durations={"stimulus_ms": 300.0})


def run(study: Study, step: Statement) -> Any:
    """One statement of the flow executed on the study's database, as it stands now."""
    with study.sessions.kw["bind"].connect() as conn:
        return conn.execute(CORE_STATEMENTS[step.op], step.params).first()


def to_insert(study: Study, flow: Generator[Step, Any, SaveResult]) -> Statement:
    """Drive ``flow`` with the database's real answers up to the INSERT it asks for."""
    step = next(flow)
    assert isinstance(step, Statement) and step.op is Op.FACTS
    step = flow.send(run(study, step))
    if isinstance(step, NeedContext):
        with study.sessions() as s:
            step = flow.send(context_by_id(s, step.experiment_id))
    assert isinstance(step, Statement) and step.op is Op.INSERT
    return step


@pytest.mark.parametrize("token", ["", "x" * 201])
def test_a_token_that_cannot_be_one_is_refused_before_any_statement(token: str) -> None:
    with pytest.raises(SaveError) as err:
        next(save_steps(token, body(0, "a")))
    assert err.value.status == 401


def test_an_unknown_token_ends_the_flow_after_the_facts_query() -> None:
    flow = save_steps("not-a-token", body(0, "a"))
    assert next(flow).op is Op.FACTS  # type: ignore[union-attr]
    with pytest.raises(SaveError) as err:
        flow.send(None)
    assert err.value.status == 401


def test_each_runner_takes_the_flow_s_steps(study: Study, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the endpoint (the backend's own runner, threaded on SQLite, async on PostgreSQL),
    the statements run are the flow's: facts then insert; facts alone for a retry; and after a
    failed gate answer the statement that ends the session."""
    ran: list[Op] = []
    for name in ("_run_core", "_run_pg"):
        real = getattr(saving, name)

        def recording(conn: Any, step: Statement, real: Any = real) -> Any:
            ran.append(step.op)
            return real(conn, step)

        monkeypatch.setattr(saving, name, recording)
    token = study.join("P1")
    study.start(token)
    labels = study.labels(token)

    def steps(index: int, answer: str) -> tuple[int, list[Op]]:
        ran.clear()
        r = study.answer(token, index, answer)
        return r.status_code, list(ran)

    assert steps(0, labels[0]) == (201, [Op.FACTS, Op.INSERT])
    assert steps(0, labels[0]) == (200, [Op.FACTS])
    assert steps(1, labels[1]) == (201, [Op.FACTS, Op.INSERT])
    # The gate (trials 2 and 3) needs 1 correct of 2: a wrong answer may end the session.
    assert steps(2, study.wrong(labels[2])) == (201, [Op.FACTS, Op.INSERT, Op.END_ON_FAILED_GATE])
    assert steps(3, study.wrong(labels[3])) == (201, [Op.FACTS, Op.INSERT, Op.END_ON_FAILED_GATE])
    assert study.state(token)["stage"] == "ended"


def test_the_insert_carries_every_response_column_but_the_id(study: Study) -> None:
    token = study.join("P1")
    study.start(token)
    insert = to_insert(study, save_steps(token, body(0, study.labels(token)[0])))
    assert set(insert.params) == {c.name for c in Response.__table__.c if not c.primary_key}


def test_an_insert_lost_to_a_concurrent_identical_answer_is_answered_as_its_retry(study: Study) -> None:
    token = study.join("P1")
    study.start(token)
    answer = study.labels(token)[0]
    flow = save_steps(token, body(0, answer))
    to_insert(study, flow)  # the facts were read before the other request stored its answer
    assert study.answer(token, 0, answer).status_code == 201
    stored = flow.send(None)  # so this INSERT stores nothing (ON CONFLICT DO NOTHING)
    assert stored == Statement(Op.STORED, {"pid": stored.params["pid"], "idx": 0})  # type: ignore[union-attr]
    with pytest.raises(StopIteration) as done:
        flow.send(run(study, stored))  # type: ignore[arg-type]
    result: SaveResult = done.value.value
    assert result.duplicate is True and result.stage == "practice"


def test_an_insert_lost_to_a_concurrent_different_answer_is_a_conflict(study: Study) -> None:
    token = study.join("P1")
    study.start(token)
    answer = study.labels(token)[0]
    flow = save_steps(token, body(0, answer))
    to_insert(study, flow)
    assert study.answer(token, 0, study.wrong(answer)).status_code == 201
    stored = flow.send(None)
    with pytest.raises(SaveError) as err:
        flow.send(run(study, stored))  # type: ignore[arg-type]
    assert err.value.status == 409


def test_an_insert_that_stored_nothing_for_an_answer_that_is_not_there_asks_for_a_retry(study: Study) -> None:
    """If the INSERT stored nothing and yet no stored answer is found, the flow says so (503, which
    clients retry) instead of claiming the answer was saved."""
    token = study.join("P1")
    study.start(token)
    flow = save_steps(token, body(0, study.labels(token)[0]))
    to_insert(study, flow)
    stored = flow.send(None)
    assert run(study, stored) is None  # type: ignore[arg-type]
    with pytest.raises(SaveError) as err:
        flow.send(None)
    assert err.value.status == 503
