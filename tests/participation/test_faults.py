"""Nothing is lost, nothing is stored twice, and sessions resume when things fail midway: the app
process is killed, PostgreSQL restarts, requests fail with connection errors or 5xx/429, and two
tabs submit the same trial at the same moment.

Participants are :class:`tests.outbox.OutboxParticipant`, which follow the browser runner's retry
rules. After every scenario, each participant's answers must be in the database exactly once, with
the payload the participant sent, and the session must be complete.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.schema import Participant, Response, Trial
from app.core.security import token_hash
from app.core.settings import Settings
from app.main import create_app
from app.participation.schemas import ResponseIn
from tests.outbox import OutboxParticipant
from tests.processes import LiveServer, PgCluster, PgUnavailable
from tests.study import Study, build_study, prolific

pytestmark = pytest.mark.timeout(180)

# Everyone passes the gate (min_correct 0), so every participant answers every trial.
SPEC = {"gate": {"trials": 2, "min_correct": 0}, "catch": {"trials": 2}, "practice": {"trials": 2}}
CATEGORIES = ["0", "1", "2", "3"]


def any_answer(t: dict[str, Any]) -> str:
    return t.get("answer") or random.choice(CATEGORIES)


def stored_count(study: Study) -> int:
    # A pooled connection that predates a PostgreSQL restart fails once (the pool pings only
    # connections idle for a while); the failure discards the stale pool, so a second try works.
    for attempt in range(2):
        try:
            with study.sessions() as s:
                return s.scalar(sa.select(sa.func.count()).select_from(Response)) or 0
        except sa.exc.OperationalError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def assert_exactly_once(study: Study, people: list[OutboxParticipant]) -> None:
    """Every participant completed; every trial of theirs has exactly one response, the one they sent."""
    with study.sessions() as s:
        dup = s.execute(
            sa.select(Response.participant_id, Response.trial_index).group_by(Response.participant_id, Response.trial_index).having(sa.func.count() > 1)
        ).all()
        assert dup == [], f"duplicated responses: {dup}"
        for person in people:
            assert person.token is not None
            p = s.scalar(sa.select(Participant).where(Participant.token_hash == token_hash(person.token)))
            assert p is not None
            assert p.status == "completed", f"{person.pid} is {p.status}"
            planned = set(s.scalars(sa.select(Trial.index).where(Trial.participant_id == p.id)))
            stored = dict(s.execute(sa.select(Response.trial_index, Response.payload_sha256).where(Response.participant_id == p.id)).all())
            assert set(stored) == planned, f"{person.pid}: missing {sorted(planned - set(stored))}"
            assert set(person.confirmed) == planned
            for index, body in person.confirmed.items():
                assert stored[index] == ResponseIn.model_validate(body).payload_sha256(), f"{person.pid} trial {index}: stored payload differs"
            assert person.refused == []


def run_in_threads(people: list[OutboxParticipant], **kw: Any) -> tuple[list[BaseException], list[threading.Thread]]:
    errors: list[BaseException] = []

    def go(person: OutboxParticipant) -> None:
        try:
            person.run(prolific(person.pid), any_answer, **kw)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(p,), daemon=True) for p in people]
    for t in threads:
        t.start()
    return errors, threads


def wait_until(cond, timeout_s: float = 60.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def check_resume(server_url: str, study: Study, people: list[OutboxParticipant]) -> None:
    """Reopening the study link afterwards gives the same token and the finished state."""
    with httpx.Client(base_url=server_url, timeout=10) as http:
        for person in people:
            again = OutboxParticipant(http, study.slug, person.pid)
            assert again.arrive(prolific(person.pid)) == person.token
            st = again.state()
            assert st["stage"] == "ended" and st["status"] == "completed"
            assert sorted(st["answered"]) == sorted(person.confirmed)


def test_sessions_survive_the_app_being_killed_and_restarted(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, SPEC)
    server = LiveServer(settings, tmp_path / "uvicorn.log", workers=2)
    server.start()
    clients = [httpx.Client(base_url=server.url, timeout=5) for _ in range(6)]
    people = [OutboxParticipant(c, study.slug, f"K{i}", deadline_s=90) for i, c in enumerate(clients)]
    try:
        errors, threads = run_in_threads(people, pause_s=0.03)
        wait_until(lambda: stored_count(study) >= 20, what="answers before the kill")
        server.kill()  # mid-session for everyone; some requests are cut off half-way
        before = stored_count(study)
        time.sleep(0.5)
        server.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        total = stored_count(study)
        assert before < total, "the kill came after everyone had finished"
        assert any(p.faults_seen for p in people), "no participant noticed the kill"
        assert_exactly_once(study, people)
        check_resume(server.url, study, people)
    finally:
        for c in clients:
            c.close()
        server.stop()


@pytest.fixture
def pg_cluster():  # type: ignore[no-untyped-def]
    try:
        cluster = PgCluster()
    except PgUnavailable as exc:
        pytest.skip(f"cannot make a private PostgreSQL cluster to restart: {exc}")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_sessions_survive_a_postgresql_restart(pg_cluster: PgCluster, tmp_path: Path) -> None:
    settings = Settings(
        var_dir=tmp_path / "var",
        database_url=pg_cluster.url,
        media_root=tmp_path / "media",
        secret_key="test-secret-key-not-for-production",
        base_url="http://testserver",
    )
    study = build_study(settings, tmp_path, SPEC)
    server = LiveServer(settings, tmp_path / "uvicorn.log", workers=2)
    server.start()
    clients = [httpx.Client(base_url=server.url, timeout=5) for _ in range(6)]
    people = [OutboxParticipant(c, study.slug, f"R{i}", deadline_s=90) for i, c in enumerate(clients)]
    try:
        errors, threads = run_in_threads(people, pause_s=0.03)
        wait_until(lambda: stored_count(study) >= 20, what="answers before the restart")
        pg_cluster.restart()
        before = stored_count(study)
        for t in threads:
            t.join(120)
        assert not errors, errors
        assert before < stored_count(study), "the restart came after everyone had finished"
        assert_exactly_once(study, people)
        check_resume(server.url, study, people)
    finally:
        for c in clients:
            c.close()
        server.stop()


class FaultyServer:
    """ASGI middleware that fails participant requests at random, as a proxy or an overloaded
    server would: 503 or 429 before the app sees the request, or 503 *after* the app has done
    the work (the answer is lost on the way back, so the client cannot know it was stored)."""

    def __init__(self, app: ASGIApp, rng: random.Random, rate: float) -> None:
        self.app = app
        self.rng = rng
        self.rate = rate
        self.injected: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (scope["path"].startswith("/api/") or scope["path"].startswith("/e/")):
            await self.app(scope, receive, send)
            return
        r = self.rng.random() / self.rate
        if r < 0.3:
            await self._fail(send, 503, "before")
        elif r < 0.5:
            await self._fail(send, 429, "before")
        elif r < 1.0:

            async def swallow(message: Message) -> None:
                pass

            await self.app(scope, receive, swallow)
            await self._fail(send, 503, "after")
        else:
            await self.app(scope, receive, send)

    async def _fail(self, send: Send, status: int, when: str) -> None:
        key = f"{status} {when}"
        self.injected[key] = self.injected.get(key, 0) + 1
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"retry-after", b"0")]})
        await send({"type": "http.response.body", "body": b'{"detail":"injected fault"}'})


class FlakyNetwork(httpx.BaseTransport):
    """Connection errors: refused before the request leaves, or reset after the server answered."""

    def __init__(self, inner: httpx.BaseTransport, rng: random.Random, rate: float) -> None:
        self.inner = inner
        self.rng = rng
        self.rate = rate
        self.lock = threading.Lock()
        self.injected: dict[str, int] = {"refused": 0, "reset after": 0}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            r = self.rng.random() / self.rate
        if r < 0.5:
            self.injected["refused"] += 1
            raise httpx.ConnectError("injected: connection refused", request=request)
        response = self.inner.handle_request(request)
        if r < 1.0:
            response.read()
            self.injected["reset after"] += 1
            raise httpx.ReadError("injected: connection reset", request=request)
        return response


def test_connection_errors_5xx_and_429_are_retried_without_loss_or_duplicates(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, SPEC)
    rng = random.Random(7)
    faulty = FaultyServer(create_app(settings), rng, rate=0.25)
    from fastapi.testclient import TestClient

    network = FlakyNetwork(TestClient(faulty)._transport, rng, rate=0.15)  # type: ignore[attr-defined]
    with httpx.Client(transport=network, base_url="http://testserver") as http:
        people = [OutboxParticipant(http, study.slug, f"F{i}") for i in range(3)]
        for person in people:
            person.run(prolific(person.pid), any_answer)
        # The faults really happened, of every kind, including work done but answer lost.
        assert set(faulty.injected) == {"503 before", "429 before", "503 after"}
        assert min(network.injected.values()) > 0
        assert sum(p.retries for p in people) >= 10
        assert_exactly_once(study, people)
    check_resume_in_process(study, people)


def check_resume_in_process(study: Study, people: list[OutboxParticipant]) -> None:
    for person in people:
        again = OutboxParticipant(study.client, study.slug, person.pid)
        assert again.arrive(prolific(person.pid)) == person.token
        assert again.state()["stage"] == "ended"


def _post_together(url: str, token: str, bodies: list[dict[str, Any]]) -> list[int]:
    """Post ``bodies`` at the same instant from separate connections (tabs); return statuses."""
    barrier = threading.Barrier(len(bodies))
    statuses: list[int] = [0] * len(bodies)

    def go(k: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            http.get("/healthz")  # open the connection first, so the posts leave together
            barrier.wait()
            statuses[k] = http.post("/api/session/responses", json=bodies[k], headers={"Authorization": f"Bearer {token}"}).status_code

    threads = [threading.Thread(target=go, args=(k,)) for k in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return statuses


def test_two_tabs_submitting_the_same_trial_at_once_store_it_once(settings: Settings, tmp_path: Path) -> None:
    study = build_study(settings, tmp_path, SPEC)
    server = LiveServer(settings, tmp_path / "uvicorn.log", workers=2)
    server.start()
    try:
        # Two tabs opening the study link at the same moment get one participant.
        barrier = threading.Barrier(2)
        tokens: list[str] = []

        def arrive() -> None:
            with httpx.Client(base_url=server.url, timeout=10) as http:
                p = OutboxParticipant(http, study.slug, "TWO")
                http.get("/healthz")
                barrier.wait()
                tokens.append(p.arrive(prolific("TWO")))

        threads = [threading.Thread(target=arrive) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(tokens) == 2 and tokens[0] == tokens[1]
        token = tokens[0]
        with study.sessions() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Participant)) == 1
        with httpx.Client(base_url=server.url, timeout=10) as http:
            tab = OutboxParticipant(http, study.slug, "TWO", token=token)
            tab.persistent("POST", "/api/session/consent", {"agree": True})
            tab.persistent("POST", "/api/session/instructions")
            trials = tab.state()["trials"]
        same = {"trial_index": 0, "answer": trials[0].get("answer") or "0", "rt_ms": 512.0}
        # Identical payloads (a retry racing the first try): one 201, the other 200, one row.
        for index in range(0, 4):
            body = {**same, "trial_index": index, "answer": trials[index].get("answer") or "0"}
            assert sorted(_post_together(server.url, token, [body, body, body])) == [200, 200, 201]
        # Different payloads for one trial (two tabs, two answers): the first wins, the other 409.
        for index in range(4, 8):
            a = {"trial_index": index, "answer": "1", "rt_ms": 100.0}
            b = {"trial_index": index, "answer": "2", "rt_ms": 200.0}
            statuses = _post_together(server.url, token, [a, b])
            assert sorted(statuses) == [201, 409], statuses
            winner = a if statuses[0] == 201 else b
            with study.sessions() as s:
                rows = s.execute(sa.select(Response.answer, Response.payload_sha256).where(Response.trial_index == index)).all()
            assert rows == [(winner["answer"], ResponseIn.model_validate(winner).payload_sha256())]
        with study.sessions() as s:
            assert s.scalar(sa.select(sa.func.count()).select_from(Response)) == 8
    finally:
        server.stop()


def test_two_tabs_failing_the_last_gate_trials_at_once_still_end_the_session(settings: Settings, tmp_path: Path) -> None:
    """Each save sees the gate tally from before its own insert; the check that ends a failed
    session runs after the insert committed, so whichever of two simultaneous answers commits
    last counts both."""
    study = build_study(settings, tmp_path, {**SPEC, "gate": {"trials": 2, "min_correct": 1}})
    server = LiveServer(settings, tmp_path / "uvicorn.log", workers=2)
    server.start()
    try:
        for k in range(4):
            with httpx.Client(base_url=server.url, timeout=10) as http:
                tab = OutboxParticipant(http, study.slug, f"G{k}")
                token = tab.arrive(prolific(f"G{k}"))
                tab.persistent("POST", "/api/session/consent", {"agree": True})
                tab.persistent("POST", "/api/session/instructions")
                trials = tab.state()["trials"]
                labels = study.labels(token)
                for t in trials[:2]:
                    assert tab.persistent("POST", "/api/session/responses", {"trial_index": t["index"], "answer": t["answer"]}).status_code == 201
            gate = [t["index"] for t in trials if t["phase"] == "gate"]
            wrong = [{"trial_index": i, "answer": study.wrong(labels[i])} for i in gate]
            assert sorted(_post_together(server.url, token, wrong)) == [201, 201]
            with study.sessions() as s:
                p = s.scalar(sa.select(Participant).where(Participant.platform_pid == f"G{k}"))
                assert (p.status, p.outcome, p.slot) == ("screened_out", "screened_out", None)
    finally:
        server.stop()


def test_a_burst_of_requests_cannot_deadlock_a_small_connection_pool(settings: Settings, tmp_path: Path) -> None:
    """More simultaneous requests than worker threads (40) against a one-connection pool: every
    request must still be answered promptly. A connection held across a thread-pool hop (a sync
    dependency before the endpoint, or the response validation after it) deadlocks this until
    the pool's 30 s timeout turns requests into 500s."""
    if settings.sqlalchemy_url.startswith("sqlite"):
        pytest.skip("the PostgreSQL connection pool is what can deadlock")
    settings = settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0})
    study = build_study(settings, tmp_path, SPEC)
    tokens = [study.join(f"B{i}") for i in range(4)]
    for t in tokens:
        study.start(t)
    server = LiveServer(settings, tmp_path / "uvicorn.log", workers=1)
    server.start()
    try:
        n = 80
        barrier = threading.Barrier(n)
        results: list[int | str] = [0] * n
        paths = ["/api/session", "/api/session/instructions", "/api/session/consent"]

        def go(k: int) -> None:
            with httpx.Client(base_url=server.url, timeout=25) as http:
                http.get("/healthz")
                barrier.wait()
                path = paths[k % 3]
                headers = {"Authorization": f"Bearer {tokens[k % 4]}"}
                try:
                    r = http.get(path, headers=headers) if path == "/api/session" else http.post(path, json={"agree": True} if "consent" in path else None, headers=headers)
                    results[k] = r.status_code
                except httpx.TransportError as exc:
                    results[k] = type(exc).__name__

        started = time.monotonic()
        threads = [threading.Thread(target=go, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [200] * n, sorted(set(map(str, results)))
        assert time.monotonic() - started < 20
    finally:
        server.stop()
