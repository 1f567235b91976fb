"""Settings: embedded defaults, URL normalization, and a secret key that is never hard-coded."""

from __future__ import annotations

import stat
from pathlib import Path

from app.core.settings import Settings


def test_embedded_default_is_sqlite_under_var(tmp_path: Path) -> None:
    s = Settings(var_dir=tmp_path / "var", database_url="", secret_key="")
    assert s.sqlalchemy_url == f"sqlite:///{(tmp_path / 'var' / 'metamers.db').resolve()}"
    assert s.media_dir == (tmp_path / "var" / "media").resolve()


def test_postgres_urls_use_psycopg3() -> None:
    assert Settings(database_url="postgres://u@h/db").sqlalchemy_url == "postgresql+psycopg://u@h/db"
    assert Settings(database_url="postgresql://u@h/db").sqlalchemy_url == "postgresql+psycopg://u@h/db"


def test_secret_key_is_generated_once_persisted_and_private(tmp_path: Path) -> None:
    a = Settings(var_dir=tmp_path, secret_key="").resolved_secret_key()
    b = Settings(var_dir=tmp_path, secret_key="").resolved_secret_key()
    assert a == b and len(a) >= 48
    key_file = tmp_path / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [key_file], "no temp files left behind"
    other = Settings(var_dir=tmp_path / "elsewhere", secret_key="").resolved_secret_key()
    assert other != a


def test_explicit_secret_key_wins(tmp_path: Path) -> None:
    assert Settings(var_dir=tmp_path, secret_key="from-env").resolved_secret_key() == "from-env"
    assert not (tmp_path / "secret_key").exists()


def test_the_deployment_entry_point_freezes_its_startup_heap(settings: Settings) -> None:
    """``uvicorn app.asgi:app`` workers keep the ~150,000 startup objects out of the cyclic
    collector's full scans (each scan paused a worker ~100 ms under load)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": settings.database_url, "VAR_DIR": str(settings.var_dir), "SECRET_KEY": "x" * 48}
    code = "import gc, app.asgi; print(gc.get_freeze_count())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) > 50_000
