"""`make run`: the demo on embedded defaults (SQLite and media under ./var, a local uvicorn).

Idempotent: migrates, imports each committed demo bank under ``demo/banks/`` once, creates and
activates each demo experiment under ``demo/experiments/`` once, creates a demo admin with a random
password (printed once, at creation), prints the links, and serves.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from app.core.settings import get_settings

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"


def setup_demo(settings=None, demo_dir: Path = DEMO_DIR) -> list[str]:  # type: ignore[no-untyped-def]
    """Prepare the demo database; return the lines to print."""
    from app.admin.auth import create_admin, random_password
    from app.core.db import make_engine, make_sessionmaker, upgrade
    from app.core.media_store import MediaStore
    from app.core.schema import AdminUser, Experiment, StimulusSet
    from app.experiments.service import create_experiment
    from app.experiments.spec import load_spec_file
    from app.stimuli.importer import import_bank

    settings = settings or get_settings()
    upgrade(settings.sqlalchemy_url)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    store = MediaStore(settings.media_dir)
    lines: list[str] = []
    for bank in sorted(p.parent for p in (demo_dir / "banks").glob("*/manifest.json")):
        with sessions() as s:
            exists = s.scalar(sa.select(StimulusSet.id).where(StimulusSet.name == bank.name)) is not None
        if not exists:
            import_bank(sessions, store, bank, bank.name, imported_by="demo")
            lines.append(f"imported demo bank {bank.name}")
    with sessions() as s:
        for path in sorted((demo_dir / "experiments").glob("*.yaml")):
            spec = load_spec_file(path)
            exp = s.scalar(sa.select(Experiment).where(Experiment.slug == spec.slug))
            if exp is None:
                missing = [n for n in spec.stimulus_sets if s.scalar(sa.select(StimulusSet.id).where(StimulusSet.name == n)) is None]
                if missing:
                    lines.append(f"skipped demo experiment {spec.slug}: bank(s) {', '.join(missing)} not found")
                    continue
                exp = create_experiment(s, spec, status="active")
                s.commit()
            lines.append(f"participant link ({exp.title}): {settings.base_url}/e/{exp.slug}")
        if s.scalar(sa.select(sa.func.count()).select_from(AdminUser)) == 0:
            password = random_password()
            create_admin(s, "admin", password)
            s.commit()
            lines.append(f"admin panel: {settings.base_url}/admin  user: admin  password: {password}  (shown once; keep it)")
        else:
            lines.append(f"admin panel: {settings.base_url}/admin  (admin user exists; `metamers admin password USER` resets a password)")
    engine.dispose()
    return lines


def run_demo(host: str = "127.0.0.1", port: int = 8000, serve: bool = True) -> int:
    import uvicorn

    from app.main import create_app

    settings = get_settings()
    if settings.base_url == "http://127.0.0.1:8000" and (host, port) != ("127.0.0.1", 8000):
        settings = settings.model_copy(update={"base_url": f"http://{host}:{port}"})
    lines = setup_demo(settings)
    print("\n" + "=" * 78)
    print(f"Metamer Lab demo (database {settings.sqlalchemy_url.split('://', 1)[0]}, files under {settings.var_dir}/)")
    for line in lines:
        print("  " + line)
    print("=" * 78 + "\n", flush=True)
    if serve:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    return 0
