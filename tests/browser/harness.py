"""The machinery of the browser tests: a real uvicorn server on a fresh database, studies set up
through the app's own import and experiment code, and a guarded Chromium page that records which
screens the participant saw and fails the test on page errors, console errors or HTTP errors.

Everything here is test infrastructure; the scenarios live in the ``test_*.py`` files beside it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_sessionmaker
from app.core.media_store import MediaStore
from app.core.schema import Experiment, Participant, Response, Trial
from app.core.settings import Settings
from app.experiments.service import create_experiment
from app.experiments.spec import parse_spec
from app.stimuli.importer import import_bank
from tests.factories import make_bank

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
SECRET_KEY = "browser-test-secret-key-not-for-production"

# Debian's Chromium; the Playwright-bundled browsers are never downloaded.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]
# Viewports of the layout scenario (CSS px): a common desktop, and a small laptop (a 1366×768
# screen minus the browser's toolbars, or a 1280×800 screen at 125 % zoom, is about this big).
DESKTOP = {"width": 1280, "height": 800}
SMALL_LAPTOP = {"width": 1024, "height": 640}

PROLIFIC_DONE = "https://app.prolific.com/submissions/complete"

_slugs = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------------------------ server


@dataclass
class LiveServer:
    """A uvicorn subprocess serving the app on ``url``, plus direct access to its database."""

    backend: str
    url: str
    settings: Settings
    sessions: sessionmaker[Session]
    store: MediaStore
    workdir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def add_study(
        self,
        spec: dict[str, Any] | None = None,
        *,
        bank: dict[str, Any] | None = None,
        bank_builder: Callable[[Path], Path] | None = None,
        status: str = "active",
    ) -> LiveStudy:
        """Import a fresh bank and create an experiment on it (unique slug and set name per call)."""
        n = next(_slugs)
        slug = f"b{n}-{(spec or {}).get('slug', 'study')}"[:60].rstrip("-")
        set_name = f"bank-{n}"
        root = self.workdir / "banks" / set_name
        bank = {"sources_per_label": 1, **(bank or {})}  # 4 sources: one per category
        path = bank_builder(root) if bank_builder else make_bank(root, name=set_name, seed=1000 * n, **bank)
        import_bank(self.sessions, self.store, path, set_name)
        full = {**BASE_SPEC, **(spec or {}), "slug": slug, "stimulus_sets": [set_name]}
        with self.sessions() as s:
            create_experiment(s, parse_spec(full), status=status)
            s.commit()
        return LiveStudy(self, slug, full)


def start_server(backend: str, database_url: str, workdir: Path) -> LiveServer:
    """Start uvicorn on a free port with the app configured by environment variables, and wait
    until /healthz answers (at most 30 s)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "MEDIA_ROOT": str(workdir / "media"),
        "VAR_DIR": str(workdir / "var"),
        "SECRET_KEY": SECRET_KEY,
        "BASE_URL": url,
        "PYTHONUNBUFFERED": "1",
    }
    log_path = workdir / "uvicorn.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    settings = Settings(var_dir=workdir / "var", database_url=database_url, media_root=workdir / "media", secret_key=SECRET_KEY, base_url=url)
    server = LiveServer(backend, url, settings, make_sessionmaker(make_engine(settings)), MediaStore(settings.media_dir), workdir, proc, log_path)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            raise RuntimeError(f"uvicorn did not answer /healthz within 30 s:\n{server.log_tail()}")
        time.sleep(0.1)


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


# ------------------------------------------------------------------------------------- studies

# Small and quick: 1 practice, 1 gate, 4 main and 1 catch trial in two blocks, 100 ms phases.
BASE_SPEC: dict[str, Any] = {
    "title": "Recognizing images",
    "conditions": ["natural", "tiny/conv1", "tiny/conv2", "tiny/fc"],
    "practice": {"trials": 1, "timing": {"fixation_ms": 100, "stimulus_ms": 100, "mask_ms": 100}},
    "gate": {"trials": 1, "min_correct": 1},
    "catch": {"trials": 1},
    "breaks": 1,
    "timing": {"fixation_ms": 100, "stimulus_ms": 100, "mask_ms": 100},
    "platform": "prolific",
    "completion_codes": {"completed": "C0MPLETE", "screened_out": "SCREENED", "failed_attention": "ATTN"},
}


@dataclass
class LiveStudy:
    server: LiveServer
    slug: str
    spec: dict[str, Any]

    def link(self, pid: str | None = None, session: str | None = None) -> str:
        """The study link as the recruitment platform opens it (Prolific adds its ids)."""
        if self.spec.get("platform") != "prolific":
            return f"{self.server.url}/e/{self.slug}"
        q = urlencode({"PROLIFIC_PID": pid, "STUDY_ID": "study-1", "SESSION_ID": session or f"session-{pid}"})
        return f"{self.server.url}/e/{self.slug}?{q}"

    def participant(self, pid: str | None = None) -> Participant:
        """This study's participant with platform id ``pid`` (or its latest one)."""
        with self.server.sessions() as s:
            q = sa.select(Participant).join(Experiment, Experiment.id == Participant.experiment_id).where(Experiment.slug == self.slug)
            if pid is not None:
                q = q.where(Participant.platform_pid == pid)
            p = s.scalar(q.order_by(Participant.id.desc()))
            assert p is not None, f"no participant {pid or ''} in {self.slug}"
            s.expunge(p)
            return p

    def participants(self) -> int:
        with self.server.sessions() as s:
            q = sa.select(sa.func.count()).select_from(Participant).join(Experiment, Experiment.id == Participant.experiment_id)
            return int(s.scalar(q.where(Experiment.slug == self.slug)) or 0)

    def trials(self, pid: str | None = None) -> list[dict[str, Any]]:
        """The participant's planned trials, in order: index, phase, block, label (true answer)."""
        p = self.participant(pid)
        with self.server.sessions() as s:
            rows = s.execute(sa.select(Trial.index, Trial.phase, Trial.block, Trial.label).where(Trial.participant_id == p.id).order_by(Trial.index)).all()
        return [{"index": i, "phase": ph, "block": b, "label": lab} for i, ph, b, lab in rows]

    def responses(self, pid: str | None = None) -> list[Response]:
        p = self.participant(pid)
        with self.server.sessions() as s:
            rows = list(s.scalars(sa.select(Response).where(Response.participant_id == p.id).order_by(Response.trial_index)))
            for r in rows:
                s.expunge(r)
            return rows

    def answered(self, pid: str | None = None) -> list[int]:
        return [r.trial_index for r in self.responses(pid)]


# ------------------------------------------------------------------------------ guarded pages

# Records each screen the runner shows, in order, as "name" or "trial:<index>". Each screen is a
# new element, so one appearance is one entry. The page calls a Playwright binding; the test never
# evaluates script in the page (page.evaluate counts as a user gesture and would unlock audio).
SCREEN_RECORDER = r"""
(() => {
  const report = () => {
    const app = document.getElementById("app");
    const card = app && app.querySelector(":scope > [data-screen]");
    if (!card || card.__mmSeen) return;
    card.__mmSeen = true;
    const stage = card.querySelector("[data-trial]");
    window.__mmScreen(card.dataset.screen + (stage ? ":" + stage.dataset.trial : ""));
  };
  new MutationObserver(report).observe(document, { childList: true, subtree: true });
  document.addEventListener("DOMContentLoaded", report);
})();
"""


@dataclass
class PageGuard:
    """Collects what would make a participant's page broken: uncaught errors, console errors,
    HTTP error answers from our server, and the outbox refusing an answer."""

    base_url: str
    screens: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Accept console messages matching ``pattern`` (e.g. failed fetches while offline)."""
        self.allowed.append(re.compile(pattern))

    def _problem(self, text: str) -> None:
        if not any(p.search(text) for p in self.allowed):
            self.problems.append(text)

    def attach(self, page: Any) -> None:
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)
        page.on("response", self._response)

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            where = (msg.location or {}).get("url", "")
            self._problem(f"console error: {msg.text}" + (f" ({where})" if where else ""))
        elif msg.type == "warning" and "outbox" in msg.text:
            self._problem(f"console warning: {msg.text}")

    def _response(self, resp: Any) -> None:
        if resp.url.startswith(self.base_url) and resp.status >= 400:
            self._problem(f"HTTP {resp.status} {resp.request.method} {resp.url}")

    def trial_screens(self) -> list[int]:
        return [int(s.split(":")[1]) for s in self.screens if s.startswith("trial:")]

    def flow(self) -> list[str]:
        """The screens in order without transient ones ('loading' appears only when media is slow)."""
        return [s for s in self.screens if s != "loading"]


def new_page(browser: Any, base_url: str, *, viewport: dict[str, int] | None = None, **context_kw: Any) -> tuple[Any, Any, PageGuard]:
    context = browser.new_context(viewport=viewport or DESKTOP, **context_kw)
    context.set_default_timeout(15_000)
    guard = PageGuard(base_url)
    context.expose_binding("__mmScreen", lambda source, name: guard.screens.append(name))
    context.add_init_script(SCREEN_RECORDER)
    page = context.new_page()
    guard.attach(page)
    return context, page, guard


@contextlib.contextmanager
def intercept_prolific(page: Any, on_hit: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """Catch the completion redirect to Prolific (the machine has no internet): record each URL,
    call ``on_hit(url)`` at that moment (the test checks the database there), answer with a stub."""
    hits: list[str] = []

    def handle(route: Any) -> None:
        url = route.request.url
        hits.append(url)
        if on_hit is not None:
            on_hit(url)
        route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>Prolific</title><p data-prolific>Submission received</p>")

    page.route("https://app.prolific.com/**", handle)
    yield hits


# ----------------------------------------------------------------------------- participant

def screen(page: Any, name: str, timeout: float = 15_000) -> Any:
    """Wait until the runner shows screen ``name``; return its locator."""
    loc = page.locator(f'#app > [data-screen="{name}"]')
    loc.wait_for(state="visible", timeout=timeout)
    return loc


def click_action(page: Any, screen_name: str, action: str) -> None:
    screen(page, screen_name).locator(f'[data-action="{action}"]').click()


def wait_trial(page: Any, index: int, timeout: float = 15_000) -> Any:
    """Wait for trial ``index`` and for its response grid to be enabled; return the trial card."""
    card = page.locator(f'#app > [data-screen="trial"]:has([data-trial="{index}"])')
    card.wait_for(state="visible", timeout=timeout)
    card.locator(".answer:not(.hidden) button[data-category]:not([disabled]), .answer:not(.hidden) input.typed:not([disabled])").first.wait_for(timeout=timeout)
    return card


def transition(prev: dict[str, Any] | None, t: dict[str, Any]) -> str | None:
    """The screen the runner shows between trial ``prev`` and trial ``t`` (None: none). It depends
    only on the two trials, so it is the same after a reload."""
    phase = lambda x: None if x is None else ("main" if x["phase"] == "catch" else x["phase"])  # noqa: E731
    if phase(t) != phase(prev):
        return "phase"
    if phase(t) == "main" and prev is not None and t["block"] != prev["block"]:
        return "break"
    return None


class Walker:
    """Drives a participant through a button-grid experiment by clicking, like a person would."""

    def __init__(self, page: Any, study: LiveStudy, pid: str) -> None:
        self.page = page
        self.study = study
        self.pid = pid
        self.trials: list[dict[str, Any]] = []

    def begin(self) -> list[dict[str, Any]]:
        """Open the study link, consent, read the instructions."""
        self.page.goto(self.study.link(self.pid))
        click_action(self.page, "consent", "agree")
        click_action(self.page, "instructions", "continue")
        self.trials = self.study.trials(self.pid)
        return self.trials

    def wrong(self, t: dict[str, Any]) -> str:
        return next(c for c in sorted({x["label"] for x in self.trials}) if c != t["label"])

    def answer(self, index: int, choice: str | None = None) -> str:
        """Pass the screen before trial ``index`` if there is one, then answer it (correctly unless
        ``choice`` is given); for practice trials wait for the feedback. Returns the answer."""
        t = self.trials[index]
        card = self.reach(index)
        choice = choice or t["label"]
        card.locator(f'button[data-category="{choice}"]').click()
        if t["phase"] == "practice":
            card.locator(".feedback").wait_for()
        return choice

    def reach(self, index: int) -> Any:
        """Wait for trial ``index``, passing the phase or break screen before it if it shows up
        first; return the trial card once its answers are enabled."""
        between = transition(self.trials[index - 1] if index else None, self.trials[index])
        if between:
            card = self.page.locator(f'#app > [data-screen="trial"]:has([data-trial="{index}"])')
            either = self.page.locator(f'#app > [data-screen="{between}"]').or_(card)
            either.first.wait_for()
            if not card.is_visible():
                click_action(self.page, between, "continue")
        return wait_trial(self.page, index)

    def answer_range(self, start: int, stop: int) -> None:
        for i in range(start, stop):
            self.answer(i)

    def finish(self) -> None:
        """Leave the debrief screen (the runner then saves, completes and redirects)."""
        click_action(self.page, "debrief", "continue")


# ------------------------------------------------------------------------------- screenshots

class Screenshots:
    """Saves what the participant sees (the viewport, no scrolling) at the desktop and the small
    laptop size, under ``test-artifacts/screenshots/<width>x<height>/``, and checks at each size
    that every answer button and action button is inside the viewport and not covered, so no
    screen needs scrolling to go on."""

    def __init__(self, page: Any, sizes: tuple[dict[str, int], ...] = (DESKTOP, SMALL_LAPTOP)) -> None:
        self.page = page
        self.sizes = sizes
        self.taken: list[Path] = []

    def take(self, name: str, *, check_fit: bool = True, sizes: tuple[dict[str, int], ...] | None = None) -> None:
        for size in sizes or self.sizes:
            self.page.set_viewport_size(size)
            folder = SCREENSHOTS / f"{size['width']}x{size['height']}"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{name}.png"
            self.page.screenshot(path=str(path), animations="disabled")  # finishes CSS transitions first
            self.taken.append(path)
            if check_fit:
                self.assert_fits(name, size)
        self.page.set_viewport_size(self.sizes[0])

    def assert_fits(self, name: str, size: dict[str, int]) -> None:
        controls = self.page.locator("#app button:visible, #app input:visible, #app .feedback, #status.visible")
        for i in range(controls.count()):
            box = controls.nth(i).bounding_box()
            assert box is not None
            label = controls.nth(i).get_attribute("data-category") or controls.nth(i).get_attribute("data-action") or controls.nth(i).inner_text()[:40]
            inside = box["x"] >= 0 and box["y"] >= 0 and box["x"] + box["width"] <= size["width"] and box["y"] + box["height"] <= size["height"]
            assert inside, f"{name} at {size['width']}x{size['height']}: control {label!r} at {box} is outside the viewport"
