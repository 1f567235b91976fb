"""Stimulus media by content hash: cached forever (immutable), with HTTP range requests for audio.

Every participant fetches every stimulus of their plan once, so under load media requests are as
frequent as saved answers. Files are immutable (named by their sha256), so each process keeps
the small ones in memory (:class:`MediaCache`). A whole-file request for a cached file is answered
by :class:`MediaFastPath`, an ASGI middleware in front of the framework's routing, dependency
solving and middleware stack (most of such a request's CPU when it went through them); every
other media request (first read, range requests, large files, 404) goes to the route below, and
range requests and large files through Starlette's ``FileResponse``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from threading import Lock

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.media_store import MediaStore
from app.core.runtime import Runtime, runtime
from synthesis.media import MIME_TYPES

router = APIRouter(tags=["media"])
NAME = re.compile(r"^([0-9a-f]{64})(\.png|\.wav)$")
CACHE_CONTROL = "public, max-age=31536000, immutable"


def cache_headers(sha: str) -> dict[str, str]:
    """Headers of every answer for an (immutable, content-addressed) stimulus file."""
    return {"Cache-Control": CACHE_CONTROL, "ETag": f'"{sha}"', "Accept-Ranges": "bytes"}


class MediaCache:
    """Least-recently-used file contents, at most ``max_bytes`` in all and ``max_file`` each (bytes)."""

    def __init__(self, max_bytes: int = 64 * 1024**2, max_file: int = 1024**2) -> None:
        self.max_bytes = max_bytes
        self.max_file = max_file
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_file:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._size -= len(old)


_cache = MediaCache()


def _read_small(path: Path, limit: int) -> bytes | None:
    """The file's bytes if it exists and is at most ``limit`` bytes; None if missing; b"" if large."""
    try:
        if path.stat().st_size > limit:
            return b""
        return path.read_bytes()
    except FileNotFoundError:
        return None


class MediaFastPath:
    """Answer ``GET /media/<sha256><ext>`` from the memory cache, with the same headers as
    the route (immutable caching, ETag, range support, the security headers) and ``304`` for a
    matching ``If-None-Match``; pass everything else on. ``media_dir`` is the store's root, to
    check that a cached file has not since been deleted (a stat: microseconds)."""

    def __init__(self, app: ASGIApp, media_dir: Path, security_headers: dict[str, str]) -> None:
        self.app = app
        self.store = MediaStore(media_dir)
        self.extra = [(k.lower().encode(), v.encode()) for k, v in security_headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/media/") and scope["method"] == "GET":
            name = scope["path"][7:]
            data = _cache.get(name)
            if data is not None:
                req = dict(scope["headers"])
                m = NAME.match(name)
                if m and b"range" not in req and self.store.path_for(m.group(1), m.group(2)).is_file():
                    await self._answer(send, m.group(1), m.group(2), data, req.get(b"if-none-match"))
                    return
        await self.app(scope, receive, send)

    async def _answer(self, send: Send, sha: str, ext: str, data: bytes, if_none_match: bytes | None) -> None:
        headers = [(k.lower().encode(), v.encode()) for k, v in cache_headers(sha).items()] + self.extra
        if if_none_match == f'"{sha}"'.encode():
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers += [(b"content-type", MIME_TYPES[ext].encode()), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})


@router.get("/media/{name}", summary="A stimulus file by sha256")
async def media(name: str, request: Request, rt: Runtime = Depends(runtime)) -> Response:
    m = NAME.match(name)
    if not m:
        raise HTTPException(status_code=404, detail="no such media")
    sha, ext = m.group(1), m.group(2)
    path = rt.store.path_for(sha, ext)
    headers = cache_headers(sha)
    etag = headers["ETag"]
    if "range" not in request.headers:
        # Cached files are answered by MediaFastPath before this route; here the file is read
        # (and, when small, cached for the next request).
        data = await run_in_threadpool(_read_small, path, _cache.max_file)
        if data is None:
            raise HTTPException(status_code=404, detail="no such media")
        if data:
            _cache.put(name, data)
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304, headers=headers)
            return Response(content=data, media_type=MIME_TYPES[ext], headers=headers)
    if not await run_in_threadpool(path.is_file):
        raise HTTPException(status_code=404, detail="no such media")
    return FileResponse(path, media_type=MIME_TYPES[ext], headers={"Cache-Control": CACHE_CONTROL, "ETag": etag})
