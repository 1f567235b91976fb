"""Recruitment platforms (docs/science.md §6): reading Prolific/MTurk entry parameters, and where a
participant goes when they finish. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from app.core.security import MTURK_ORIGINS
from app.experiments.spec import ExperimentSpec

MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"
PROLIFIC_COMPLETE = "https://app.prolific.com/submissions/complete?cc="


@dataclass(frozen=True)
class Arrival:
    """Who is arriving, from the study URL's query parameters."""

    platform: str
    pid: str | None = None
    study_id: str | None = None
    session_id: str | None = None
    assignment_id: str | None = None
    hit_id: str | None = None
    turk_submit_to: str | None = None

    @property
    def is_preview(self) -> bool:
        return self.platform == "mturk" and self.assignment_id == MTURK_PREVIEW

    @property
    def attempt_key(self) -> str | None:
        """What identifies one attempt: Prolific's SESSION_ID, MTurk's assignmentId."""
        return self.session_id if self.platform == "prolific" else self.assignment_id


class ArrivalError(ValueError):
    """The URL lacks the parameters the experiment's platform sends; the message is for participants."""


def _clean(v: str | None, limit: int = 128) -> str | None:
    if v is None:
        return None
    v = v.strip()
    if not v:
        return None
    if len(v) > limit or any(ord(c) < 32 for c in v):
        raise ArrivalError("The study link is malformed. Please return to the recruitment site and open it again.")
    return v


def valid_turk_submit_to(url: str | None) -> bool:
    """Only MTurk's own hosts may receive the completion POST (no open redirects)."""
    if not url:
        return False
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" in MTURK_ORIGINS and parts.path in ("", "/")


def parse_arrival(spec: ExperimentSpec, params: dict[str, str]) -> Arrival:
    if spec.platform == "prolific":
        pid = _clean(params.get("PROLIFIC_PID"))
        if not pid:
            raise ArrivalError("This study must be opened from Prolific (the link carries your Prolific ID).")
        return Arrival("prolific", pid=pid, study_id=_clean(params.get("STUDY_ID")), session_id=_clean(params.get("SESSION_ID")))
    if spec.platform == "mturk":
        assignment = _clean(params.get("assignmentId"))
        if assignment == MTURK_PREVIEW:
            return Arrival("mturk", assignment_id=assignment)
        worker = _clean(params.get("workerId"))
        submit = _clean(params.get("turkSubmitTo"), 512)
        if not assignment or not worker:
            raise ArrivalError("This study must be opened from Amazon Mechanical Turk.")
        if submit and not valid_turk_submit_to(submit):
            raise ArrivalError("The study link is malformed (turkSubmitTo). Please open it again from MTurk.")
        return Arrival("mturk", pid=worker, assignment_id=assignment, hit_id=_clean(params.get("hitId")), turk_submit_to=submit)
    return Arrival("none")


def completion_target(spec: ExperimentSpec, outcome: str, *, platform: str, assignment_id: str | None, turk_submit_to: str | None) -> dict[str, Any]:
    """Where the browser goes at the end, for an outcome (completed | screened_out | failed_attention)."""
    codes = spec.completion_codes
    code = {"completed": codes.completed, "screened_out": codes.screened_out, "failed_attention": codes.failed_attention}.get(outcome)
    if outcome == "failed_attention" and not code:
        code = codes.completed  # without a dedicated code the participant still gets paid
    if platform == "prolific" and code:
        return {"kind": "redirect", "url": PROLIFIC_COMPLETE + quote(code), "code": code, "outcome": outcome}
    if platform == "mturk" and assignment_id and valid_turk_submit_to(turk_submit_to):
        assert turk_submit_to is not None
        return {
            "kind": "mturk",
            "action": turk_submit_to.rstrip("/") + "/mturk/externalSubmit",
            "fields": {"assignmentId": assignment_id, "completion_code": code or "", "outcome": outcome},
            "code": code,
            "outcome": outcome,
            "sandbox": "sandbox" in turk_submit_to,
        }
    return {"kind": "code", "code": code, "outcome": outcome}
