"""The participant API's request and response bodies (pydantic), shared by the JSON API, the
headphone-check API and the save path. Strict: unknown fields and wrong types are refused (422).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.participation.headphone.signals import Check

Stage = Literal["consent", "instructions", "headphone", "practice", "gate", "main", "debrief", "ended"]

Short = Annotated[str, Field(max_length=200)]


class ClientEvent(BaseModel):
    """Something that happened in the page during a trial, e.g. the window lost focus."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]
    t: Annotated[float, Field(ge=-1e7, le=1e13)]  # ms, performance.now() of the page
    detail: Short | None = None


class ResponseIn(BaseModel):
    """One answer, as the runner posts it. Times from the client are ms."""

    model_config = ConfigDict(extra="forbid", strict=True)
    trial_index: Annotated[int, Field(ge=0, le=100_000)]
    answer: Annotated[str, Field(min_length=1, max_length=200)]
    rt_ms: Annotated[float, Field(ge=0, le=1e8)] | None = None
    # Client wall-clock times (ms since the Unix epoch).
    shown_at: Annotated[float, Field(ge=0, le=1e14)] | None = None
    responded_at: Annotated[float, Field(ge=0, le=1e14)] | None = None
    # Measured on-screen durations, e.g. fixation_ms, stimulus_ms, mask_ms, audio_ms.
    durations: Annotated[dict[Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")], Annotated[float, Field(ge=0, le=1e8)]], Field(max_length=16)] | None = None
    events: Annotated[list[ClientEvent], Field(max_length=500)] | None = None
    client: Annotated[dict[Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")], float | int | bool | Short | None], Field(max_length=32)] | None = None

    @field_validator("answer")
    @classmethod
    def _strip(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("answer is empty")
        return v

    def payload_sha256(self) -> str:
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


class ScreeningAnswerIn(BaseModel):
    """One headphone-check answer as the runner posts it: the position (1..3) chosen."""

    model_config = ConfigDict(extra="forbid", strict=True)
    check: Check
    attempt: Annotated[int, Field(ge=1, le=2)]
    index: Annotated[int, Field(ge=0, le=17)]
    answer: Annotated[int, Field(ge=1, le=3)]
    rt_ms: Annotated[float, Field(ge=0, le=1e8)] | None = None  # from the end of the sound
    events: Annotated[list[ClientEvent], Field(max_length=200)] | None = None

    def payload_sha256(self) -> str:
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()


class CategoryOut(BaseModel):
    id: str
    label: str
    icon: str | None = None


class TrialOut(BaseModel):
    index: int
    phase: Literal["practice", "gate", "main", "catch"]
    block: int
    media: str
    # Only practice trials with feedback reveal their answer.
    answer: str | None = None


class ExperimentOut(BaseModel):
    slug: str
    title: str
    modality: Literal["image", "audio"]
    response: dict[str, Any]
    categories: list[CategoryOut]
    timing: dict[str, int]
    image_px: int
    practice_timing: dict[str, int]
    practice_feedback: bool
    play_once: bool
    breaks: int
    gate: dict[str, int]
    headphone: dict[str, Any]
    texts: dict[str, str]
    estimated_minutes: int | None = None
    allow_mobile: bool


class EndedOut(BaseModel):
    status: str
    outcome: str
    target: dict[str, Any] | None = None


class SessionOut(BaseModel):
    participant: str
    status: str
    stage: Stage
    experiment: ExperimentOut
    trials: list[TrialOut]
    answered: list[int]
    ended: EndedOut | None = None


class BrowserInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    screen_width: Annotated[int, Field(ge=0, le=100_000)] | None = None
    screen_height: Annotated[int, Field(ge=0, le=100_000)] | None = None
    window_width: Annotated[int, Field(ge=0, le=100_000)] | None = None
    window_height: Annotated[int, Field(ge=0, le=100_000)] | None = None
    device_pixel_ratio: Annotated[float, Field(ge=0, le=100)] | None = None
    frame_ms: Annotated[float, Field(ge=0, le=1000)] | None = None  # measured display frame interval
    language: Annotated[str, Field(max_length=64)] | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    touch: bool | None = None


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    agree: Literal[True]
    browser: BrowserInfo | None = None


class StageOut(BaseModel):
    stage: Stage


class SaveOut(BaseModel):
    saved: Literal[True] = True
    duplicate: bool
    correct: bool | None = None
    stage: Stage
    ended: EndedOut | None = None


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")]
    trial_index: Annotated[int, Field(ge=0, le=100_000)] | None = None
    detail: Annotated[str, Field(max_length=500)] | None = None
    events: Annotated[list[ClientEvent], Field(max_length=100)] | None = None


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    events: Annotated[list[EventIn], Field(min_length=1, max_length=50)]


class ErrorOut(BaseModel):
    detail: str
    missing: list[int] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or unknown participant token"},
    409: {"model": ErrorOut, "description": "conflicts with what is stored (nothing was changed)"},
}


# ------------------------------------------------------------------ headphone check

Status = Literal["not_required", "pending", "passed", "failed"]


class ScreeningTrialOut(BaseModel):
    index: int
    media: str


class CheckSummaryOut(BaseModel):
    """What the participant may know about a check: attempts finished and whether it is passed."""

    attempts_done: int
    max_attempts: int
    passed: bool | None


class HeadphoneStateOut(BaseModel):
    status: Status
    stage: Stage
    checks: list[Literal["antiphase", "huggins"]]
    # The part now due (while pending): its check, attempt, trials and which are stored.
    check: Literal["antiphase", "huggins"] | None = None
    attempt: int | None = None
    trials: list[ScreeningTrialOut] = []
    answered: list[int] = []
    # Where the three sounds of a trial lie in its file (ms), to show which one is playing.
    intervals_ms: list[tuple[float, float]] = []
    calibration: str | None = None
    results: dict[str, CheckSummaryOut] = {}
    ended: EndedOut | None = None


class HeadphoneSaveOut(BaseModel):
    saved: Literal[True] = True
    duplicate: bool
    status: Status
    stage: Stage
    check: Literal["antiphase", "huggins"] | None = None
    attempt: int | None = None
    ended: EndedOut | None = None
