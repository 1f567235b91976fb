"""`make run` sets up the committed demo: banks imported once, experiments active, an admin."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.core.db import make_engine, make_sessionmaker
from app.core.schema import AdminUser, Experiment, StimulusSet
from app.core.settings import Settings
from app.demo import DEMO_DIR, setup_demo
from app.main import create_app


def test_demo_setup_is_idempotent_and_serves_the_demo_experiments(settings: Settings) -> None:
    first = setup_demo(settings)
    second = setup_demo(settings)
    banks = sorted(p.parent.name for p in (DEMO_DIR / "banks").glob("*/manifest.json"))
    assert banks, "the demo banks are committed under demo/banks"
    assert sum("password:" in line for line in first) == 1, "the admin password is printed once"
    assert not any("password:" in line for line in second)
    engine = make_engine(settings)
    with make_sessionmaker(engine)() as s:
        assert sorted(s.scalars(sa.select(StimulusSet.name))) == banks
        exps = s.scalars(sa.select(Experiment)).all()
        assert exps and all(e.status == "active" for e in exps)
        assert s.scalar(sa.select(sa.func.count()).select_from(AdminUser)) == 1
    engine.dispose()
    client = TestClient(create_app(settings))
    for exp in exps:
        r = client.get(f"/e/{exp.slug}", follow_redirects=False)
        assert r.status_code == 303
        token = r.headers["location"].split("#t=")[1]
        state = client.get("/api/session", headers={"Authorization": f"Bearer {token}"}).json()
        assert state["stage"] == "consent" and len(state["trials"]) > 20
        media = client.get(state["trials"][0]["media"])
        assert media.status_code == 200 and len(media.content) > 100


def test_every_demo_experiment_file_is_valid() -> None:
    from app.experiments.spec import load_spec_file

    files = list((DEMO_DIR / "experiments").glob("*.yaml"))
    assert files
    for f in files:
        load_spec_file(f)
    assert Path(DEMO_DIR / "banks").is_dir()
