"""Scenario 2: a Prolific participant does an audio experiment in Chromium: calibration, the
headphone check passed by choosing the right answers, play-once clips, typed answers that must be
vocabulary words, and the completion redirect.

Chromium runs with its default autoplay policy (no ``--autoplay-policy`` flag), and audio starts
only from real clicks on the page's buttons. Note that Playwright runs its own page queries with
``userGesture: true``, so a headless test cannot prove that a page *without* those queries would
unlock audio; it checks that every sound starts from a click and that the AudioContext runs.
"""

from __future__ import annotations

import functools
from typing import Any
from unittest import mock

from app.participation.headphone import screening, signals
from tests import factories
from tests.browser.harness import (
    PROLIFIC_DONE,
    LiveServer,
    LiveStudy,
    Screenshots,
    click_action,
    intercept_prolific,
    new_page,
    screen,
    transition,
)

CLIP_S = 1.0  # long enough to try to answer while it plays
WORDS = factories.WORDS[:4]  # apple, banana, cherry, delta: the vocabulary
HEADPHONE_TRIALS = 2

# Reports every sound the page starts (its duration in s), through a Playwright binding.
AUDIO_RECORDER = r"""
(() => {
  const start = AudioBufferSourceNode.prototype.start;
  AudioBufferSourceNode.prototype.start = function (...args) {
    if (this.buffer && this.buffer.duration > 0.01) window.__mmAudio(this.buffer.duration);
    return start.apply(this, args);
  };
})();
"""


def audio_study(server: LiveServer) -> LiveStudy:
    def bank(root: Any) -> Any:
        with mock.patch.object(factories, "_wave", functools.partial(factories._wave, seconds=CLIP_S)):
            return factories.make_bank(root, modality="audio", labels=WORDS, sources_per_label=1, name=root.name, seed=77)

    return server.add_study(
        {
            "title": "Which word do you hear?",
            "conditions": ["natural", "tiny/fc"],
            "response": {"mode": "typed"},
            "headphone": {"check": "antiphase", "antiphase_trials": HEADPHONE_TRIALS, "antiphase_pass": HEADPHONE_TRIALS},
        },
        bank_builder=bank,
    )


def headphone_check(page: Any, study: LiveStudy, pid: str, shots: Screenshots) -> None:
    """Calibrate, then answer every antiphase trial right (as a headphone listener would)."""
    screen(page, "headphone-intro")
    shots.take("50-headphone-intro")
    click_action(page, "headphone-intro", "continue")
    cal = screen(page, "headphone-calibration")
    assert cal.locator('[data-action="continue"]').is_disabled(), "the volume must be set before going on"
    shots.take("51-headphone-calibration")
    cal.locator('[data-action="play-calibration"]').click()
    page.locator('[data-screen="headphone-calibration"][data-plays="1"]').wait_for()
    cal.locator('[data-action="continue"]').click()
    screen(page, "headphone-instructions")
    shots.take("52-headphone-instructions")
    click_action(page, "headphone-instructions", "continue")
    plan = screening.plan_attempt("antiphase", study.participant(pid).seed, 1, HEADPHONE_TRIALS)
    for t in plan:
        card = page.locator(f'#app > [data-screen="headphone-trial"][data-trial="{t.index}"]')
        card.wait_for()
        card.locator('[data-action="play"]').click()
        assert card.locator("[data-choice]:disabled").count() == 3, "no answer while the sounds play"
        if t.index == 0:
            shots.take("53-headphone-trial-playing")
        card.locator(f'[data-choice="{t.correct}"]:enabled').wait_for(timeout=15_000)
        card.locator(f'[data-choice="{t.correct}"]').click()


def test_audio_participant_passes_the_headphone_check_and_answers_typed_words(server: LiveServer, chromium: Any) -> None:
    study = audio_study(server)
    context, page, guard = new_page(chromium, server.url)
    starts: list[float] = []
    context.expose_binding("__mmAudio", lambda source, seconds: starts.append(seconds))
    context.add_init_script(AUDIO_RECORDER)
    shots = Screenshots(page)
    pid = "PROLIFIC-AUDIO"
    at_redirect: list[list[int]] = []

    with intercept_prolific(page, lambda url: at_redirect.append(study.answered(pid))) as hits:
        page.goto(study.link(pid))
        click_action(page, "consent", "agree")
        click_action(page, "instructions", "continue")
        headphone_check(page, study, pid, shots)
        screen(page, "phase")  # the practice begins once the check's answers are stored and judged
        trials = study.trials(pid)
        assert study.participant(pid).headphone_passed is True

        for k, t in enumerate(trials):
            between = transition(trials[k - 1] if k else None, t)
            if between:
                click_action(page, between, "continue")
            card = page.locator(f'#app > [data-screen="trial"]:has([data-trial="{t["index"]}"])')
            play = card.locator('[data-action="play"]')
            if k == 0:
                shots.take("54-audio-trial-play")
            play.click()
            # While the clip plays: no answer box, no way to type or submit, no second play.
            typed = card.locator("input.typed")
            assert card.locator(".answer.hidden").count() == 1 and typed.is_disabled()
            assert play.is_disabled()
            typed.wait_for(state="visible", timeout=10_000)
            assert play.is_disabled() and play.inner_text() == "Played", "the clip plays once"
            submit = card.locator('[data-action="submit"]')
            word = t["label"]
            if k == 0:
                # Only vocabulary words can be submitted, whatever is typed.
                typed.fill("xylophone")
                assert submit.is_disabled() and card.locator(".suggestions li").count() == 0
                typed.press("Enter")
                typed.fill(word[:3])
                assert submit.is_disabled(), "a prefix is not a word"
                options = card.locator(".suggestions li")
                assert word.capitalize() in options.all_inner_texts()
                assert set(options.all_inner_texts()) <= {w.capitalize() for w in WORDS}
                shots.take("55-audio-typed-suggestions")
                typed.fill(word + "s")
                assert submit.is_disabled(), "a non-word is refused"
                typed.fill(word[:3])
                for _ in range(options.all_inner_texts().index(word.capitalize()) + 1):
                    typed.press("ArrowDown")
                typed.press("Enter")  # picks the highlighted suggestion
                assert typed.input_value() == word.capitalize() and submit.is_enabled()
                assert study.answered(pid) == [], "nothing was sent for the refused inputs"
                submit.click()
                card.locator(".feedback").wait_for()
                shots.take("56-audio-feedback", sizes=(shots.sizes[0],))
            else:
                typed.fill(word.upper())  # exact words are accepted whatever the case
                assert submit.is_enabled()
                typed.press("Enter")
        click_action(page, "debrief", "continue")
        page.wait_for_url(PROLIFIC_DONE + "**", timeout=20_000)
    context.close()

    n = len(trials)
    assert len(hits) == 1 and hits[0].endswith("cc=C0MPLETE")
    assert at_redirect == [list(range(n))]
    rows = study.responses(pid)
    assert [r.trial_index for r in rows] == list(range(n))
    assert [r.answer for r in rows] == [t["label"] for t in trials]
    for r in rows:
        # The clip played to its end before the answer: the answer came after the clip's length.
        assert abs(r.durations["audio_ms"] - CLIP_S * 1000) < 60, r.durations
        assert (r.responded_at - r.shown_at).total_seconds() * 1000 >= CLIP_S * 1000 - 20
        assert r.client["audio_state"] == "running"
        assert r.client["presentations"] == 1  # heard once
    # Sounds started: the calibration once, each headphone trial once, each clip once.
    trial_s = signals.intervals("antiphase")[-1][1] / 1000  # a check trial ends with its third tone
    expected = [signals.CALIBRATION_S] + [trial_s] * HEADPHONE_TRIALS + [CLIP_S] * n
    assert [round(s, 2) for s in starts] == expected, starts
    p = study.participant(pid)
    assert (p.status, p.outcome, p.headphone_passed) == ("completed", "completed", True)
    assert guard.problems == []
