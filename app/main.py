"""The FastAPI application factory: builds the per-process :class:`~app.core.runtime.Runtime` and
wires every package's routers and middleware.

Processes are stateless: everything a request needs is in the database or the media store, so
any number of uvicorn workers (on any number of machines) can serve the same study.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles

from app.admin import panel
from app.core.db import AsyncPool, SaveDb, check_migrated, libpq_url, make_engine, make_sessionmaker
from app.core.http import BodyLimit, SecurityHeaders, document_app_wide_errors, validation_error
from app.core.media_store import MediaStore
from app.core.runtime import Runtime
from app.core.security import SECURITY_HEADERS
from app.core.settings import Settings, get_settings
from app.core.templating import STATIC_DIR
from app.participation import api, headphone_api, pages
from app.stimuli import media

log = logging.getLogger("metamers")


def create_app(settings: Settings | None = None, *, check_schema: bool = True) -> FastAPI:
    settings = settings or get_settings()
    engine = make_engine(settings)
    if check_schema:
        check_migrated(engine)  # NotMigratedError with a clear message
    sessions = make_sessionmaker(engine)
    async_pool = None
    if engine.dialect.name == "postgresql":
        async_pool = AsyncPool(libpq_url(engine), max_size=settings.db_pool_size)
    rt = Runtime(
        settings=settings,
        sessions=sessions,
        store=MediaStore(settings.media_dir),
        secret_key=settings.resolved_secret_key(),
        saves=SaveDb.of(sessions),
        async_pool=async_pool,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        if async_pool is not None:
            await async_pool.open()
        try:
            yield
        finally:
            if async_pool is not None:
                await async_pool.close()
            engine.dispose()

    app = FastAPI(
        title="Metamer Lab",
        version="0.1.0",
        description="Participant JSON API of Metamer Lab (the admin panel is HTML under /admin).",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.state.engine = engine

    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]

    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(headphone_api.router)
    app.include_router(media.router)
    app.include_router(panel.router)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, Any]:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return {"ok": True}

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    document_app_wide_errors(app)
    app.add_middleware(BodyLimit, limit=settings.max_api_body_bytes)
    app.add_middleware(SecurityHeaders)
    # Outermost: cached media are answered before the stack above and routing (see app.stimuli.media).
    app.add_middleware(media.MediaFastPath, media_dir=settings.media_dir, security_headers=SECURITY_HEADERS)
    return app
