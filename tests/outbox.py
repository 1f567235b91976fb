"""A Python participant that follows the browser runner's rules, for fault tests.

It mirrors ``static/participant/api.js``: every answer goes into an outbox first and leaves it
only when the server has confirmed it (201, or 200 for an identical retry); network errors, 5xx,
429 and 408 are retried with the same payload after an exponential, jittered backoff; other 4xx
answers (except 401) are final and the item is dropped as refused. ``Api.persistent`` is
:meth:`OutboxParticipant.persistent`. Backoff times are scaled down (``backoff_base_s``) so tests
stay fast; the shape of the schedule is the runner's.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

TOKEN = re.compile(r"#t=([A-Za-z0-9_-]+)$")


def retryable_status(status: int) -> bool:
    """api.js ``isRetryable`` for an HTTP answer."""
    return status >= 500 or status in (429, 408)


def backoff_s(attempt: int, base_s: float) -> float:
    """api.js ``backoff``: ``base`` doubling up to 30×``base``, jittered to [half, full]."""
    b = min(30 * base_s, base_s * 2 ** min(attempt - 1, 5))
    return b / 2 + random.random() * b / 2


class GaveUp(RuntimeError):
    """The test's patience (``deadline_s``) ran out; the browser would have kept trying."""


@dataclass
class OutboxParticipant:
    http: httpx.Client
    slug: str
    pid: str
    backoff_base_s: float = 0.02
    deadline_s: float = 60.0
    token: str | None = None
    outbox: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Every answer the server confirmed, as sent (trial index -> body).
    confirmed: dict[int, dict[str, Any]] = field(default_factory=dict)
    refused: list[tuple[int, int, str]] = field(default_factory=list)
    retries: int = 0
    faults_seen: dict[str, int] = field(default_factory=dict)

    # -- transport -------------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _once(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> httpx.Response:
        kw: dict[str, Any] = {"headers": self._auth(), "params": params, "follow_redirects": False}
        if body is not None:
            kw["json"] = body
        return self.http.request(method, path, **kw)

    def persistent(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> httpx.Response:
        """Retry until an answer that is not retryable arrives (api.js ``Api.persistent``)."""
        attempt = 0
        start = time.monotonic()
        while True:
            try:
                r = self._once(method, path, body, params)
            except httpx.TransportError as exc:
                self._fault(type(exc).__name__)
            else:
                if not retryable_status(r.status_code):
                    return r
                self._fault(f"HTTP {r.status_code}")
            attempt += 1
            self.retries += 1
            if time.monotonic() - start > self.deadline_s:
                raise GaveUp(f"{self.pid}: {method} {path} still failing after {attempt} attempts")
            time.sleep(backoff_s(attempt, self.backoff_base_s))

    def _fault(self, kind: str) -> None:
        self.faults_seen[kind] = self.faults_seen.get(kind, 0) + 1

    # -- the outbox ------------------------------------------------------------------------------

    def add(self, body: dict[str, Any]) -> None:
        self.outbox.append(("/api/session/responses", body))

    def drain(self) -> list[dict[str, Any]]:
        """Send every queued answer in order until each is confirmed or refused; return the answers."""
        answers = []
        while self.outbox:
            path, body = self.outbox[0]
            r = self.persistent("POST", path, body)
            if r.status_code == 401:
                # The outbox keeps 401 items (the token may come back); here that is a test failure.
                raise AssertionError(f"{self.pid}: token refused: {r.text}")
            self.outbox.pop(0)
            if r.status_code in (200, 201):
                self.confirmed[body["trial_index"]] = body
                answers.append(r.json())
            else:
                self.refused.append((body["trial_index"], r.status_code, r.text))
        return answers

    # -- a whole session, as the runner does it --------------------------------------------------

    def arrive(self, params: dict[str, str]) -> str:
        r = self.persistent("GET", f"/e/{self.slug}", params=params)
        assert r.status_code == 303, f"{self.pid}: study link answered {r.status_code}: {r.text[-600:]}"
        m = TOKEN.search(r.headers["location"])
        assert m, r.headers["location"]
        self.token = m.group(1)
        return self.token

    def state(self) -> dict[str, Any]:
        r = self.persistent("GET", "/api/session")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def run(self, params: dict[str, str], answer: Callable[[dict[str, Any]], str], *, pause_s: float = 0.0, upto: int | None = None) -> dict[str, Any]:
        """Arrive (or come back), then answer every remaining trial in order and complete.

        ``answer(trial)`` picks the answer; ``upto`` stops before that trial index (to resume
        later). Returns the final state.
        """
        self.arrive(params)
        st = self.state()
        if st["stage"] == "consent":
            assert self.persistent("POST", "/api/session/consent", {"agree": True}).status_code == 200
            st["stage"] = "instructions"
        if st["stage"] == "instructions":
            assert self.persistent("POST", "/api/session/instructions").status_code == 200
        answered = set(st["answered"])
        checked_main = False
        for t in st["trials"]:
            if upto is not None and t["index"] >= upto:
                self.drain()
                return self.state()
            if t["index"] in answered:
                continue
            if t["phase"] in ("main", "catch") and not checked_main:
                # The runner's checkpoint: drain, then reload the state (the gate decision).
                checked_main = True
                self.drain()
                if self.state()["stage"] == "ended":
                    return self.state()
            self.add(
                {
                    "trial_index": t["index"],
                    "answer": answer(t),
                    "rt_ms": round(random.uniform(200, 900), 2),
                    "durations": {"stimulus_ms": 300.0},
                    "client": {"pid": self.pid},
                }
            )
            self.drain()
            if pause_s:
                time.sleep(pause_s)
        self.drain()
        r = self.persistent("POST", "/api/session/complete")
        assert r.status_code == 200, f"{self.pid}: complete answered {r.status_code}: {r.text[:300]}"
        return self.state()
