"""Stimulus media by content hash: cached forever (immutable), with HTTP range requests for audio."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from app.deps import Runtime, runtime
from synthesis.media import MIME_TYPES

router = APIRouter(tags=["media"])
NAME = re.compile(r"^([0-9a-f]{64})(\.png|\.wav)$")


@router.get("/media/{name}", summary="A stimulus file by sha256")
def media(name: str, rt: Runtime = Depends(runtime)) -> FileResponse:
    m = NAME.match(name)
    if not m:
        raise HTTPException(status_code=404, detail="no such media")
    path = rt.store.path_for(m.group(1), m.group(2))
    if not path.is_file():
        raise HTTPException(status_code=404, detail="no such media")
    return FileResponse(
        path,
        media_type=MIME_TYPES[m.group(2)],
        headers={"Cache-Control": "public, max-age=31536000, immutable", "ETag": f'"{m.group(1)}"'},
    )
