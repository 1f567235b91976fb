"""Scenarios 3 and 4: a participant reloads the page midway, and a participant loses the network
for several trials. Nothing is lost or stored twice, and the redirect to Prolific waits until the
server holds every answer."""

from __future__ import annotations

import time
from typing import Any

from tests.browser.harness import PROLIFIC_DONE, LiveServer, Walker, intercept_prolific, new_page, screen, transition


def first_main(trials: list[dict[str, Any]]) -> int:
    return next(t["index"] for t in trials if t["phase"] in ("main", "catch"))


def expected_resume(trials: list[dict[str, Any]], index: int) -> list[str]:
    """Screens after a reload at unanswered trial ``index``: the break screen again if the trial
    starts a block, then the trial itself."""
    between = transition(trials[index - 1], trials[index])
    return ([between] if between else []) + [f"trial:{index}"]


def test_reload_midway_resumes_at_the_first_unanswered_trial(server: LiveServer, chromium: Any) -> None:
    study = server.add_study()
    context, page, guard = new_page(chromium, server.url)
    guard.allow(r"net::ERR_FAILED")  # the request this test makes fail on purpose
    pid = "PROLIFIC-RELOAD"
    walker = Walker(page, study, pid)
    with intercept_prolific(page) as hits:
        trials = walker.begin()
        m = first_main(trials)
        walker.answer_range(0, m + 2)

        # Reload while trial m+2 is on screen, before it is answered.
        walker.reach(m + 2)
        seen = len(guard.screens)
        page.reload()
        walker.reach(m + 2)
        after = [s for s in guard.screens[seen:] if s != "loading"]
        assert after == expected_resume(trials, m + 2), "resumes right at the unanswered trial, without consent or phase screens"
        assert study.answered(pid) == list(range(m + 2))

        # Reload right after an answer the server has not received (its request fails): the
        # answer waits in localStorage, the runner continues with the next trial and sends it.
        page.route("**/api/session/responses", lambda route: route.abort())
        walker.answer(m + 2)
        walker.reach(m + 3)
        page.unroute("**/api/session/responses")
        assert study.answered(pid) == list(range(m + 2))
        seen = len(guard.screens)
        page.reload()
        walker.reach(m + 3)
        assert [s for s in guard.screens[seen:] if s != "loading"] == expected_resume(trials, m + 3)
        deadline = time.monotonic() + 10
        while study.answered(pid) != list(range(m + 3)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert study.answered(pid) == list(range(m + 3)), "the answer kept in the browser is sent after the reload"

        # Reopen the study link from Prolific (e.g. a new tab): same participant, same place.
        walker.answer(m + 3)
        seen = len(guard.screens)
        page.goto(study.link(pid))
        walker.reach(m + 4)
        assert [s for s in guard.screens[seen:] if s != "loading"] == expected_resume(trials, m + 4)
        assert study.participant(pid).status == "started"

        walker.answer_range(m + 4, len(trials))
        walker.finish()
        page.wait_for_url(PROLIFIC_DONE + "**")
    context.close()

    assert len(hits) == 1
    rows = study.responses(pid)
    assert [r.trial_index for r in rows] == list(range(len(trials))), "every trial answered exactly once"
    assert all(r.correct for r in rows)
    # Each answer says how often its stimulus was presented in this browser: twice for the trials
    # whose stimulus had been shown when the page was reloaded, once for every other.
    presented = {r.trial_index: r.client["presentations"] for r in rows}
    assert presented[m + 2] == presented[m + 3] == 2
    assert presented[m + 4] in (1, 2)  # the link was reopened right after trial m+3's answer
    assert {i: n for i, n in presented.items() if i not in (m + 2, m + 3, m + 4)} == {i: 1 for i in presented if i not in (m + 2, m + 3, m + 4)}
    # Only trials on screen at a reload were shown twice; no answered trial came back.
    shown = guard.trial_screens()
    assert sorted(set(shown)) == list(range(len(trials)))
    assert m + 2 in {i for i in shown if shown.count(i) > 1} <= {m + 2, m + 3, m + 4}
    assert guard.screens.count("consent") == 1 and guard.screens.count("instructions") == 1
    assert guard.problems == []


def test_network_loss_for_several_trials_loses_nothing_and_the_redirect_waits(server: LiveServer, chromium: Any) -> None:
    study = server.add_study()
    context, page, guard = new_page(chromium, server.url)
    guard.allow(r"net::ERR_INTERNET_DISCONNECTED")  # the browser logs each failed request
    pid = "PROLIFIC-OFFLINE"
    walker = Walker(page, study, pid)
    stored_at_redirect: list[list[int]] = []
    with intercept_prolific(page, lambda url: stored_at_redirect.append(study.answered(pid))) as hits:
        trials = walker.begin()
        n = len(trials)
        m = first_main(trials)
        walker.answer_range(0, m + 1)
        walker.reach(m + 1)
        # Everything up to here was confirmed before the connection drops.
        deadline = time.monotonic() + 10
        while study.answered(pid) != list(range(m + 1)) and time.monotonic() < deadline:
            time.sleep(0.05)

        context.set_offline(True)
        walker.answer_range(m + 1, n)  # several trials, across the break, all offline
        status = page.locator("#status")
        assert "Connection problem" in status.inner_text()
        walker.finish()
        screen(page, "saving")
        time.sleep(3)
        assert hits == [], "no redirect while answers are still only in the browser"
        assert study.answered(pid) == list(range(m + 1)), "the offline answers have not reached the server"
        assert study.participant(pid).status == "started"
        screen(page, "saving")

        context.set_offline(False)
        page.wait_for_url(PROLIFIC_DONE + "**", timeout=30_000)
    context.close()

    assert len(hits) == 1 and hits[0].endswith("cc=C0MPLETE")
    assert stored_at_redirect == [list(range(n))], "every answer was stored before the redirect"
    rows = study.responses(pid)
    assert [r.trial_index for r in rows] == list(range(n))
    assert all(r.correct for r in rows)
    assert study.participant(pid).status == "completed"
    assert guard.problems == []
