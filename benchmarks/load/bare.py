"""The ceiling: a bare FastAPI endpoint with the same shape as the save endpoint (sync handler in
the thread pool, a validated JSON body, a JSON answer) and no database, no auth, no middleware.

``uvicorn benchmarks.load.bare:app`` with the same workers and settings as the real app; the
benchmark's ratio (real saves/s ÷ bare requests/s) says how much of the framework's capacity is
left to the application's own work.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

app = FastAPI()


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trial_index: Annotated[int, Field(ge=0)]
    answer: Annotated[str, Field(min_length=1, max_length=200)]
    rt_ms: float | None = None
    shown_at: float | None = None
    responded_at: float | None = None
    durations: dict[str, float] | None = None
    client: dict[str, float | int | bool | str | None] | None = None


@app.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.post("/bare", status_code=201)
def bare(body: Body) -> dict[str, object]:
    return {"saved": True, "duplicate": False, "correct": None, "stage": "main", "ended": None}
