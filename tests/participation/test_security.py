"""Security properties of the participant side: unguessable tokens, participants walled off from
each other, security headers on every response, no script injection through experiment texts,
and the login throttle shared by every app process.

(Every admin route needing a login, CSRF and the login lockout itself: tests/admin/test_admin_auth.py.
Upload safety: tests/stimuli/test_bank.py for the reader, tests/stimuli/test_upload_safety.py for the import.)
"""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.admin.auth import IP_FAILURE_LIMIT, USER_FAILURE_LIMIT
from app.core.schema import Participant, Response, Trial
from app.core.security import MTURK_ORIGINS, participant_token, token_hash
from app.core.settings import Settings
from app.main import create_app
from tests.admin_client import add_admin, admin_routes, fast_login, try_login
from tests.study import Study, build_study, prolific

# ------------------------------------------------------------------------------ tokens


@pytest.fixture
def study(settings: Settings, tmp_path: Path) -> Study:
    return build_study(settings, tmp_path)


def _bits(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_participant_tokens_carry_256_bits_and_look_random(study: Study) -> None:
    tokens = [study.join(f"P{i}") for i in range(40)]
    raw = [_bits(t) for t in tokens]
    assert all(len(r) * 8 >= 128 for r in raw) and {len(r) for r in raw} == {32}
    assert len(set(tokens)) == len(tokens)
    # Consecutive participants' tokens share nothing: about half their bits differ (a counter,
    # a timestamp or a per-experiment prefix would make neighbours close).
    for a, b in zip(raw, raw[1:]):
        differing = sum(bin(x ^ y).count("1") for x, y in zip(a, b))
        assert 80 <= differing <= 176, differing
    ones = sum(bin(byte).count("1") for r in raw for byte in r)
    assert abs(ones / (len(raw) * 256) - 0.5) < 0.03


def test_tokens_are_not_derivable_from_what_a_participant_or_the_database_shows(study: Study) -> None:
    token = study.join("P1")
    with study.sessions() as s:
        p = s.scalar(sa.select(Participant))
        assert p is not None
        # Only the token's hash is stored; the HMAC needs the server's secret key.
        assert p.token_hash == token_hash(token) and token not in (p.public_id, p.token_salt, p.token_hash)
        assert participant_token("another-secret-key", p.public_id, p.token_salt) != token
        assert participant_token(study.settings.secret_key, p.public_id, p.token_salt) == token
        public_id, salt, stored = p.public_id, p.token_salt, p.token_hash
    for guess in (public_id, salt, stored, token[:-1], token[:-1] + ("A" if token[-1] != "A" else "B"), token.upper(), ""):
        assert study.client.get("/api/session", headers={"Authorization": f"Bearer {guess}"}).status_code == 401


def test_a_participant_reads_and_writes_only_their_own_data(study: Study) -> None:
    ta, tb = study.join("A"), study.join("B")
    sa_, sb = study.start(ta), study.start(tb)
    assert sa_["participant"] != sb["participant"]
    with study.sessions() as s:
        ids = {t: s.scalar(sa.select(Participant.id).where(Participant.token_hash == token_hash(t))) for t in (ta, tb)}
        b_trials = {i: lbl for i, lbl in s.execute(sa.select(Trial.index, Trial.label).where(Trial.participant_id == ids[tb]))}
    # A's state is A's plan, whatever B's is.
    assert [t["media"] for t in sa_["trials"]] == [t["media"] for t in study.state(ta)["trials"]]
    # B answers trial 0; A then answers trial 0 too: each stored under its own participant.
    assert study.answer(tb, 0, b_trials[0]).status_code == 201
    assert study.answer(ta, 0, study.wrong(b_trials[0])).status_code == 201
    # There is no way to name another participant: extra fields are refused, query ignored.
    r = study.client.post("/api/session/responses", params={"participant": sb["participant"]}, json={"trial_index": 1, "answer": "1", "participant": sb["participant"]}, headers=study.auth(ta))
    assert r.status_code == 422
    r = study.client.get("/api/session", params={"participant": sb["participant"]}, headers=study.auth(ta))
    assert r.json()["participant"] == sa_["participant"]
    with study.sessions() as s:
        rows = s.execute(sa.select(Response.participant_id, Response.trial_index, Response.answer)).all()
    assert sorted(rows) == sorted([(ids[tb], 0, b_trials[0]), (ids[ta], 0, study.wrong(b_trials[0]))])
    assert study.state(tb)["answered"] == [0]


def test_a_study_cookie_does_not_carry_over_to_another_experiment(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, {"platform": "none"})
    r = study.enter()
    assert r.status_code == 303
    cookie = next(iter(r.cookies.items()))
    from app.experiments.service import create_experiment
    from app.experiments.spec import parse_spec
    from tests.study import BASE_SPEC

    with study.sessions() as s:
        create_experiment(s, parse_spec({**BASE_SPEC, "slug": "other", "platform": "none"}), status="active")
        s.commit()
    # Replay the first study's cookie on the second study's link: a new participant, new token.
    study.client.cookies.set("mm_p2", cookie[1])
    r2 = study.client.get("/e/other", follow_redirects=False)
    assert r2.status_code == 303
    assert r2.headers["location"].split("#t=")[1] != r.headers["location"].split("#t=")[1]


def test_a_participant_token_opens_no_admin_page(study: Study) -> None:
    token = study.join("P1")
    study.client.cookies.set("mm_admin", token)
    for method, path in admin_routes(study.client.app):
        if method != "GET" or "{" in path or path == "/admin/login":
            continue
        r = study.client.get(path, headers=study.auth(token), follow_redirects=False)
        assert r.status_code in (303, 401, 403), (path, r.status_code)


# ------------------------------------------------------------------------------ headers


def _csp(value: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


def test_every_kind_of_response_carries_the_security_headers(study: Study) -> None:
    token = study.join("P1")
    media = study.state(token)["trials"][0]["media"]
    responses = {
        "study link": study.enter(prolific("P2")),
        "runner page": study.client.get(f"/e/{study.slug}/run"),
        "message page": study.client.get("/e/no-such-study"),
        "json api": study.client.get("/api/session", headers=study.auth(token)),
        "api error": study.client.get("/api/session"),
        "413": study.client.post("/api/session/events", content=b"x" * 100_000, headers={**study.auth(token), "Content-Type": "application/json"}),
        "media": study.client.get(media),
        "static": study.client.get("/static/participant/runner.js"),
        "openapi": study.client.get("/openapi.json"),
        "admin login": study.client.get("/admin/login"),
        "not found": study.client.get("/nothing-here"),
    }
    for what, r in responses.items():
        h = r.headers
        assert "content-security-policy" in h, what
        csp = _csp(h["content-security-policy"])
        assert csp["frame-ancestors"] == ["'self'", *MTURK_ORIGINS], what
        assert csp["default-src"] == ["'self'"] and csp["object-src"] == ["'none'"], what
        assert "'unsafe-inline'" not in csp["script-src"] and "'unsafe-eval'" not in csp["script-src"], what
        assert h["x-content-type-options"] == "nosniff", what
        assert h["referrer-policy"] == "same-origin", what


def test_frame_ancestors_allow_exactly_self_and_mturk() -> None:
    from app.core.security import content_security_policy

    fa = _csp(content_security_policy())["frame-ancestors"]
    assert fa == ["'self'", "https://www.mturk.com", "https://workersandbox.mturk.com"]
    assert "*" not in " ".join(fa) and "http:" not in " ".join(fa)


# ------------------------------------------------------------------------------ XSS

PAYLOADS = {
    "script": "<script>alert('xss-script')</script>",
    "img": '<img src=x onerror="alert(1)">',
    "svg": "<svg/onload=alert(2)>",
    "textarea": "</textarea><script>alert(3)</script>",
    "title": "</title><script>alert(4)</script>",
    "attr": '" autofocus onfocus="alert(5)',
    "md_js_link": "[click](javascript:alert(6))",
    "md_js_mixed_case": "[click](JaVaScRiPt:alert(7))",
    "md_js_entity": "[click](&#106;avascript:alert(8))",
    "md_data_link": "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCg5KTwvc2NyaXB0Pg==)",
    "html_js_link": '<a href="javascript:alert(10)">click</a>',
    "md_img_onerror": '![x](https://example.org/x.png "x\\" onerror=\\"alert(11)")',
}
EVIL = "\n\n".join(PAYLOADS.values())


class ScriptFinder(HTMLParser):
    """Collects everything in a page that would run script: inline <script> bodies mentioning
    alert(, event-handler attributes, and javascript:/data: URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "iframe", "object", "embed", "svg"):
            self._in_script = tag == "script"
            if tag != "script":
                self.found.append(f"<{tag}>")
        for name, value in attrs:
            v = (value or "").strip().lower().replace("\t", "").replace("\n", "")
            if name.startswith("on"):
                self.found.append(f"{tag} {name}={value}")
            if name in ("href", "src", "action", "formaction", "xlink:href") and v.startswith(("javascript:", "vbscript:", "data:text")):
                self.found.append(f"{tag} {name}={value}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and "alert(" in data:
            self.found.append(f"<script>{data[:40]}")


def scripts_in(html: str) -> list[str]:
    finder = ScriptFinder()
    finder.feed(html)
    return finder.found


def test_the_script_finder_finds_what_it_must() -> None:
    """The detector itself: each payload, unescaped, is caught."""
    from markupsafe import escape

    for name in ("script", "img", "svg", "html_js_link", "textarea"):
        assert scripts_in(f"<p>{PAYLOADS[name]}</p>"), name
    assert scripts_in(f"<p>{escape(EVIL)}</p>") == []


XSS_SPEC = {
    "slug": "xss-study",
    "title": "Study " + PAYLOADS["script"] + PAYLOADS["attr"],
    "description": EVIL,
    "platform": "mturk",
    "texts": {"consent": EVIL, "instructions": EVIL, "debrief": EVIL},
}
MTURK = {"assignmentId": "A1", "hitId": "H1", "workerId": "W1", "turkSubmitTo": "https://workersandbox.mturk.com"}


def test_experiment_texts_cannot_inject_script_into_any_page(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, XSS_SPEC)
    slug = study.slug
    pages: dict[str, str] = {}
    pages["mturk preview"] = study.client.get(f"/e/{slug}", params={**MTURK, "assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE"}).text
    r = study.client.get(f"/e/{slug}", params=MTURK, follow_redirects=False)
    assert r.status_code == 303
    token = r.headers["location"].split("#t=")[1]
    pages["runner"] = study.client.get(f"/e/{slug}/run").text
    pages["already taken part"] = study.client.get(f"/e/{slug}", params={**MTURK, "assignmentId": "A2"}).text
    # The JSON API renders the Markdown texts to HTML for the runner; each must be inert.
    state = study.state(token)
    for name, html in state["experiment"]["texts"].items():
        pages[f"api texts.{name}"] = html
    # Every admin page about this experiment (list, detail, edit form, monitoring, participants...).
    csrf = fast_login(study)
    assert csrf
    with study.sessions() as s:
        pid = s.scalar(sa.select(Participant.public_id))
    for method, path in admin_routes(study.client.app):
        if method != "GET" or path.endswith(("/export", "/export.csv", "/logout")) or "{set_id}" in path:
            continue
        url = path.replace("{exp_id}", "1").replace("{public_id}", str(pid))
        resp = study.client.get(url, follow_redirects=False)
        if resp.status_code == 200 and resp.headers.get("content-type", "").startswith("text/html"):
            pages[f"admin {path}"] = resp.text
    assert any(k.startswith("admin ") and "{exp_id}" in k for k in pages), sorted(pages)
    shown = [k for k, html in pages.items() if "xss-script" in html or "alert(1)" in html]
    assert len(shown) >= 5, shown  # the texts really are on these pages, escaped
    problems = {k: scripts_in(html) for k, html in pages.items()}
    assert {k: v for k, v in problems.items() if v} == {}


def test_markdown_keeps_ordinary_formatting_and_safe_links() -> None:
    from app.core.templating import markdown

    html = str(markdown("**bold** and [site](https://example.org) and [mail](mailto:lab@example.org)"))
    assert "<strong>bold</strong>" in html
    assert 'href="https://example.org"' in html and 'href="mailto:lab@example.org"' in html


# ------------------------------------------------------------------------------ login throttle


def test_the_login_lockout_is_shared_by_every_app_process(study: Study) -> None:
    """Failures counted by one process lock the account on another (the counters are in the
    database), so adding uvicorn workers does not multiply an attacker's guesses."""
    add_admin(study)
    other = TestClient(create_app(study.settings))
    clients = [study.client, other]
    for k in range(USER_FAILURE_LIMIT):
        r = try_login(clients[k % 2], password="wrong password!!")
        assert r.status_code in (200, 400, 401, 429)
    for client in clients:
        r = try_login(client)  # the right password, but the name is locked now
        assert r.status_code != 303, "locked account logged in"
    assert IP_FAILURE_LIMIT > USER_FAILURE_LIMIT
