"""HTTP plumbing every router shares: the API body limit, security headers, the 422 error body and
the OpenAPI description of errors that the app answers outside any one route."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.security import SECURITY_HEADERS


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with every problem as a sentence (``detail``) and as a list (``errors``)."""
    problems = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        problems.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return JSONResponse(status_code=422, content={"detail": "; ".join(problems) or "invalid request", "errors": problems})


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


def document_app_wide_errors(app: FastAPI) -> None:
    """Make the OpenAPI schema say what the app really answers (found by schemathesis):

    * 422 bodies come from :func:`validation_error` (``detail`` is a sentence, ``errors`` a list of
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
