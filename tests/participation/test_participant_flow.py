"""HTTP-level tests of the participant flow: arrival, resume, gates, completion, balance."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa

from app.core.schema import Participant, Response, Trial
from app.core.settings import Settings
from app.participation.schemas import SessionOut
from tests.study import Study, build_study, prolific


@pytest.fixture
def study(settings: Settings, tmp_path: Path) -> Study:
    return build_study(settings, tmp_path)


def count(study: Study, model) -> int:  # type: ignore[no-untyped-def]
    with study.sessions() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(model))


def test_prolific_participant_completes_and_gets_the_completion_redirect(study: Study) -> None:
    token = study.join("P1")
    st = study.state(token)
    assert st["stage"] == "consent"
    SessionOut.model_validate(st)  # the state is built from plain dicts: it must fit its model
    phases = [t["phase"] for t in st["trials"]]
    assert phases[:4] == ["practice", "practice", "gate", "gate"]
    assert Counter(phases[4:]) == {"main": 8, "catch": 2}
    assert all(t["answer"] is not None for t in st["trials"] if t["phase"] == "practice")
    assert all(t["answer"] is None for t in st["trials"] if t["phase"] != "practice"), "answers must not leak"

    answered = study.run_all(token)
    assert len(answered) == len(st["trials"])
    assert study.state(token)["stage"] == "debrief"
    r = study.post(token, "/api/session/complete")
    assert r.status_code == 200
    target = r.json()["target"]
    assert target["kind"] == "redirect"
    parts = urlsplit(target["url"])
    assert parts.netloc == "app.prolific.com" and parts.path == "/submissions/complete"
    assert parse_qs(parts.query) == {"cc": ["DONE123"]}
    assert count(study, Response) == len(st["trials"])
    with study.sessions() as s:
        p = s.scalar(sa.select(Participant))
        assert (p.status, p.outcome, p.slot) == ("completed", "completed", 0)
        assert p.browser == {"frame_ms": 16.7}


def test_practice_response_reveals_correctness_but_main_does_not(study: Study) -> None:
    token = study.join("P1")
    study.start(token)
    labels = study.labels(token)
    r = study.answer(token, 0, study.wrong(labels[0]))
    assert r.status_code == 201 and r.json()["correct"] is False
    study.answer(token, 1, labels[1])
    study.answer(token, 2, labels[2])
    study.answer(token, 3, labels[3])
    r = study.answer(token, 4, labels[4])
    assert r.status_code == 201 and r.json()["correct"] is None


def test_reload_midway_resumes_at_the_first_unanswered_trial(study: Study) -> None:
    token = study.join("P1")
    done = study.run_all(token, upto=7)
    assert done == list(range(7))
    again = study.join("P1")  # reopening the same study link from Prolific
    assert again == token
    st = study.state(again)
    assert st["answered"] == list(range(7))
    assert st["stage"] == "main"
    with study.sessions() as s:
        before = s.execute(sa.select(Response.trial_index, Response.answer, Response.received_at).order_by(Response.trial_index)).all()
    study.run_all(again)
    with study.sessions() as s:
        after = s.execute(sa.select(Response.trial_index, Response.answer, Response.received_at).order_by(Response.trial_index)).all()
    assert after[:7] == before, "earlier answers are untouched"
    assert study.post(again, "/api/session/complete").status_code == 200


def test_mturk_preview_creates_nothing(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, {"platform": "mturk"})
    r = study.enter({"assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE", "hitId": "H1"})
    assert r.status_code == 200 and "preview" in r.text.lower()
    assert count(study, Participant) == 0 and count(study, Trial) == 0


def test_mturk_completion_posts_to_external_submit(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, {"platform": "mturk"})
    r = study.enter({"assignmentId": "A1", "hitId": "H1", "workerId": "W1", "turkSubmitTo": "https://workersandbox.mturk.com"})
    token = r.headers["location"].split("#t=")[1]
    study.run_all(token)
    target = study.post(token, "/api/session/complete").json()["target"]
    assert target["kind"] == "mturk"
    assert target["action"] == "https://workersandbox.mturk.com/mturk/externalSubmit"
    assert target["fields"]["assignmentId"] == "A1" and target["sandbox"] is True


def test_mturk_submit_url_must_be_mturk(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, {"platform": "mturk"})
    r = study.enter({"assignmentId": "A1", "hitId": "H1", "workerId": "W1", "turkSubmitTo": "https://evil.example.com"})
    assert r.status_code == 400 and count(study, Participant) == 0


def test_repeated_prolific_pid_is_blocked_with_a_friendly_page(study: Study) -> None:
    study.join("P1", session="S1")
    r = study.enter(prolific("P1", session="S2"))
    assert r.status_code == 200 and "already taken part" in r.text
    assert count(study, Participant) == 1


def test_repeats_can_be_allowed(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, {"allow_repeats": True})
    a = study.join("P1", session="S1")
    b = study.join("P1", session="S2")
    assert a != b and count(study, Participant) == 2


def test_missing_prolific_id_is_explained(study: Study) -> None:
    r = study.enter({})
    assert r.status_code == 400 and "Prolific" in r.text
    assert count(study, Participant) == 0


def test_gate_failure_ends_with_the_screen_out_code_and_frees_the_slot(study: Study) -> None:
    token = study.join("P1")
    st = study.start(token)
    labels = study.labels(token)
    for t in st["trials"][:2]:
        study.answer(token, t["index"], labels[t["index"]])
    last = None
    for t in st["trials"][2:4]:
        last = study.answer(token, t["index"], study.wrong(labels[t["index"]]))
    body = last.json()
    assert body["stage"] == "ended"
    assert body["ended"]["outcome"] == "screened_out"
    assert "cc=SCREEN9" in body["ended"]["target"]["url"]
    r = study.answer(token, 4, labels[4])
    assert r.status_code == 409
    with study.sessions() as s:
        p = s.scalar(sa.select(Participant))
        assert (p.status, p.slot) == ("screened_out", None)
    assert study.join("P2") and _slot_of(study, "P2") == 0, "the next participant takes the freed slot"


def _slot_of(study: Study, pid: str) -> int | None:
    with study.sessions() as s:
        return s.scalar(sa.select(Participant.plan_slot).where(Participant.platform_pid == pid))


def test_main_trials_are_refused_before_the_gate_is_passed(study: Study) -> None:
    token = study.join("P1")
    study.start(token)
    r = study.answer(token, 5, "0")
    assert r.status_code == 409 and "gate" in r.json()["detail"]
    assert count(study, Response) == 0


def test_latin_square_is_exactly_balanced_after_two_rounds_of_conditions(study: Study) -> None:
    n_conditions = len(study.spec["conditions"])
    for i in range(2 * n_conditions):
        study.join(f"P{i}")
    with study.sessions() as s:
        cells = Counter(s.execute(sa.select(Trial.source, Trial.condition).where(Trial.phase == "main")).all())
        slots = sorted(s.scalars(sa.select(Participant.slot)))
    assert slots == list(range(2 * n_conditions))
    assert len(cells) == 8 * n_conditions
    assert set(cells.values()) == {2}


def test_failed_metamers_are_swapped_for_naturals_and_recorded(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, bank_kwargs={"failed": {(i, "conv2") for i in range(8)}})
    for i in range(4):
        study.join(f"P{i}")
    with study.sessions() as s:
        rows = s.execute(sa.select(Trial.condition, Trial.swapped, Trial.swap_reason, Trial.planned_stimulus_id, Trial.stimulus_id).where(Trial.phase == "main")).all()
    swapped = [r for r in rows if r.swapped]
    assert {r.condition for r in swapped} == {"tiny/conv2"}
    assert len(swapped) == 8
    assert all("prediction differs" in r.swap_reason and r.planned_stimulus_id != r.stimulus_id for r in swapped)


def test_closed_and_full_experiments_say_so(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, {"max_participants": 1})
    study.join("P1")
    r = study.enter(prolific("P2"))
    assert "all the participants it needs" in r.text
    from app.core.schema import Experiment

    with study.sessions() as s:
        s.scalar(sa.select(Experiment)).status = "closed"
        s.commit()
    r = study.enter(prolific("P3"))
    assert r.status_code == 403 and "closed" in r.text
    assert count(study, Participant) == 1


def test_abandoned_participants_free_their_slot(study: Study) -> None:
    study.join("P1")
    with study.sessions() as s:
        p = s.scalar(sa.select(Participant))
        p.last_seen_at = p.last_seen_at - dt.timedelta(hours=5)
        s.commit()
    study.join("P2")
    with study.sessions() as s:
        rows = dict(s.execute(sa.select(Participant.platform_pid, Participant.status)).all())
    assert rows == {"P1": "abandoned", "P2": "started"}
    assert _slot_of(study, "P2") == 0


def test_catch_failures_end_with_the_failed_attention_code(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, {"catch": {"trials": 2, "min_correct": 2}})
    token = study.join("P1")
    st = study.start(token)
    labels = study.labels(token)
    for t in st["trials"]:
        ans = study.wrong(labels[t["index"]]) if t["phase"] == "catch" else labels[t["index"]]
        assert study.answer(token, t["index"], ans).status_code == 201
    body = study.post(token, "/api/session/complete").json()
    assert body["outcome"] == "failed_attention" and "cc=ATTN4" in body["target"]["url"]


def test_completion_before_every_answer_is_stored_is_refused(study: Study) -> None:
    token = study.join("P1")
    study.run_all(token, upto=6)
    r = study.post(token, "/api/session/complete")
    assert r.status_code == 409
    assert r.json()["missing"][0] == 6


def test_completion_is_idempotent_and_completed_link_shows_the_code_again(study: Study) -> None:
    token = study.join("P1")
    study.run_all(token)
    first = study.post(token, "/api/session/complete").json()
    assert study.post(token, "/api/session/complete").json() == first
    st = study.state(study.join("P1"))
    assert st["stage"] == "ended" and st["ended"]["target"]["code"] == "DONE123"


# ---------------------------------------------------------------------- saving guarantees


def test_identical_retry_succeeds_and_different_payload_conflicts(study: Study) -> None:
    token = study.join("P1")
    study.start(token)
    labels = study.labels(token)
    first = study.answer(token, 0, labels[0], rt_ms=321.0)
    assert first.status_code == 201
    retry = study.answer(token, 0, labels[0], rt_ms=321.0)
    assert retry.status_code == 200 and retry.json()["duplicate"] is True
    other = study.answer(token, 0, study.wrong(labels[0]), rt_ms=321.0)
    assert other.status_code == 409
    with study.sessions() as s:
        rows = s.execute(sa.select(Response.answer, Response.rt_ms)).all()
    assert rows == [(labels[0], 321.0)]


BAD_BODIES = [
    ("malformed json", b"{not json", 422),
    ("wrong types", b'{"trial_index": "seven", "answer": 3}', 422),
    ("unknown field", b'{"trial_index": 0, "answer": "0", "mood": "good"}', 422),
    ("unknown trial", b'{"trial_index": 9999, "answer": "0"}', 422),
    ("answer not an option", b'{"trial_index": 0, "answer": "zebra"}', 422),
    ("negative rt", b'{"trial_index": 0, "answer": "0", "rt_ms": -5}', 422),
]


@pytest.mark.parametrize("name,body,status", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_responses_get_a_clear_4xx_and_change_nothing(study: Study, name: str, body: bytes, status: int) -> None:
    token = study.join("P1")
    study.start(token)
    r = study.client.post("/api/session/responses", content=body, headers={**study.auth(token), "Content-Type": "application/json"})
    assert r.status_code == status
    assert r.json()["detail"]
    assert count(study, Response) == 0


def test_oversized_body_is_rejected_with_413(study: Study) -> None:
    token = study.join("P1")
    study.start(token)
    big = b'{"trial_index": 0, "answer": "0", "client": {"x": "' + b"a" * 200_000 + b'"}}'
    r = study.client.post("/api/session/responses", content=big, headers={**study.auth(token), "Content-Type": "application/json"})
    assert r.status_code == 413
    assert count(study, Response) == 0


def test_unknown_or_missing_token_is_401(study: Study) -> None:
    assert study.client.get("/api/session").status_code == 401
    r = study.client.post("/api/session/responses", json={"trial_index": 0, "answer": "0"}, headers={"Authorization": "Bearer forged"})
    assert r.status_code == 401
    assert count(study, Response) == 0


def test_a_token_only_reaches_its_own_participant(study: Study) -> None:
    a = study.join("PA")
    b = study.join("PB")
    study.start(a)
    study.start(b)
    labels_a = study.labels(a)
    study.answer(a, 0, labels_a[0])
    st_b = study.state(b)
    assert st_b["answered"] == [] and st_b["participant"] != study.state(a)["participant"]
    study.answer(b, 0, study.labels(b)[0])
    with study.sessions() as s:
        rows = s.execute(sa.select(Participant.platform_pid, sa.func.count(Response.id)).join(Response).group_by(Participant.platform_pid)).all()
    assert sorted(rows) == [("PA", 1), ("PB", 1)]


def test_responses_after_completion_are_refused(study: Study) -> None:
    token = study.join("P1")
    study.run_all(token)
    study.post(token, "/api/session/complete")
    before = count(study, Response)
    r = study.post(token, "/api/session/events", {"events": [{"kind": "media_error", "detail": "x"}]})
    assert r.status_code == 200
    # A different answer than the stored one (an identical one is an idempotent retry: 200).
    r = study.answer(token, 0, study.wrong(study.labels(token)[0]))
    assert r.status_code == 409
    assert count(study, Response) == before


def test_media_is_served_immutable_with_range_support(study: Study) -> None:
    token = study.join("P1")
    url = study.state(token)["trials"][0]["media"]
    r = study.client.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert "immutable" in r.headers["cache-control"]
    part = study.client.get(url, headers={"Range": "bytes=0-7"})
    assert part.status_code == 206 and part.content == b"\x89PNG\r\n\x1a\n"
    assert study.client.get("/media/" + "0" * 64 + ".png").status_code == 404
    assert study.client.get("/media/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_declining_consent_ends_the_session_and_frees_the_slot_at_once(study: Study) -> None:
    token = study.join("P1")
    r = study.post(token, "/api/session/decline")
    assert r.status_code == 200 and r.json()["outcome"] == "declined"
    assert study.post(token, "/api/session/decline").status_code == 200, "idempotent"
    assert study.state(token)["stage"] == "ended"
    with study.sessions() as s:
        p = s.scalar(sa.select(Participant))
        assert (p.status, p.slot) == ("returned", None)
    study.join("P2")
    assert _slot_of(study, "P2") == 0


def test_decline_after_consent_is_refused(study: Study) -> None:
    token = study.join("P1")
    study.start(token)
    assert study.post(token, "/api/session/decline").status_code == 409
    assert study.state(token)["stage"] == "practice"
