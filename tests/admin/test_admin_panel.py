"""The admin panel over HTTP: stimulus sets (upload, gallery, delete), experiments (form, status,
study URL, preview), monitoring and exclusions. Every action lands in the audit log."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from app.core.schema import AuditLog, Experiment, Participant, StimulusSet, Trial
from app.core.settings import Settings
from app.experiments.spec import ExperimentSpec
from synthesis.bank import zip_bank
from tests.admin_client import fast_login
from tests.factories import make_bank
from tests.study import BASE_SPEC, Study, build_study


@pytest.fixture
def study(settings: Settings, tmp_path: Path) -> Study:
    return build_study(settings, tmp_path, bank_kwargs={"failed": {(0, "conv2")}})


@pytest.fixture
def csrf(study: Study) -> str:
    return fast_login(study)


def actions(study: Study) -> list[str]:
    with study.sessions() as s:
        return list(s.scalars(sa.select(AuditLog.action).order_by(AuditLog.id)))


def upload(study: Study, csrf: str, path: Path, name: str):  # type: ignore[no-untyped-def]
    with open(path, "rb") as f:
        return study.client.post(
            "/admin/sets/upload",
            data={"csrf_token": csrf, "name": name},
            files={"bank": (path.name, f, "application/zip")},
            follow_redirects=False,
        )


def uploads_left(study: Study) -> list[Path]:
    d = study.settings.var_dir / "uploads"
    return list(d.iterdir()) if d.exists() else []


# ------------------------------------------------------------------------------ sets


def test_uploading_a_bank_zip_imports_it_and_opens_its_gallery(study: Study, csrf: str, tmp_path: Path) -> None:
    bank = zip_bank(make_bank(tmp_path / "b2", failed={(1, "fc")}), tmp_path / "b2.zip")
    r = upload(study, csrf, bank, "second")
    assert r.status_code == 303, r.text
    assert re.fullmatch(r"/admin/sets/\d+\?done=imported", r.headers["location"])
    page = study.client.get(r.headers["location"])
    assert page.status_code == 200
    html = page.text
    # Models × layers across, with the null summary per layer; sources down, natural first.
    for layer in ("conv1", "conv2", "fc"):
        assert f'data-layer="tiny/{layer}"' in html
    assert html.count("null n=100") == 3
    assert html.count('data-source="src-') == 8
    assert 'data-stimulus-key="src-001/tiny/fc" data-passed="false"' in html
    assert 'data-stimulus-key="src-001/tiny/conv1" data-passed="true"' in html
    assert "prediction differs" in html  # the failed metamer's reasons
    assert html.count('<img class="thumb"') >= 8 * 4
    assert uploads_left(study) == []
    assert actions(study)[-1] == "set_upload"


def test_gallery_paginates_and_filters(study: Study, csrf: str) -> None:
    from app.admin import sets as admin_sets

    old = admin_sets.SOURCES_PER_PAGE
    admin_sets.SOURCES_PER_PAGE = 3
    try:
        html = study.client.get("/admin/sets/1?page=3").text
        assert html.count('data-source="src-') == 2  # 8 sources, 3 per page
        assert "page 3 of 3" in html
        html = study.client.get("/admin/sets/1?failed=true").text
        assert re.findall(r'data-source="(src-\d+)"', html) == ["src-000"]
    finally:
        admin_sets.SOURCES_PER_PAGE = old


def test_an_invalid_bank_shows_every_problem_and_imports_nothing(study: Study, csrf: str, tmp_path: Path) -> None:
    import zipfile

    folder = make_bank(tmp_path / "bad")
    (folder / "natural" / "src-003.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (folder / "natural" / "src-004.png").unlink()
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder).as_posix())
    r = upload(study, csrf, archive, "broken")
    assert r.status_code == 422
    assert "data-problems" in r.text
    assert "src-003.png" in r.text and "src-004.png" in r.text
    with study.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(StimulusSet)) == 1
    assert uploads_left(study) == []


def test_an_upload_over_the_size_limit_is_cut_off(settings: Settings, tmp_path: Path) -> None:
    st = build_study(settings.model_copy(update={"max_upload_bytes": 5_000}), tmp_path)
    csrf = fast_login(st)
    bank = zip_bank(make_bank(tmp_path / "big"), tmp_path / "big.zip")
    assert bank.stat().st_size > 5_000
    r = upload(st, csrf, bank, "big")
    assert r.status_code == 413
    assert "limit" in r.text
    with st.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(StimulusSet)) == 1
    assert uploads_left(st) == []


def test_an_upload_without_the_csrf_token_stores_nothing(study: Study, csrf: str, tmp_path: Path) -> None:
    bank = zip_bank(make_bank(tmp_path / "b3"), tmp_path / "b3.zip")
    with open(bank, "rb") as f:
        r = study.client.post("/admin/sets/upload", data={"name": "x"}, files={"bank": ("b.zip", f, "application/zip")})
    assert r.status_code == 403
    assert uploads_left(study) == []


def test_a_set_in_use_cannot_be_deleted_but_an_unused_one_can(study: Study, csrf: str, tmp_path: Path) -> None:
    r = study.client.post("/admin/sets/1/delete", data={"csrf_token": csrf})
    assert r.status_code == 409 and "used by 1 experiment" in r.text
    upload(study, csrf, zip_bank(make_bank(tmp_path / "b4"), tmp_path / "b4.zip"), "spare")
    with study.sessions() as s:
        spare = s.scalar(sa.select(StimulusSet.id).where(StimulusSet.name == "spare"))
    r = study.client.post(f"/admin/sets/{spare}/delete", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    with study.sessions() as s:
        assert [n for (n,) in s.execute(sa.select(StimulusSet.name))] == ["bank"]
    assert actions(study)[-1] == "set_delete"


# ------------------------------------------------------------------------------ experiment form


def leaf_settings(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf setting of the spec, walked independently of the form code."""
    out = []
    for name, info in model.model_fields.items():
        tp = info.annotation
        inner = [a for a in getattr(tp, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            out += leaf_settings(tp, f"{prefix}{name}.")
        elif inner and name != "conditions":
            out += leaf_settings(inner[0], f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_the_experiment_form_has_an_input_for_every_setting(study: Study, csrf: str) -> None:
    html = study.client.get("/admin/experiments/new").text
    settings = leaf_settings(ExperimentSpec)
    assert len(settings) > 40
    missing = [s for s in settings if f'name="{s}"' not in html]
    assert missing == []


def _form_from_spec(spec: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Encode a spec dict the way the browser posts the form."""
    out: list[tuple[str, str]] = []
    for k, v in spec.items():
        name = prefix + k
        if isinstance(v, dict):
            out += _form_from_spec(v, name + ".")
        elif name == "conditions":  # the form's condition checkboxes carry keys
            out += [(name, c if isinstance(c, str) else "natural" if c["model"] is None else f"{c['model']}/{c['layer']}") for c in v]
        elif isinstance(v, list):
            out += [(name, x) for x in v]
        elif isinstance(v, bool):
            out += [(name, "false")] + ([(name, "true")] if v else [])
        else:
            out.append((name, "" if v is None else str(v)))
    return out


def as_data(items: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Form pairs as httpx wants them (name -> values, order kept within a name)."""
    out: dict[str, list[str]] = {}
    for k, v in items:
        out.setdefault(k, []).append(v)
    return out


def test_creating_an_experiment_through_the_form_stores_exactly_the_submitted_spec(study: Study, csrf: str) -> None:
    from app.experiments.spec import parse_spec

    wanted = parse_spec(
        {
            **BASE_SPEC,
            "slug": "form-made",
            "title": "Made in the form",
            "conditions": ["natural", "tiny/fc"],
            "sources_per_participant": 4,
            "timing": {"fixation_ms": 250, "stimulus_ms": 200, "mask_ms": 0},
            "headphone": {"antiphase_pass": 4},
            "exclusions": {"min_natural_accuracy": 0.6, "failed_headphone": False},
            "max_participants": 40,
            "texts": {"consent": "Please **agree**.\nLine two."},
        }
    ).model_dump(mode="json")
    r = study.client.post("/admin/experiments/new", data=as_data(_form_from_spec(wanted) + [("csrf_token", csrf)]), follow_redirects=False)
    assert r.status_code == 303, r.text
    with study.sessions() as s:
        exp = s.scalar(sa.select(Experiment).where(Experiment.slug == "form-made"))
        assert exp is not None and exp.status == "draft"
        assert exp.spec == wanted
    assert actions(study)[-1] == "experiment_create"


def test_the_form_reports_every_problem_at_once_and_keeps_the_input(study: Study, csrf: str) -> None:
    spec = ExperimentSpec.model_validate({**BASE_SPEC, "slug": "ok-slug"}).model_dump(mode="json")
    form = dict(_form_from_spec(spec))
    form.update({"slug": "Bad Slug!", "gate.min_correct": "5", "breaks": "many", "csrf_token": csrf})
    items = [(k, v) for k, v in _form_from_spec(spec) if k not in form or k in ("conditions", "stimulus_sets")] + [
        (k, v) for k, v in form.items() if k not in ("conditions", "stimulus_sets")
    ]
    items += [("conditions", "tiny/nope")]
    r = study.client.post("/admin/experiments/new", data=as_data(items))
    assert r.status_code == 422
    problems = re.findall(r'data-problem-for="([^"]+)"', r.text)
    assert {"slug", "breaks", "gate"} <= {p.split(".")[0] for p in problems}, problems
    assert "Bad Slug!" in r.text  # the input is kept
    with study.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Experiment)) == 1


def test_cross_checks_against_the_stimulus_sets_are_reported(study: Study, csrf: str) -> None:
    spec = ExperimentSpec.model_validate({**BASE_SPEC, "slug": "bad-conds", "conditions": ["natural", "tiny/nope"], "sources_per_participant": 3}).model_dump(mode="json")
    r = study.client.post("/admin/experiments/new", data=as_data(_form_from_spec(spec) + [("csrf_token", csrf)]))
    assert r.status_code == 422
    assert "&#39;tiny/nope&#39; is not in the stimulus sets" in r.text
    assert "must divide the number of sources" in r.text


def test_a_pasted_yaml_spec_creates_the_experiment(study: Study, csrf: str) -> None:
    text = "slug: from-yaml\ntitle: YAML\nstimulus_sets: [bank]\nconditions: [natural, tiny/conv1]\npractice: {trials: 1}\ngate: {trials: 1, min_correct: 1}\n"
    r = study.client.post("/admin/experiments/new", data={"csrf_token": csrf, "spec_yaml": text, "slug": "ignored"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    with study.sessions() as s:
        assert s.scalar(sa.select(Experiment.title).where(Experiment.slug == "from-yaml")) == "YAML"


def test_editing_is_audited_and_design_settings_freeze_once_people_start(study: Study, csrf: str) -> None:
    with study.sessions() as s:
        spec = dict(s.scalar(sa.select(Experiment.spec)))
    changed = {**spec, "title": "Renamed", "breaks": 2}
    r = study.client.post("/admin/experiments/1/edit", data=as_data(_form_from_spec(changed) + [("csrf_token", csrf)]), follow_redirects=False)
    assert r.status_code == 303, r.text
    study.join("P1")
    again = {**changed, "breaks": 0, "title": "Renamed twice"}
    r = study.client.post("/admin/experiments/1/edit", data=as_data(_form_from_spec(again) + [("csrf_token", csrf)]))
    assert r.status_code == 422 and "cannot change after participants have started" in r.text
    with study.sessions() as s:
        exp = s.get(Experiment, 1)
        assert (exp.title, exp.spec["breaks"]) == ("Renamed", 2)
    assert "experiment_update" in actions(study)


def test_status_changes_are_audited_and_respected_by_the_study_link(study: Study, csrf: str) -> None:
    def set_status(target: str) -> int:
        return study.client.post("/admin/experiments/1/status", data={"status": target, "csrf_token": csrf}, follow_redirects=False).status_code

    assert set_status("paused") == 303
    r = study.enter({"PROLIFIC_PID": "late", "STUDY_ID": "s", "SESSION_ID": "x"})
    assert r.status_code == 200 and "paused" in r.text.lower()
    assert set_status("paused") == 409  # already paused
    assert set_status("active") == 303
    assert study.enter({"PROLIFIC_PID": "late", "STUDY_ID": "s", "SESSION_ID": "x"}).status_code == 303
    assert set_status("draft") == 409  # somebody started
    assert set_status("closed") == 303
    with study.sessions() as s:
        exp = s.get(Experiment, 1)
        assert exp.status == "closed" and exp.closed_at is not None
    assert actions(study).count("experiment_status") == 3


def test_the_prolific_study_url_carries_the_exact_placeholders(study: Study, csrf: str) -> None:
    html = study.client.get("/admin/experiments/1").text
    m = re.search(r'data-study-url="prolific" value="([^"]+)"|value="([^"]+)" data-study-url="prolific"', html)
    assert m
    url = (m.group(1) or m.group(2)).replace("&amp;", "&")
    assert url == "http://testserver/e/test-study?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"


def test_the_mturk_study_url_is_the_bare_external_question_url(study: Study, csrf: str) -> None:
    with study.sessions() as s:
        exp = s.get(Experiment, 1)
        exp.spec = {**exp.spec, "platform": "mturk"}
        s.commit()
    html = study.client.get("/admin/experiments/1").text
    assert 'value="http://testserver/e/test-study" data-study-url="mturk"' in html
    assert "&lt;ExternalURL&gt;http://testserver/e/test-study&lt;/ExternalURL&gt;" in html
    assert "only over HTTPS" in html


# ------------------------------------------------------------------------------ preview


def test_a_preview_runs_the_real_study_but_is_never_counted(study: Study, csrf: str) -> None:
    r = study.client.post("/admin/experiments/1/preview", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    m = re.fullmatch(r"/e/test-study/run#t=([A-Za-z0-9_-]+)", r.headers["location"])
    assert m
    token = m.group(1)
    done = study.run_all(token)
    assert len(done) == 14
    assert study.post(token, "/api/session/complete").status_code == 200
    # Balancing: the first real participant still gets row 0, and counts show nobody.
    real = study.join("P1")
    with study.sessions() as s:
        assert s.scalar(sa.select(Participant.slot).where(Participant.platform_pid == "P1")) == 0
    mon = study.client.get("/admin/experiments/1/monitor.json").json()
    assert mon["total"] == 1 and mon["status_counts"]["started"] == 1 and mon["status_counts"]["completed"] == 0
    assert mon["coverage_summary"]["natural"]["total"] == 0
    participants_csv = study.client.get("/admin/experiments/1/export", params={"file": "participants.csv"}).text
    assert participants_csv.count("\n") == 2 and "preview" not in participants_csv
    trials_csv = study.client.get("/admin/experiments/1/export", params={"file": "trials.csv"}).text
    assert trials_csv.count("\n") == 1  # header only: P1 has not answered
    assert "preview" not in study.client.get("/admin/experiments/1/participants").text
    assert study.state(real)["stage"] == "consent"


def test_previews_of_a_draft_do_not_freeze_its_design(study: Study, csrf: str) -> None:
    with study.sessions() as s:
        spec = dict(s.scalar(sa.select(Experiment.spec)))
    study.client.post("/admin/experiments/1/preview", data={"csrf_token": csrf})
    changed = {**spec, "breaks": 0}
    r = study.client.post("/admin/experiments/1/edit", data=as_data(_form_from_spec(changed) + [("csrf_token", csrf)]), follow_redirects=False)
    assert r.status_code == 303, r.text
    with study.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Participant)) == 0  # the preview went with the edit


# ------------------------------------------------------------------------------ monitoring


def test_monitoring_counts_statuses_gate_pass_rate_and_balance(study: Study, csrf: str) -> None:
    for pid in ("A", "B"):
        t = study.join(pid)
        study.run_all(t)
        assert study.post(t, "/api/session/complete").status_code == 200
    study.run_all(study.join("C"), correct=False)  # fails the gate
    study.join("D")  # just arrived
    mon = study.client.get("/admin/experiments/1/monitor.json").json()
    assert mon["status_counts"] == {"started": 1, "completed": 2, "screened_out": 1, "returned": 0, "abandoned": 0}
    assert mon["gate"] == {"passed": 2, "failed": 1, "pending": 1, "rate": pytest.approx(2 / 3)}
    assert mon["median_minutes"] is not None and mon["median_minutes"] >= 0
    # One block of 8 sources × 4 conditions: 4 Latin-square rows. A, B completed rows 0 and 1;
    # C was screened out on row 2, which D (just arrived) then took.
    assert mon["period"] == 4
    rows = {r["row"]: r for r in mon["slots"]}
    assert sorted(rows) == [0, 1, 2, 3]
    assert [rows[k]["completed"] for k in range(4)] == [1, 1, 0, 0]
    assert [rows[k]["in_progress"] for k in range(4)] == [0, 0, 1, 0]
    # Each completed participant answered 2 trials per condition: 4 per condition in total.
    assert {c: v["total"] for c, v in mon["coverage_summary"].items()} == {"natural": 4, "tiny/conv1": 4, "tiny/conv2": 4, "tiny/fc": 4}
    html = study.client.get("/admin/experiments/1").text
    assert 'data-stat="status.completed">2<' in html


def test_participant_detail_lists_every_trial_and_response(study: Study, csrf: str) -> None:
    t = study.join("P9")
    study.run_all(t, upto=6)
    with study.sessions() as s:
        public_id, n_trials = s.execute(
            sa.select(Participant.public_id, sa.func.count(Trial.id)).join(Trial, Trial.participant_id == Participant.id).group_by(Participant.public_id)
        ).one()
    html = study.client.get(f"/admin/experiments/1/participants/{public_id}").text
    assert html.count('<tr data-trial="') == n_trials == 14
    assert html.count('class="unanswered"') == n_trials - 6
    assert "P9" in html
    listing = study.client.get("/admin/experiments/1/participants?status=started").text
    assert f'data-participant="{public_id}"' in listing and "6/14" in listing


def test_excluding_and_including_a_participant_needs_a_reason_and_is_audited(study: Study, csrf: str) -> None:
    study.join("P1")
    with study.sessions() as s:
        public_id = s.scalar(sa.select(Participant.public_id))
    url = f"/admin/experiments/1/participants/{public_id}/exclusion"
    assert study.client.post(url, data={"csrf_token": csrf, "action": "exclude", "reason": ""}).status_code == 422
    r = study.client.post(url, data={"csrf_token": csrf, "action": "exclude", "reason": "talked on the phone"}, follow_redirects=False)
    assert r.status_code == 303
    with study.sessions() as s:
        p = s.scalar(sa.select(Participant))
        assert (p.excluded, p.exclude_reason) == (True, "talked on the phone")
    r = study.client.post(url, data={"csrf_token": csrf, "action": "include", "reason": "mistake"}, follow_redirects=False)
    with study.sessions() as s:
        p = s.scalar(sa.select(Participant))
        assert (p.excluded, p.exclude_reason) == (False, None)
        details = [d for (d,) in s.execute(sa.select(AuditLog.details).where(AuditLog.action.like("participant_%")).order_by(AuditLog.id))]
    assert [d["reason"] for d in details] == ["talked on the phone", "mistake"]
    assert actions(study)[-2:] == ["participant_exclude", "participant_include"]


def test_the_audit_log_page_lists_actions(study: Study, csrf: str) -> None:
    study.client.post("/admin/experiments/1/status", data={"status": "paused", "csrf_token": csrf})
    html = study.client.get("/admin/audit").text
    assert 'data-action="experiment_status"' in html and "<td>alice</td>" in html
