"""Application settings, read from the environment (or a ``.env`` file) with pydantic-settings.

Every setting has an embedded default that works on a laptop: SQLite and media under ``./var``.
``SECRET_KEY`` has no hard-coded default: when unset, a random key is generated once and kept in
``VAR_DIR/secret_key`` (mode 0600), so participant links and admin sessions survive restarts.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    var_dir: Path = Field(default=Path("var"), description="Where embedded state lives (SQLite file, media, secret key).")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite at VAR_DIR/metamers.db.")
    media_root: Path | None = Field(default=None, description="Content-addressed media store; default VAR_DIR/media.")
    secret_key: str = Field(default="", description="Signs participant tokens and admin sessions; generated when empty.")
    base_url: str = Field(default="http://127.0.0.1:8000", description="Public URL of this server, used in study links.")
    # Participant requests are small JSON; anything larger is a mistake or an attack.
    max_api_body_bytes: int = 64 * 1024
    # Bank uploads through the admin panel are streamed to disk up to this size.
    max_upload_bytes: int = 2 * 1024**3
    # HTTPS deployments set this so cookies get the Secure flag.
    secure_cookies: bool = False
    db_pool_size: int = 10
    # Threads per process for synchronous endpoints (anyio's default is 40). Fewer threads contend
    # less for the GIL; more than the pool's connections would only wait for one.
    worker_threads: int = Field(default=12, ge=1, le=200)
    db_max_overflow: int = 20
    # New participants per client IP per window (0 = no limit). Generous: a lab, a school or a
    # campus NAT can put many real participants behind one address. Resuming is never limited.
    participant_rate_limit: int = 300
    participant_rate_window_s: int = 3600

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept the common `postgres://` / `postgresql://` forms and use psycopg 3.
            if url.startswith("postgres://"):
                url = "postgresql://" + url[len("postgres://") :]
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
            return url
        return f"sqlite:///{(self.var_dir / 'metamers.db').resolve()}"

    @property
    def media_dir(self) -> Path:
        return (self.media_root or self.var_dir / "media").resolve()

    def resolved_secret_key(self) -> str:
        """The secret key: from the environment, else from VAR_DIR/secret_key, else a new persisted one."""
        if self.secret_key:
            return self.secret_key
        path = self.var_dir / "secret_key"
        if path.exists():
            key = path.read_text().strip()
            if key:
                return key
        self.var_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        # Write the whole key to a private temp file, then hard-link it into place: the link is
        # atomic and fails if another process got there first, whose key we then use.
        tmp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            key = path.read_text().strip()
        finally:
            tmp.unlink(missing_ok=True)
        return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
