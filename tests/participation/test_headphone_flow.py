"""HTTP-level tests of the headphone check in the participant flow (issue 5, docs/science.md §5).

Participants are driven through the same JSON API the runner uses. The "truth" (which position is
correct, which one a loudspeaker listener picks) is read from the server's own plan, as a
listener who hears the difference would know it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from app.core.schema import Participant, Response, ScreeningTrial
from app.core.security import token_hash
from app.core.settings import Settings
from app.experiments.spec import HeadphoneSpec
from app.participation.headphone import screening, signals
from synthesis.media import sniff
from tests.factories import WORDS
from tests.study import Study, build_study

AUDIO_BANK = {"modality": "audio", "labels": WORDS[:4]}


def audio_study(settings: Settings, tmp_path: Path, **headphone: Any) -> Study:
    return build_study(settings, tmp_path, {"headphone": headphone}, bank_kwargs=AUDIO_BANK)


@pytest.fixture
def antiphase(settings: Settings, tmp_path: Path) -> Study:
    return audio_study(settings, tmp_path, check="antiphase")


def participant(study: Study, token: str) -> Participant:
    with study.sessions() as s:
        p = s.scalar(sa.select(Participant).where(Participant.token_hash == token_hash(token)))
        assert p is not None
        s.expunge(p)
        return p


def hp_state(study: Study, token: str) -> dict[str, Any]:
    r = study.client.get("/api/session/headphone", headers=study.auth(token))
    assert r.status_code == 200, r.text
    return r.json()


def hp_answer(study: Study, token: str, check: str, attempt: int, index: int, answer: int, **extra: Any):  # type: ignore[no-untyped-def]
    body = {"check": check, "attempt": attempt, "index": index, "answer": answer, "rt_ms": 420.0, **extra}
    return study.post(token, "/api/session/headphone/responses", body)


def plan(study: Study, token: str, check: str, attempt: int) -> list[screening.PlannedTrial]:
    p = participant(study, token)
    spec = HeadphoneSpec(**study.spec["headphone"])
    n, _, _ = screening.rule(spec, check)  # type: ignore[arg-type]
    return screening.plan_attempt(check, p.seed, attempt, n)  # type: ignore[arg-type]


def headphone_listener(t: screening.PlannedTrial) -> int:
    return t.correct


def loudspeaker_listener(t: screening.PlannedTrial) -> int:
    """Over loudspeakers the antiphase tone cancels and sounds quietest, so it gets picked."""
    lure = signals.STIMULI[t.stimulus].lure
    assert lure is not None
    return lure


def do_attempt(study: Study, token: str, check: str, attempt: int, pick, wrong: int = 0) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Answer a whole attempt with ``pick``; the first ``wrong`` trials get a wrong answer instead."""
    last: dict[str, Any] = {}
    for t in plan(study, token, check, attempt):
        ans = pick(t) if t.index >= wrong else t.correct % 3 + 1
        r = hp_answer(study, token, check, attempt, t.index, ans)
        assert r.status_code == 201, r.text
        last = r.json()
    return last


def test_the_check_comes_before_practice_and_serves_stereo_files_without_the_answers(antiphase: Study) -> None:
    token = antiphase.join("P1")
    assert antiphase.start(token)["stage"] == "headphone"
    st = hp_state(antiphase, token)
    assert (st["status"], st["check"], st["attempt"], st["answered"]) == ("pending", "antiphase", 1, [])
    assert [t["index"] for t in st["trials"]] == list(range(6))
    assert len({t["media"] for t in st["trials"]}) == 6
    assert st["intervals_ms"] == [[0, 1000], [1500, 2500], [3000, 4000]]
    assert not any(k in t for t in st["trials"] for k in ("correct", "stimulus", "correct_answer")), "answers must not leak"
    for url in (st["calibration"], st["trials"][0]["media"]):
        r = antiphase.client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        assert sniff(r.content, ".wav").channels == 2


def test_trials_cannot_be_answered_before_the_check_is_passed(antiphase: Study) -> None:
    token = antiphase.join("P1")
    antiphase.start(token)
    r = antiphase.answer(token, 0, WORDS[0])
    assert r.status_code == 409 and "headphone" in r.json()["detail"]
    assert antiphase.client.post("/api/session/complete", headers=antiphase.auth(token)).status_code == 409
    with antiphase.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Response)) == 0


def test_a_headphone_listener_passes_and_continues_to_the_end(antiphase: Study) -> None:
    token = antiphase.join("P1")
    antiphase.start(token)
    last = do_attempt(antiphase, token, "antiphase", 1, headphone_listener)
    assert (last["status"], last["stage"], last["ended"]) == ("passed", "practice", None)
    p = participant(antiphase, token)
    assert p.headphone_passed is True
    assert p.headphone_score == {
        "antiphase": {
            "passed": True,
            "trials": 6,
            "pass_mark": 5,
            "max_attempts": 1,
            "attempts": [{"attempt": 1, "trials": 6, "correct": 6, "passed": True, "picked_antiphase": 0}],
        }
    }
    assert hp_state(antiphase, token)["status"] == "passed"
    antiphase.run_all(token)
    r = antiphase.post(token, "/api/session/complete")
    assert r.status_code == 200 and parse_qs(urlsplit(r.json()["target"]["url"]).query) == {"cc": ["DONE123"]}


def test_a_loudspeaker_listener_is_screened_out_with_the_screened_out_code_and_frees_the_slot(antiphase: Study) -> None:
    token = antiphase.join("P1")
    antiphase.start(token)
    assert participant(antiphase, token).slot == 0
    last = do_attempt(antiphase, token, "antiphase", 1, loudspeaker_listener)
    assert (last["status"], last["stage"]) == ("failed", "ended")
    target = last["ended"]["target"]
    assert last["ended"]["outcome"] == "screened_out"
    assert parse_qs(urlsplit(target["url"]).query) == {"cc": ["SCREEN9"]}
    p = participant(antiphase, token)
    assert (p.status, p.outcome, p.slot, p.headphone_passed) == ("screened_out", "screened_out", None, False)
    assert p.headphone_score["antiphase"]["attempts"] == [{"attempt": 1, "trials": 6, "correct": 0, "passed": False, "picked_antiphase": 6}]
    assert antiphase.state(token)["ended"]["outcome"] == "screened_out"
    # No retry for antiphase by default: nothing more is accepted.
    assert hp_answer(antiphase, token, "antiphase", 2, 0, 1).status_code == 409
    assert antiphase.answer(token, 0, WORDS[0]).status_code == 409
    # The balancing slot went back: the next arrival takes row 0.
    other = antiphase.join("P2")
    assert participant(antiphase, other).slot == 0


@pytest.mark.parametrize(("wrong", "passed"), [(1, True), (2, False)])
def test_antiphase_passes_at_five_of_six_not_at_four(antiphase: Study, wrong: int, passed: bool) -> None:
    token = antiphase.join("P1")
    antiphase.start(token)
    last = do_attempt(antiphase, token, "antiphase", 1, headphone_listener, wrong=wrong)
    assert last["status"] == ("passed" if passed else "failed")
    assert participant(antiphase, token).headphone_passed is passed


def test_a_reload_mid_check_resumes_at_the_first_unanswered_trial(antiphase: Study) -> None:
    token = antiphase.join("P1")
    antiphase.start(token)
    before = hp_state(antiphase, token)
    trials = plan(antiphase, token, "antiphase", 1)
    for t in trials[:3]:
        assert hp_answer(antiphase, token, "antiphase", 1, t.index, t.correct).status_code == 201
    again = antiphase.join("P1")  # reopening the study link
    assert again == token
    assert antiphase.state(again)["stage"] == "headphone"
    st = hp_state(antiphase, again)
    assert (st["check"], st["attempt"], st["answered"]) == ("antiphase", 1, [0, 1, 2])
    assert st["trials"] == before["trials"], "the same sounds in the same order"
    for t in trials[3:]:
        last = hp_answer(antiphase, again, "antiphase", 1, t.index, t.correct).json()
    assert last["status"] == "passed"


def test_saving_is_idempotent_and_a_different_answer_is_a_conflict(antiphase: Study) -> None:
    token = antiphase.join("P1")
    antiphase.start(token)
    events = [{"type": "play", "t": 10.0}, {"type": "ended", "t": 4010.0, "detail": "channels=2"}]
    first = hp_answer(antiphase, token, "antiphase", 1, 0, 2, events=events)
    again = hp_answer(antiphase, token, "antiphase", 1, 0, 2, events=events)
    other = hp_answer(antiphase, token, "antiphase", 1, 0, 3, events=events)
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json()["duplicate"] is True
    planned = plan(antiphase, token, "antiphase", 1)[0]
    with antiphase.sessions() as s:
        rows = s.scalars(sa.select(ScreeningTrial)).all()
        assert [(r.check, r.attempt, r.index, r.answer, r.events) for r in rows] == [("antiphase", 1, 0, 2, events)]
        assert (rows[0].stimulus, rows[0].correct_answer, rows[0].correct) == (planned.stimulus, planned.correct, planned.correct == 2)


def test_answers_that_are_not_due_are_refused(antiphase: Study) -> None:
    token = antiphase.join("P1")
    assert hp_answer(antiphase, token, "antiphase", 1, 0, 1).status_code == 409  # before consent
    antiphase.start(token)
    assert hp_answer(antiphase, token, "huggins", 1, 0, 1).status_code == 409  # not this experiment's check
    assert hp_answer(antiphase, token, "antiphase", 2, 0, 1).status_code == 409  # not the current attempt
    assert hp_answer(antiphase, token, "antiphase", 1, 6, 1).status_code == 422  # beyond the 6 trials
    assert hp_answer(antiphase, token, "antiphase", 1, 0, 4).status_code == 422  # positions are 1..3
    assert antiphase.client.get("/api/session/headphone").status_code == 401
    with antiphase.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(ScreeningTrial)) == 0


def test_huggins_allows_one_retry_with_new_sounds_and_passing_it_continues(settings: Settings, tmp_path: Path) -> None:
    study = audio_study(settings, tmp_path, check="huggins")
    token = study.join("P1")
    study.start(token)
    first = hp_state(study, token)
    last = do_attempt(study, token, "huggins", 1, headphone_listener, wrong=1)  # 5/6, but 6/6 is needed
    assert (last["status"], last["check"], last["attempt"], last["stage"]) == ("pending", "huggins", 2, "headphone")
    st = hp_state(study, token)
    assert st["attempt"] == 2 and st["answered"] == [] and st["results"]["huggins"] == {"attempts_done": 1, "max_attempts": 2, "passed": None}
    assert not {t["media"] for t in st["trials"]} & {t["media"] for t in first["trials"]}
    assert participant(study, token).headphone_passed is None
    last = do_attempt(study, token, "huggins", 2, headphone_listener)
    assert (last["status"], last["stage"]) == ("passed", "practice")
    attempts = participant(study, token).headphone_score["huggins"]["attempts"]
    assert [(a["attempt"], a["correct"], a["passed"]) for a in attempts] == [(1, 5, False), (2, 6, True)]


def test_failing_the_huggins_retry_too_screens_out(settings: Settings, tmp_path: Path) -> None:
    study = audio_study(settings, tmp_path, check="huggins")
    token = study.join("P1")
    study.start(token)
    do_attempt(study, token, "huggins", 1, headphone_listener, wrong=3)
    last = do_attempt(study, token, "huggins", 2, headphone_listener, wrong=1)
    assert (last["status"], last["ended"]["outcome"]) == ("failed", "screened_out")
    p = participant(study, token)
    assert (p.status, p.slot, p.headphone_passed) == ("screened_out", None, False)
    assert "huggins: 3/6, 5/6" in (p.screen_reason or "")


def test_a_retry_is_not_offered_where_the_spec_disallows_it(settings: Settings, tmp_path: Path) -> None:
    study = audio_study(settings, tmp_path, check="huggins", huggins_retry=False)
    token = study.join("P1")
    study.start(token)
    last = do_attempt(study, token, "huggins", 1, headphone_listener, wrong=1)
    assert (last["status"], last["stage"]) == ("failed", "ended")


def test_both_checks_run_antiphase_then_huggins_and_both_must_pass(settings: Settings, tmp_path: Path) -> None:
    study = audio_study(settings, tmp_path, check="both")
    token = study.join("P1")
    study.start(token)
    last = do_attempt(study, token, "antiphase", 1, headphone_listener)
    assert (last["status"], last["check"], last["attempt"], last["stage"]) == ("pending", "huggins", 1, "headphone")
    assert participant(study, token).headphone_passed is None
    assert study.answer(token, 0, WORDS[0]).status_code == 409
    last = do_attempt(study, token, "huggins", 1, headphone_listener)
    assert (last["status"], last["stage"]) == ("passed", "practice")
    assert set(participant(study, token).headphone_score) == {"antiphase", "huggins"}


def test_a_check_placed_before_main_lets_practice_through_and_blocks_the_main_trials(settings: Settings, tmp_path: Path) -> None:
    study = audio_study(settings, tmp_path, check="antiphase", position="before_main")
    token = study.join("P1")
    st = study.start(token)
    assert st["stage"] == "practice"
    assert hp_answer(study, token, "antiphase", 1, 0, 1).status_code == 409, "not due yet"
    labels = study.labels(token)
    first_main = next(t["index"] for t in st["trials"] if t["phase"] in ("main", "catch"))
    for i in range(first_main):
        assert study.answer(token, i, labels[i]).status_code == 201
    assert study.state(token)["stage"] == "headphone"
    assert study.answer(token, first_main, labels[first_main]).status_code == 409
    do_attempt(study, token, "antiphase", 1, headphone_listener)
    assert study.state(token)["stage"] == "main"
    assert study.answer(token, first_main, labels[first_main]).status_code == 201
