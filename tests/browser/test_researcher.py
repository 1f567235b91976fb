"""Scenario 5: a researcher runs a study from the admin panel in Chromium: logs in, uploads a bank,
looks at the gallery, creates and activates an experiment through the form, watches a participant
complete it (the live counts update without a reload), and downloads trials.csv, which parses and
holds that participant's rows."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from app.admin.auth import create_admin
from synthesis.bank import zip_bank
from tests.browser.harness import PROLIFIC_DONE, LiveServer, LiveStudy, Walker, intercept_prolific, new_page
from tests.factories import make_bank

USERNAME = "researcher"
PASSWORD = "a long and careful passphrase 42"
FAST = "100"  # ms, every phase of every trial


def add_admin(server: LiveServer) -> None:
    with server.sessions() as s:
        create_admin(s, USERNAME, PASSWORD)
        s.commit()


def fill_experiment_form(page: Any, slug: str, set_name: str) -> None:
    """A small Prolific study: every source once, natural and one metamer layer, 1 practice,
    1 gate and 1 catch trial, one break, 100 ms phases."""
    page.fill("#f-slug", slug)
    page.fill("#f-title", "Researcher scenario")
    page.check(f'input[name="stimulus_sets"][value="{set_name}"]')
    for key in ("natural", "tiny/fc"):
        page.check(f'input[name="conditions"][value="{key}"]')
    for field, value in {
        "practice-trials": "1",
        "gate-trials": "1",
        "gate-min-correct": "1",
        "catch-trials": "1",
        "breaks": "1",
        "timing-fixation-ms": FAST,
        "timing-stimulus-ms": FAST,
        "timing-mask-ms": FAST,
        "practice-timing-fixation-ms": FAST,
        "practice-timing-stimulus-ms": FAST,
        "practice-timing-mask-ms": FAST,
        "completion-codes-completed": "RSRCH1",
        "completion-codes-screened-out": "RSRCH0",
    }.items():
        page.fill(f"#f-{field}", value)
    page.select_option("#f-platform", "prolific")


def test_researcher_sets_up_a_study_watches_a_participant_and_downloads_the_csv(server: LiveServer, chromium: Any, tmp_path: Path) -> None:
    add_admin(server)
    set_name = f"uploaded-{server.backend}"
    bank_zip = zip_bank(make_bank(tmp_path / "bank", name=set_name, sources_per_label=1, seed=4242), tmp_path / "bank.zip")
    admin_ctx, admin, admin_guard = new_page(chromium, server.url)
    admin_guard.allow(r"404.*/favicon\.ico")  # the admin pages name no icon (harmless)

    # Log in.
    admin.goto(f"{server.url}/admin")
    admin.fill('input[name="username"]', USERNAME)
    admin.fill('input[name="password"]', PASSWORD)
    admin.click('[data-action="login"]')
    assert admin.locator("[data-admin-user]").inner_text() == USERNAME

    # Upload the bank; the gallery opens with every source and its metamers.
    admin.click('[data-nav="sets"]')
    admin.fill('form[data-form="upload"] input[name="name"]', set_name)
    admin.set_input_files('input[name="bank"]', str(bank_zip))
    admin.click('[data-action="upload"]')
    admin.locator("[data-done]").wait_for()
    assert admin.locator("[data-set-name]").inner_text() == set_name
    rows = admin.locator('[data-table="gallery"] tbody tr[data-source]')
    assert rows.count() == 4
    assert admin.locator('[data-table="gallery"] th[data-layer]').count() == 3, "one column per layer"
    images = admin.locator('[data-table="gallery"] img')
    assert images.count() >= 4 * 4
    for i in range(images.count()):  # every thumbnail loads
        assert images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")

    # Create the experiment through the form, then activate it.
    admin.click('[data-nav="experiments"]')
    admin.goto(f"{server.url}/admin/experiments/new")
    slug = f"researcher-{server.backend}"
    fill_experiment_form(admin, slug, set_name)
    admin.click('[data-action="save-experiment"]')
    assert admin.locator("[data-problems]").count() == 0, admin.locator("[data-problems]").all_inner_texts()
    assert admin.locator("[data-status]").inner_text() == "draft"
    admin.click('[data-action="activate"]')
    assert admin.locator("[data-status]").inner_text() == "active"
    url = admin.locator('[data-study-url="prolific"]').input_value()
    assert url == f"{server.url}/e/{slug}?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}&STUDY_ID={{{{%STUDY_ID%}}}}&SESSION_ID={{{{%SESSION_ID%}}}}"
    assert admin.locator('[data-stat="status.completed"]').inner_text() == "0"

    # A participant arrives through that link (as Prolific fills it in) and completes the study.
    study = LiveStudy(server, slug, {"platform": "prolific"})
    pid = "PROLIFIC-WATCHED"
    assert study.link(pid) == url.replace("{{%PROLIFIC_PID%}}", pid).replace("{{%STUDY_ID%}}", "study-1").replace("{{%SESSION_ID%}}", f"session-{pid}")
    part_ctx, part, part_guard = new_page(chromium, server.url)
    walker = Walker(part, study, pid)
    with intercept_prolific(part) as hits:
        trials = walker.begin()
        walker.answer_range(0, len(trials))
        walker.finish()
        part.wait_for_url(PROLIFIC_DONE + "**")
    assert hits[0].endswith("cc=RSRCH1")
    part_ctx.close()

    # The experiment page counts the completion by itself (it polls the monitor).
    admin.locator('[data-stat="status.completed"]:text-is("1")').wait_for(timeout=25_000)  # polls every 10 s

    # Download trials.csv: it parses and holds this participant's answered trials.
    with admin.expect_download() as dl:
        admin.click('[data-export="trials.csv"]')
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    table = list(csv.DictReader(io.StringIO(text)))
    mine = [r for r in table if r["platform_pid"] == pid]
    assert len(mine) == len(trials) == len(table)
    assert [int(r["trial_index"]) for r in mine] == list(range(len(trials)))
    assert [r["answer"] for r in mine] == [t["label"] for t in trials]
    assert {r["correct"] for r in mine} == {"true"}
    assert all(float(r["rt_ms"]) > 0 for r in mine)
    assert {r["participant_status"] for r in mine} == {"completed"}
    assert {r["condition"] for r in mine if r["phase"] == "main"} <= {"natural", "tiny/fc"}

    # The statistics scheme and the SEM convention are chosen in the same form.
    admin.select_option('[data-field="scheme"]', "centred")
    admin.select_option('[data-field="sem_ddof"]', "1")
    with admin.expect_download() as dl:
        admin.click('[data-export="stats.txt"]')
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    assert "Scheme (human vs model): centred" in text and "sample SD (ddof 1)" in text
    admin_ctx.close()
    assert admin_guard.problems == [] and part_guard.problems == []
