"""The FastAPI application factory.

Processes are stateless: everything a request needs is in the database or the media store, so
any number of uvicorn workers (on any number of machines) can serve the same study.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import check_migrated, libpq_url, make_engine, make_sessionmaker
from app.deps import Runtime
from app.responses import SaveDb
from app.save_async import AsyncSaves
from app.security import SECURITY_HEADERS
from app.settings import Settings, get_settings
from app.store import MediaStore
from app.templating import STATIC_DIR

log = logging.getLogger("metamers")


class BodyLimit:
    """Reject request bodies over ``limit`` bytes with 413, before they are buffered.

    Applies to the JSON API; uploads (admin) have their own, larger, streamed limit.
    """

    def __init__(self, app: ASGIApp, limit: int, prefix: str = "/api/") -> None:
        self.app = app
        self.limit = limit
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    await self._reject(send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = b'{"detail":"request body too large"}'
        await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                present = {k for k, _ in msg.get("headers", [])}
                msg["headers"] = list(msg.get("headers", [])) + [h for h in self.headers if h[0] not in present]
            await send(msg)

        await self.app(scope, receive, with_headers)


_ERROR_BODY = {
    "type": "object",
    "properties": {"detail": {"type": "string"}, "errors": {"type": "array", "items": {"type": "string"}}},
    "required": ["detail"],
}


def _document_app_wide_errors(app: FastAPI) -> None:
    """Make the OpenAPI schema say what the app really answers (found by schemathesis):

    * 422 bodies come from the handler above (``detail`` is a sentence, ``errors`` a list of
      strings), not FastAPI's default shape;
    * every JSON API operation with a body can also answer 400 (the body is not JSON at all,
      e.g. not UTF-8) and 413 (:class:`BodyLimit`).
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemas = schema.get("components", {}).get("schemas", {})
            if "HTTPValidationError" in schemas:
                schemas["HTTPValidationError"] = {**_ERROR_BODY, "title": "HTTPValidationError"}
            for path, ops in schema.get("paths", {}).items():
                for op in ops.values():
                    if path.startswith("/api/") and "requestBody" in op:
                        for code, why in (("400", "the body is not valid JSON"), ("413", "the body is too large")):
                            op["responses"].setdefault(code, {"description": why, "content": {"application/json": {"schema": _ERROR_BODY}}})
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, *, check_schema: bool = True) -> FastAPI:
    settings = settings or get_settings()
    engine = make_engine(settings)
    if check_schema:
        check_migrated(engine)  # NotMigratedError with a clear message
    sessions = make_sessionmaker(engine)
    async_saves = None
    if engine.dialect.name == "postgresql":
        async_saves = AsyncSaves(libpq_url(engine), sessions, max_size=settings.db_pool_size)
    rt = Runtime(
        settings=settings,
        sessions=sessions,
        store=MediaStore(settings.media_dir),
        secret_key=settings.resolved_secret_key(),
        saves=SaveDb.of(sessions),
        async_saves=async_saves,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        if async_saves is not None:
            await async_saves.open()
        try:
            yield
        finally:
            if async_saves is not None:
                await async_saves.close()
            engine.dispose()

    app = FastAPI(
        title="Metamer Lab",
        version="0.1.0",
        description="Participant JSON API of Metamer Lab (the admin panel is HTML under /admin).",
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.state.engine = engine

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            problems.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems) or "invalid request", "errors": problems})

    from app.routes import admin, api, media, participant

    app.include_router(participant.router)
    app.include_router(api.router)
    from app.routes.headphone import router as headphone_router

    app.include_router(headphone_router)
    app.include_router(media.router)
    app.include_router(admin.router)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, Any]:
        import sqlalchemy as sa

        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return {"ok": True}

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    _document_app_wide_errors(app)
    app.add_middleware(BodyLimit, limit=settings.max_api_body_bytes)
    app.add_middleware(SecurityHeaders)
    # Outermost: cached media are answered before the stack above and routing (see app.routes.media).
    app.add_middleware(media.MediaFastPath, media_dir=settings.media_dir, security_headers=SECURITY_HEADERS)
    return app

