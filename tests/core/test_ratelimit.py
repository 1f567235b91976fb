"""Rate limits live in the database, so every app process shares them; participant creation is
limited per client address, and resuming is never limited."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.core import ratelimit
from app.core.db import make_engine, make_sessionmaker
from app.core.schema import Participant, RateLimit
from app.core.settings import Settings
from app.main import create_app
from tests.study import build_study, prolific

T0 = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def sessions(settings: Settings):  # type: ignore[no-untyped-def]
    engine = make_engine(settings)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_hits_within_the_limit_pass_and_the_next_is_refused(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as s:
        results = [ratelimit.hit(s, "k", limit=3, window_s=60, now=T0) for _ in range(4)]
        s.commit()
    assert results == [True, True, True, False]


def test_a_new_window_starts_counting_again(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as s:
        for _ in range(3):
            ratelimit.hit(s, "k", limit=3, window_s=60, now=T0)
        assert not ratelimit.hit(s, "k", limit=3, window_s=60, now=T0 + dt.timedelta(seconds=59))
        assert ratelimit.hit(s, "k", limit=3, window_s=60, now=T0 + dt.timedelta(seconds=60))
        assert ratelimit.peek(s, "k", 60, now=T0 + dt.timedelta(seconds=61)) == 1


def test_keys_are_counted_separately_and_zero_disables(sessions) -> None:  # type: ignore[no-untyped-def]
    with sessions() as s:
        assert ratelimit.hit(s, "a", limit=1, window_s=60, now=T0)
        assert ratelimit.hit(s, "b", limit=1, window_s=60, now=T0)
        assert not ratelimit.hit(s, "a", limit=1, window_s=60, now=T0)
        assert all(ratelimit.hit(s, "c", limit=0, window_s=60, now=T0) for _ in range(10))
        assert s.get(RateLimit, "c") is None


def test_overlong_keys_are_hashed_to_fit(sessions) -> None:  # type: ignore[no-untyped-def]
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    with sessions() as s:
        assert ratelimit.hit(s, long_a, limit=1, window_s=60, now=T0)
        assert ratelimit.hit(s, long_b, limit=1, window_s=60, now=T0)
        s.commit()
        assert all(len(k) <= 200 for k in s.scalars(sa.select(RateLimit.key)))


def test_old_counters_are_cleaned_up(sessions, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # No occasional clean-up inside hit() (1 % of hits): it would delete "old" first.
    monkeypatch.setattr(ratelimit, "CLEANUP_PROBABILITY", 0.0)
    with sessions() as s:
        ratelimit.hit(s, "old", limit=5, window_s=60, now=T0)
        ratelimit.hit(s, "new", limit=5, window_s=60, now=T0 + dt.timedelta(days=2))
        assert ratelimit.cleanup(s, now=T0 + dt.timedelta(days=2)) == 1
        assert {k for k in s.scalars(sa.select(RateLimit.key))} == {"new"}


def test_concurrent_hits_from_many_connections_are_all_counted(sessions) -> None:  # type: ignore[no-untyped-def]
    """The counter is one atomic upsert: 8 threads x 10 hits must count exactly 80."""
    barrier = threading.Barrier(8)
    now = ratelimit.utcnow()

    def worker() -> None:
        barrier.wait()
        for _ in range(10):
            with sessions() as s:
                ratelimit.hit(s, "shared", limit=1000, window_s=3600, now=now)
                s.commit()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with sessions() as s:
        assert ratelimit.peek(s, "shared", 3600, now=now) == 80


def test_participant_creation_is_limited_per_address_but_resuming_is_not(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"participant_rate_limit": 3})
    study = build_study(settings, tmp_path)
    tokens = [study.join(f"P{i}") for i in range(3)]
    r = study.enter(prolific("P3"))
    assert r.status_code == 429
    assert "Too many new sessions" in r.text
    assert 0 < int(r.headers["Retry-After"]) <= settings.participant_rate_window_s
    # The three who got in can reopen their link as often as they like.
    for i in range(3):
        for _ in range(3):
            assert study.join(f"P{i}") == tokens[i]
    with study.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Participant)) == 3


def test_the_limit_is_shared_by_separate_app_processes(settings: Settings, tmp_path: Path) -> None:
    """Two app instances (as two uvicorn workers would be) count against the same limit."""
    settings = settings.model_copy(update={"participant_rate_limit": 2})
    study = build_study(settings, tmp_path)
    other = TestClient(create_app(settings))
    assert study.enter(prolific("A")).status_code == 303
    assert other.get(f"/e/{study.slug}", params=prolific("B"), follow_redirects=False).status_code == 303
    assert other.get(f"/e/{study.slug}", params=prolific("C"), follow_redirects=False).status_code == 429
    assert study.enter(prolific("D")).status_code == 429
