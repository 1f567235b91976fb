"""The system under test: a throwaway PostgreSQL database, a bank and an experiment in it, and a
real multi-worker uvicorn serving the app (settings through the environment, as in production)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]
SECRET_KEY = "load-benchmark-secret-key"
SLUG = "load-study"


def _psycopg(url: str) -> sa.engine.URL:
    u = sa.make_url(url)
    return u.set(drivername="postgresql+psycopg") if u.drivername in ("postgresql", "postgres") else u


@contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """Create an empty database next to ``admin_url``'s, migrate it, yield its URL, drop it."""
    name = f"metamers_load_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(_psycopg(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = _psycopg(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        from app.core.db import upgrade

        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def study_spec(n_conditions: int) -> dict[str, Any]:
    layers = ["conv1", "conv2", "conv3", "fc"][: n_conditions - 1]
    return {
        "slug": SLUG,
        "title": "Load benchmark",
        "stimulus_sets": ["bank"],
        "conditions": ["natural"] + [f"tiny/{x}" for x in layers],
        "practice": {"trials": 4, "feedback": True},
        # Everyone passes (min_correct 0), but the gate is still checked on every main save.
        "gate": {"trials": 4, "min_correct": 0},
        "catch": {"trials": 4},
        "breaks": 2,
        "platform": "prolific",
        "completion_codes": {"completed": "LOADOK", "screened_out": "LOADSO", "failed_attention": "LOADFA"},
        "abandon_after_minutes": 60,
    }


def prepare_study(url: str, media_root: Path, work: Path, *, sources: int = 60, conditions: int = 4) -> str:
    """Import a bank of ``sources`` natural images with metamers and create an active experiment.

    Every participant then has 4 practice + 4 gate + ``sources`` main + 4 catch trials.
    """
    from app.core.db import make_engine, make_sessionmaker
    from app.core.media_store import MediaStore
    from app.core.settings import Settings
    from app.experiments.service import create_experiment
    from app.experiments.spec import parse_spec
    from app.stimuli.importer import import_bank
    from tests.factories import DIGITS, make_bank

    if sources % 10:
        raise ValueError("sources must be a multiple of 10 (ten digit categories)")
    settings = Settings(database_url=url, media_root=media_root, var_dir=work / "var", secret_key=SECRET_KEY)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    layers = ("conv1", "conv2", "conv3", "fc")[: conditions - 1]
    bank = make_bank(work / "bank", labels=DIGITS, sources_per_label=sources // 10, layers=layers, name="load-bank")
    import_bank(sessions, MediaStore(settings.media_dir), bank, "bank")
    with sessions() as s:
        create_experiment(s, parse_spec(study_spec(conditions)), status="active")
        s.commit()
    engine.dispose()
    return SLUG



def die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux), so a killed test or
    benchmark run does not leave a server running in its own session."""
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(url: str, media_root: Path, work: Path, *, pool_size: int, max_overflow: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "MEDIA_ROOT": str(media_root),
        "VAR_DIR": str(work / "var"),
        "SECRET_KEY": SECRET_KEY,
        "BASE_URL": "http://127.0.0.1",
        # Every simulated participant comes from 127.0.0.1; a real study's come from many addresses.
        "PARTICIPANT_RATE_LIMIT": "0",
        "DB_POOL_SIZE": str(pool_size),
        "DB_MAX_OVERFLOW": str(max_overflow),
    }


@dataclass
class Server:
    port: int
    pid: int  # the uvicorn supervisor; the workers are its children


@contextmanager
def uvicorn_server(app: str, *, workers: int, env: dict[str, str], log: Path, extra: list[str] | None = None) -> Iterator[Server]:
    """Run ``uvicorn app --workers N`` on a free port; yield it once it answers."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", app,
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
        "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
        # Browsers keep connections open between requests; so does a reverse proxy upstream.
        "--timeout-keep-alive", "30",
        "--backlog", "4096",
        *(extra or []),
    ]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    try:
        _wait_listening(port, proc, log)
        yield Server(port, proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"uvicorn did not answer within {timeout_s:.0f} s; see {log}")
