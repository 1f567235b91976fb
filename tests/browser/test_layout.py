"""Scenario 6: every participant screen at a desktop and a small laptop size (screenshots saved for
people to look at, and checked for controls outside the viewport), the whole experiment done with
the keyboard only, and the clear message phones get when the experiment excludes them."""

from __future__ import annotations

from typing import Any

from tests.browser.harness import (
    DESKTOP,
    SMALL_LAPTOP,
    LiveServer,
    LiveStudy,
    Screenshots,
    new_page,
    screen,
    transition,
    wait_trial,
)

# The paper's 16 image categories (docs/science.md §4), answered through a grid of icon buttons.
PAPER16 = ["airplane", "bear", "bicycle", "bird", "boat", "bottle", "car", "cat", "chair", "clock", "dog", "elephant", "keyboard", "knife", "oven", "truck"]
SLOW = {"fixation_ms": 800, "stimulus_ms": 800, "mask_ms": 800}  # long enough to photograph each phase
FAST = {"fixation_ms": 50, "stimulus_ms": 50, "mask_ms": 50}
IPHONE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"


def paper_like_study(server: LiveServer, **spec: Any) -> LiveStudy:
    return server.add_study(
        {
            "title": "Which object is it?",
            "platform": "none",
            "conditions": ["natural", "tiny/fc"],
            "sources_per_participant": 4,
            "practice": {"trials": 2, "timing": SLOW},
            "gate": {"trials": 2, "min_correct": 1},
            "catch": {"trials": 1},
            "timing": FAST,
            "response": {"show": "both"},
            **spec,
        },
        bank={"labels": PAPER16, "sources_per_label": 1},
    )


def focused(page: Any) -> Any:
    return page.locator(":focus")


def key_continue(page: Any, name: str) -> None:
    """On screen ``name`` the focus is already on the action button; Enter presses it."""
    screen(page, name)
    assert focused(page).get_attribute("data-action") == "continue", f"{name}: focus is not on the button"
    page.keyboard.press("Enter")


def key_answer(page: Any, index: int, category: str) -> None:
    """Answer with the arrow keys and Enter: the grid takes the focus when it appears (no button
    pre-selected, so a stray Enter answers nothing); the first arrow key enters it at the first
    button; then ArrowDown moves one row and ArrowRight one button."""
    card = wait_trial(page, index)
    buttons = card.locator("button[data-category]")
    order = [buttons.nth(i).get_attribute("data-category") for i in range(buttons.count())]
    tops = [buttons.nth(i).bounding_box()["y"] for i in range(len(order))]
    columns = sum(1 for y in tops if abs(y - tops[0]) < 1)
    assert focused(page).get_attribute("role") == "group", "the grid takes the focus when it appears"
    page.keyboard.press("Enter")
    assert card.locator("button.chosen").count() == 0, "Enter on the grid itself answers nothing"
    page.keyboard.press("ArrowRight")
    assert focused(page).get_attribute("data-category") == order[0]
    target = order.index(category)
    for _ in range(target // columns):
        page.keyboard.press("ArrowDown")
    for _ in range(target % columns):
        page.keyboard.press("ArrowRight")
    assert focused(page).get_attribute("data-category") == category
    page.keyboard.press("Enter")


def test_every_screen_at_two_sizes_done_with_the_keyboard_only(server: LiveServer, chromium: Any) -> None:
    study = paper_like_study(server, estimated_minutes=30)
    context, page, guard = new_page(chromium, server.url, viewport=DESKTOP)
    guard.allow(r"net::ERR_INTERNET_DISCONNECTED")
    shots = Screenshots(page)

    page.goto(study.link())
    screen(page, "consent")
    shots.take("01-consent")
    assert focused(page).get_attribute("data-action") is None, "no consent answer is pre-selected"
    page.keyboard.press("Tab")
    assert focused(page).get_attribute("data-action") == "decline"
    page.keyboard.press("Tab")
    assert focused(page).get_attribute("data-action") == "agree"
    page.keyboard.press("Enter")
    screen(page, "instructions")
    shots.take("02-instructions")
    page.keyboard.press("Enter")
    trials = study.trials()
    wrong = lambda t: next(c for c in PAPER16 if c != t["label"])  # noqa: E731

    for k, t in enumerate(trials):
        between = transition(trials[k - 1] if k else None, t)
        if between:
            screen(page, between)
            if between == "phase":
                shots.take({"practice": "03-practice-intro", "gate": "10-gate-intro"}.get(t["phase"], "11-main-intro"))
            elif between == "break":
                shots.take("20-break")
            key_continue(page, between)
        if k == 0:  # photograph each phase of a (slow) practice trial
            stage = page.locator(f'[data-trial="{t["index"]}"]')
            for part, name in (("fixation", "04-fixation"), ("stimulus", "05-stimulus"), ("mask", "06-mask")):
                stage.locator(f".{part}").wait_for(state="visible")
                shots.take(name)
            wait_trial(page, t["index"])
            shots.take("07-response-practice")
        if t["phase"] in ("main", "catch") and trials[k - 1]["phase"] not in ("main", "catch"):
            wait_trial(page, t["index"])
            shots.take("12-response-main")
        if k == len(trials) - 1:
            context.set_offline(True)  # the last answer cannot be sent: the saving screen waits
        key_answer(page, t["index"], wrong(t) if k == 0 else t["label"])
        if k == 0:
            page.locator(".feedback").wait_for()
            shots.take("08-feedback-incorrect", sizes=(DESKTOP,))  # the feedback shows for 1 s
        if k == 1:
            page.locator(".feedback").wait_for()
            shots.take("09-feedback-correct", sizes=(SMALL_LAPTOP,))

    screen(page, "debrief")
    shots.take("21-debrief")
    page.keyboard.press("Enter")
    screen(page, "saving")
    page.locator("#status.visible").wait_for()
    assert "Connection problem" in page.locator("#status").inner_text()
    shots.take("22-saving-offline")
    context.set_offline(False)
    done = screen(page, "complete", timeout=30_000)
    assert done.locator("[data-code]").inner_text() == "C0MPLETE"
    shots.take("23-complete-with-code")
    context.close()

    assert [r.trial_index for r in study.responses()] == list(range(len(trials)))
    assert guard.problems == []
    assert len(shots.taken) >= 30


def test_declining_and_failing_the_gate_show_clear_end_screens(server: LiveServer, chromium: Any) -> None:
    study = paper_like_study(server, practice={"trials": 2, "timing": FAST})

    context, page, guard = new_page(chromium, server.url)
    page.goto(study.link())
    screen(page, "consent").locator('[data-action="decline"]').click()
    confirm = screen(page, "decline-confirm")
    Screenshots(page).take("29-decline-confirm")
    confirm.locator('[data-action="back"]').click()
    assert study.participant().status == "started", "going back changes nothing"
    screen(page, "consent").locator('[data-action="decline"]').click()
    screen(page, "decline-confirm").locator('[data-action="confirm-decline"]').click()
    declined = screen(page, "declined")
    assert "chose not to take part" in declined.inner_text()
    Screenshots(page).take("30-declined")
    p = study.participant()
    assert (p.consent_at, p.status, p.outcome, p.slot) == (None, "returned", "declined", None), "declining frees the slot at once"
    page.reload()
    assert "chose not to take part" in screen(page, "declined").inner_text(), "a reload shows the same end screen"
    assert guard.problems == []
    context.close()

    context, page, guard = new_page(chromium, server.url)
    page.goto(study.link())
    screen(page, "consent").locator('[data-action="agree"]').click()
    screen(page, "instructions").locator('[data-action="continue"]').click()
    trials = study.trials()
    for k, t in enumerate(trials[:4]):
        between = transition(trials[k - 1] if k else None, t)
        if between:
            screen(page, between).locator('[data-action="continue"]').click()
        wrong = next(c for c in PAPER16 if c != t["label"])
        wait_trial(page, t["index"]).locator(f'button[data-category="{wrong}"]').click()
    out = screen(page, "screened-out")
    assert "did not meet the requirements" in out.inner_text()
    assert out.locator("[data-code]").inner_text() == "SCREENED"
    Screenshots(page).take("31-screened-out")
    assert (study.participant().status, study.participant().slot) == ("screened_out", None)
    assert guard.problems == []
    context.close()


def test_phones_see_a_clear_message_when_the_experiment_excludes_them(server: LiveServer, chromium: Any) -> None:
    study = paper_like_study(server)
    phone = {"width": 390, "height": 844}
    context, page, guard = new_page(chromium, server.url, viewport=phone, user_agent=IPHONE_UA, is_mobile=True, has_touch=True)
    page.goto(study.link())
    msg = screen(page, "message")
    assert page.locator("h1").inner_text() == "Computer needed"
    assert "desktop or laptop computer" in msg.inner_text()
    Screenshots(page, sizes=(phone,)).take("40-mobile-excluded-by-server")
    assert study.participants() == 0, "no session is started on a phone"
    assert guard.problems == []
    context.close()

    # A phone asking for the "desktop site" sends a desktop user agent: the page itself sees the
    # touch screen and the small display, and shows the same message before consent.
    context, page, guard = new_page(chromium, server.url, viewport=phone, screen=phone, is_mobile=True, has_touch=True)
    page.goto(study.link())
    msg = screen(page, "unsupported")
    assert page.locator("h1").inner_text() == "Computer needed"
    assert "desktop or laptop computer" in msg.inner_text()
    Screenshots(page, sizes=(phone,)).take("41-mobile-desktop-site")
    assert study.participant().consent_at is None
    assert guard.problems == []
    context.close()

    allowed = paper_like_study(server, allow_mobile=True)
    context, page, guard = new_page(chromium, server.url, viewport=phone, user_agent=IPHONE_UA, is_mobile=True, has_touch=True)
    page.goto(allowed.link())
    screen(page, "consent")
    Screenshots(page, sizes=(phone,)).take("42-mobile-allowed-consent")
    assert guard.problems == []
    context.close()


def test_a_link_without_its_token_explains_what_to_do(server: LiveServer, chromium: Any) -> None:
    study = paper_like_study(server)
    context, page, guard = new_page(chromium, server.url)
    page.goto(f"{server.url}/e/{study.slug}/run")
    err = screen(page, "error")
    assert "open this study from the link" in err.inner_text()
    Screenshots(page).take("43-link-incomplete")
    assert guard.problems == []
    context.close()
