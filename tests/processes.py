"""Real processes for fault tests: the app under uvicorn, and a throwaway PostgreSQL cluster.

``LiveServer`` runs ``uvicorn app.asgi:app`` with the test's settings in its environment (as a
deployment would) and can be SIGKILLed and started again on the same port. ``PgCluster`` makes a
private cluster with ``initdb`` under a temporary directory, owned by the ``postgres`` user when
the tests run as root (``initdb`` refuses to run as root), so it can be restarted without
touching the shared server on port 5432.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from app.core.settings import Settings
from benchmarks.load.stack import die_with_parent, free_port  # the same process hygiene

REPO = Path(__file__).resolve().parent.parent



class LiveServer:
    """``uvicorn app.asgi:app --workers N`` on a fixed port, killable and restartable."""

    def __init__(self, settings: Settings, log: Path, *, workers: int = 1) -> None:
        self.settings = settings
        self.workers = workers
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            **os.environ,
            "DATABASE_URL": s.database_url,
            "MEDIA_ROOT": str(s.media_dir),
            "VAR_DIR": str(s.var_dir),
            "SECRET_KEY": s.secret_key,
            "BASE_URL": s.base_url,
            "PARTICIPANT_RATE_LIMIT": str(s.participant_rate_limit),
            # Small pools: CI's PostgreSQL is shared by the whole suite (max_connections 100).
            "DB_POOL_SIZE": str(min(s.db_pool_size, 4)),
            "DB_MAX_OVERFLOW": str(min(s.db_max_overflow, 4)),
        }

    def start(self, timeout_s: float = 60.0) -> None:
        cmd = [
            sys.executable, "-m", "uvicorn", "app.asgi:app", "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"uvicorn did not come up in {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server and its workers at once: requests in flight are cut off mid-way."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def find_pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PgUnavailable(RuntimeError):
    """No way to make a private cluster here (no server binaries, or root without a postgres user)."""


class PgCluster:
    """A private PostgreSQL cluster (trust auth on 127.0.0.1) in a temporary directory."""

    def __init__(self) -> None:
        initdb, pg_ctl = find_pg_bin("initdb"), find_pg_bin("pg_ctl")
        if not initdb or not pg_ctl:
            raise PgUnavailable("initdb/pg_ctl not found (install the postgresql server package)")
        if os.geteuid() == 0 and (not shutil.which("runuser") or not _user_exists("postgres")):
            raise PgUnavailable("running as root, and initdb refuses root: need runuser and a postgres user")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="metamers-pg-"))
        self.data = self.dir / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            # initdb must not run as root: hand the directory to the postgres user.
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run([self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])

    def _run(self, cmd: list[str], timeout: float = 60) -> None:
        subprocess.run(self.as_user + cmd, check=True, capture_output=True, timeout=timeout)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, action: str, *extra: str) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-t", "60", "-o", opts, action, *extra])

    def start(self) -> None:
        self._pg_ctl("start")

    def restart(self) -> None:
        """Fast restart: every connection is cut, open transactions are rolled back."""
        self._pg_ctl("restart", "-m", "fast")

    def stop(self) -> None:
        try:
            self._pg_ctl("stop", "-m", "immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
