"""A small real study for HTTP-level tests: an imported bank, an experiment, and a TestClient
(httpx) against the real app. Participants are driven through the same JSON API the runner uses."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from app.core.db import make_engine, make_sessionmaker
from app.core.media_store import MediaStore
from app.core.settings import Settings
from app.experiments.service import create_experiment
from app.experiments.spec import parse_spec
from app.main import create_app
from app.stimuli.importer import import_bank
from tests.factories import make_bank

BASE_SPEC: dict[str, Any] = {
    "slug": "test-study",
    "title": "Test study",
    "stimulus_sets": ["bank"],
    "conditions": ["natural", "tiny/conv1", "tiny/conv2", "tiny/fc"],
    "practice": {"trials": 2},
    "gate": {"trials": 2, "min_correct": 1},
    "catch": {"trials": 2},
    "breaks": 1,
    "platform": "prolific",
    "completion_codes": {"completed": "DONE123", "screened_out": "SCREEN9", "failed_attention": "ATTN4"},
}


def prolific(pid: str, session: str | None = None) -> dict[str, str]:
    return {"PROLIFIC_PID": pid, "STUDY_ID": "study1", "SESSION_ID": session or f"sess-{pid}"}


@dataclass
class Study:
    settings: Settings
    client: TestClient
    slug: str
    sessions: Any
    spec: dict[str, Any] = field(default_factory=dict)

    def enter(self, params: dict[str, str] | None = None, **kw: Any):  # type: ignore[no-untyped-def]
        return self.client.get(f"/e/{self.slug}", params=params or {}, follow_redirects=False, **kw)

    def join(self, pid: str, session: str | None = None) -> str:
        """Arrive from Prolific and return the participant token."""
        r = self.enter(prolific(pid, session))
        assert r.status_code == 303, r.text
        m = re.search(r"#t=([A-Za-z0-9_-]+)$", r.headers["location"])
        assert m, r.headers["location"]
        return m.group(1)

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def state(self, token: str) -> dict[str, Any]:
        r = self.client.get("/api/session", headers=self.auth(token))
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, token: str, path: str, body: Any = None):  # type: ignore[no-untyped-def]
        return self.client.post(path, json=body, headers=self.auth(token))

    def answer(self, token: str, index: int, answer: str, **extra: Any):  # type: ignore[no-untyped-def]
        body = {"trial_index": index, "answer": answer, "rt_ms": 500.0, "durations": {"stimulus_ms": 300.0}, **extra}
        return self.post(token, "/api/session/responses", body)

    def start(self, token: str) -> dict[str, Any]:
        assert self.post(token, "/api/session/consent", {"agree": True, "browser": {"frame_ms": 16.7}}).status_code == 200
        assert self.post(token, "/api/session/instructions").status_code == 200
        return self.state(token)

    def labels(self, token: str) -> dict[int, str]:
        """The true label of each of this participant's trials (read from the database)."""
        import sqlalchemy as sa

        from app.core.schema import Participant, Trial
        from app.core.security import token_hash

        with self.sessions() as s:
            pid = s.scalar(sa.select(Participant.id).where(Participant.token_hash == token_hash(token)))
            return dict(s.execute(sa.select(Trial.index, Trial.label).where(Trial.participant_id == pid)).all())

    def wrong(self, label: str) -> str:
        cats = [c["id"] for c in self.categories]
        return next(c for c in cats if c != label)

    @property
    def categories(self) -> list[dict[str, Any]]:
        import sqlalchemy as sa

        from app.core.schema import StimulusSet

        with self.sessions() as s:
            return s.scalar(sa.select(StimulusSet.manifest)).get("categories")

    def run_all(self, token: str, *, correct: bool = True, upto: int | None = None) -> list[int]:
        """Answer every trial in order (all correct, or all wrong); returns the indices answered."""
        st = self.start(token)
        labels = self.labels(token)
        done = []
        for t in st["trials"]:
            if upto is not None and t["index"] >= upto:
                break
            if t["index"] in st["answered"]:
                continue
            ans = labels[t["index"]] if correct else self.wrong(labels[t["index"]])
            r = self.answer(token, t["index"], ans)
            assert r.status_code in (200, 201), r.text
            done.append(t["index"])
            if r.json()["stage"] == "ended":
                break
        return done


# Test clients whose app is running (lifespan entered); conftest stops them after each test.
STARTED: list[TestClient] = []


def started_client(app: Any) -> TestClient:
    """A TestClient with the app's lifespan running, as under uvicorn: one event loop for all its
    requests, so the PostgreSQL save path runs on the app's async pool, as in production."""
    client = TestClient(app)
    client.__enter__()
    STARTED.append(client)
    return client


def build_study(settings: Settings, tmp_path: Path, spec: dict[str, Any] | None = None, *, bank_kwargs: dict[str, Any] | None = None, status: str = "active") -> Study:
    from app.core.db import upgrade

    upgrade(settings.sqlalchemy_url)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    bank = make_bank(tmp_path / "bankdir", **(bank_kwargs or {}))
    import_bank(sessions, MediaStore(settings.media_dir), bank, "bank")
    full = {**BASE_SPEC, **(spec or {})}
    with sessions() as s:
        create_experiment(s, parse_spec(full), status=status)
        s.commit()
    app = create_app(settings)
    client = started_client(app)
    return Study(settings=settings, client=client, slug=full["slug"], sessions=sessions, spec=full)
