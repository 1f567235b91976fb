"""Streaming multipart uploads: a bank zip goes straight to a temp file on disk, never into memory,
and the upload is cut off as soon as it passes the size limit.

Small text fields (the CSRF token, the set name) are kept in memory up to 4 KiB each. The CSRF
token is checked by the caller's ``before_file`` hook *before* the first byte of the file is
written, so a forged request cannot make the server store anything.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 4096
MAX_PARTS = 10


class UploadError(Exception):
    """The upload was refused; ``status`` is the HTTP status (400, 403, 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    fields: dict[str, str] = field(default_factory=dict)
    file_path: Path | None = None
    filename: str | None = None
    file_bytes: int = 0

    def cleanup(self) -> None:
        if self.file_path is not None:
            self.file_path.unlink(missing_ok=True)


async def receive_upload(
    content_type: str,
    content_length: str | None,
    stream: AsyncIterator[bytes],
    *,
    file_field: str,
    limit: int,
    tmp_dir: Path,
    before_file: Callable[[dict[str, str]], None] | None = None,
) -> Upload:
    """Parse a multipart/form-data body from ``stream``; the part named ``file_field`` goes to a
    temp file in ``tmp_dir``. Raises UploadError (and leaves no file behind) on any problem."""
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError(400, "expected a multipart/form-data upload")
    if content_length is not None:
        try:
            if int(content_length) > limit + 64 * 1024:
                raise UploadError(413, f"the upload is larger than the {limit}-byte limit")
        except ValueError as exc:
            raise UploadError(400, "bad Content-Length") from exc
    tmp_dir.mkdir(parents=True, exist_ok=True)
    up = Upload()
    state: dict[str, object] = {"headers": {}, "field": b"", "value": b"", "name": None, "file": None, "parts": 0, "error": None}
    out: list[BinaryIO] = []

    def on_part_begin() -> None:
        state["headers"] = {}
        state["name"] = None
        state["value"] = b""
        state["parts"] = int(state["parts"]) + 1  # type: ignore[call-overload]
        if int(state["parts"]) > MAX_PARTS:  # type: ignore[call-overload]
            raise UploadError(400, "too many form fields")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] = bytes(state["field"]) + data[start:end]  # type: ignore[arg-type]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        headers: dict[bytes, bytes] = state["headers"]  # type: ignore[assignment]
        key = bytes(state["field"]).lower()  # type: ignore[arg-type]
        headers[key] = headers.get(key, b"") + data[start:end]

    def on_header_end() -> None:
        state["field"] = b""

    def on_headers_finished() -> None:
        headers: dict[bytes, bytes] = state["headers"]  # type: ignore[assignment]
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        state["name"] = name
        if name == file_field:
            if before_file is not None:
                before_file(dict(up.fields))
            if up.file_path is not None:
                raise UploadError(400, "only one file may be uploaded")
            fd, path = tempfile.mkstemp(prefix="upload-", suffix=".zip", dir=tmp_dir)
            up.file_path = Path(path)
            up.filename = os.path.basename(disp.get(b"filename", b"").decode("utf-8", "replace"))[:200] or None
            out.append(os.fdopen(fd, "wb"))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["name"] == file_field:
            up.file_bytes += end - start
            if up.file_bytes > limit:
                raise UploadError(413, f"the upload is larger than the {limit}-byte limit")
            out[-1].write(data[start:end])
        else:
            value = bytes(state["value"]) + data[start:end]  # type: ignore[arg-type]
            if len(value) > MAX_FIELD_BYTES:
                raise UploadError(400, f"form field {state['name']!r} is too long")
            state["value"] = value

    def on_part_end() -> None:
        name = state["name"]
        if name == file_field:
            out[-1].close()
        elif isinstance(name, str) and name:
            up.fields[name] = bytes(state["value"]).decode("utf-8", "replace")  # type: ignore[arg-type]

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in stream:
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except BaseException as exc:
        for f in out:
            f.close()
        up.cleanup()
        if isinstance(exc, UploadError):
            raise
        if isinstance(exc, Exception):
            raise UploadError(400, f"malformed upload: {exc}") from exc
        raise
    for f in out:
        if not f.closed:
            f.close()
    return up
