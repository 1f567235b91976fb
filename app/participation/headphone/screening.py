"""Headphone screening: the trial sets, scoring, the decision and saving answers.

The participant's trials are a pure function of (participant seed, check, attempt), so a reload
shows the same trials. Progress and the pass/fail decision are derived from the stored
:class:`~app.core.schema.ScreeningTrial` rows alone (:func:`progress`), and written to the
participant (:func:`settle`) as a cache that :func:`app.participation.stage.stage_of` reads.
Failing a check, after the retry where one is allowed, ends the session as screened out, which
frees the balancing slot.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.schema import Participant, ScreeningTrial, utcnow
from app.experiments.context import ExperimentContext
from app.experiments.spec import HeadphoneSpec
from app.participation.arrival import end_session, touch
from app.participation.headphone.signals import CHECK_ORDER, HUGGINS_SETS, STIMULI, Check
from app.participation.saving import SaveError
from app.participation.schemas import ScreeningAnswerIn
from app.participation.stage import stage_of

# ------------------------------------------------------------------------------- trial sets


@dataclass(frozen=True)
class PlannedTrial:
    check: Check
    attempt: int
    index: int
    stimulus: str
    correct: int


def checks_for(spec: HeadphoneSpec) -> list[Check]:
    if spec.check == "none":
        return []
    if spec.check == "both":
        return list(CHECK_ORDER)
    return [spec.check]


def rule(spec: HeadphoneSpec, check: Check) -> tuple[int, int, int]:
    """(trials per attempt, correct answers needed, attempts allowed) of ``check``."""
    if check == "antiphase":
        return spec.antiphase_trials, spec.antiphase_pass, 2 if spec.antiphase_retry else 1
    return spec.huggins_trials, spec.huggins_pass, 2 if spec.huggins_retry else 1


def _rng(seed: int, check: Check, attempt: int) -> random.Random:
    # random.Random seeded from a hash is stable across Python versions and platforms, so a
    # participant's trial list can never change under them.
    digest = hashlib.sha256(f"{seed}:{check}:{attempt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def plan_attempt(check: Check, seed: int, attempt: int, n: int) -> list[PlannedTrial]:
    """The ``n`` trials of one attempt, fixed by the participant's seed.

    Antiphase: the six (soft, antiphase) orders in random order, again for trials 7–12.
    Huggins: the 18 stimuli form three rounds of six; in round r, set k has its target at
    position (k + r) mod 3 + 1, so every round uses each set once and each position twice.
    Attempt a starts with round a−1, so a retry hears different stimuli than the first try.
    """
    rng = _rng(seed, check, attempt)
    names: list[str] = []
    if check == "antiphase":
        orders = list(itertools.permutations((1, 2, 3), 2))
        while len(names) < n:
            rng.shuffle(orders)
            names.extend(f"antiphase/soft{s}-anti{a}" for s, a in orders)
    else:
        for r in range(3):
            rnd = (attempt - 1 + r) % 3
            block = [f"huggins/set{k}-target{(k + rnd) % 3 + 1}" for k in range(1, HUGGINS_SETS + 1)]
            rng.shuffle(block)
            names.extend(block)
    out = []
    for i, name in enumerate(names[:n]):
        correct = STIMULI[name].correct
        assert correct is not None
        out.append(PlannedTrial(check, attempt, i, name, correct))
    return out


# --------------------------------------------------------------------------------- progress


@dataclass
class AttemptResult:
    attempt: int
    trials: int
    correct: int
    passed: bool
    picked_lure: int | None = None  # antiphase only: answers naming the antiphase tone

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attempt": self.attempt, "trials": self.trials, "correct": self.correct, "passed": self.passed}
        if self.picked_lure is not None:
            out["picked_antiphase"] = self.picked_lure
        return out


@dataclass
class CheckResult:
    check: Check
    trials: int
    pass_mark: int
    max_attempts: int
    attempts: list[AttemptResult] = field(default_factory=list)
    passed: bool | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "trials": self.trials,
            "pass_mark": self.pass_mark,
            "max_attempts": self.max_attempts,
            "attempts": [a.as_json() for a in self.attempts],
        }


@dataclass
class Progress:
    """Where a participant stands in the check, derived from their stored screening trials.

    ``status``: not_required | pending | passed | failed. While pending, ``check`` and ``attempt``
    name the part now due and ``answered`` its stored trial indices.
    """

    status: Literal["not_required", "pending", "passed", "failed"]
    results: dict[str, CheckResult]
    check: Check | None = None
    attempt: int | None = None
    answered: list[int] = field(default_factory=list)

    def score(self) -> dict[str, Any]:
        """The layout of ``Participant.headphone_score``: one entry per check done or begun."""
        return {c: r.as_json() for c, r in self.results.items()}

    def summary(self) -> str:
        return "; ".join(f"{c}: " + ", ".join(f"{a.correct}/{a.trials}" for a in r.attempts) for c, r in self.results.items() if r.attempts)


def progress(session: Session, p: Participant, spec: HeadphoneSpec) -> Progress:
    checks = checks_for(spec)
    if not checks:
        return Progress("not_required", {})
    rows = session.execute(
        sa.select(ScreeningTrial.check, ScreeningTrial.attempt, ScreeningTrial.index, ScreeningTrial.correct, ScreeningTrial.stimulus, ScreeningTrial.answer)
        .where(ScreeningTrial.participant_id == p.id)
        .order_by(ScreeningTrial.check, ScreeningTrial.attempt, ScreeningTrial.index)
    ).all()
    by_part: dict[tuple[str, int], list[Any]] = {}
    for row in rows:
        by_part.setdefault((row.check, row.attempt), []).append(row)
    results: dict[str, CheckResult] = {}
    for check in checks:
        n, need, max_attempts = rule(spec, check)
        res = results[check] = CheckResult(check, n, need, max_attempts)
        for attempt in range(1, max_attempts + 1):
            got = [r for r in by_part.get((check, attempt), []) if r.index < n]
            if len(got) < n:
                return Progress("pending", results, check, attempt, [r.index for r in got])
            ok = sum(1 for r in got if r.correct)
            lure = sum(1 for r in got if STIMULI.get(r.stimulus) and STIMULI[r.stimulus].lure == r.answer) if check == "antiphase" else None
            res.attempts.append(AttemptResult(attempt, n, ok, ok >= need, lure))
            if ok >= need:
                res.passed = True
                break
        else:
            res.passed = False
            return Progress("failed", results)
    return Progress("passed", results)


def settle(session: Session, p: Participant, ctx: ExperimentContext) -> Progress:
    """Write the participant's score and, once decided, the outcome. Idempotent.

    Called after every save and on every state request, so a decision is never lost even when
    two concurrent saves each saw the other's row missing.
    """
    prog = progress(session, p, ctx.spec.headphone)
    if prog.status == "not_required" or p.status != "started" or p.headphone_passed is not None:
        return prog
    score = prog.score()
    if p.headphone_score != score:
        p.headphone_score = score  # a new object, so the JSON column is written
    if prog.status == "passed":
        p.headphone_passed = True
    elif prog.status == "failed":
        p.headphone_passed = False
        end_session(p, "screened_out", "screened_out", f"failed the headphone check ({prog.summary()})")
    return prog


# ----------------------------------------------------------------------------------- saving


@dataclass
class ScreeningSave:
    duplicate: bool
    progress: Progress


def _find(session: Session, p: Participant, data: ScreeningAnswerIn) -> ScreeningTrial | None:
    return session.scalar(
        sa.select(ScreeningTrial).where(
            ScreeningTrial.participant_id == p.id,
            ScreeningTrial.check == data.check,
            ScreeningTrial.attempt == data.attempt,
            ScreeningTrial.index == data.index,
        )
    )


def _repeat(session: Session, p: Participant, ctx: ExperimentContext, existing: ScreeningTrial, digest: str) -> ScreeningSave:
    if existing.payload_sha256 != digest:
        raise SaveError(409, f"{existing.check} trial {existing.index + 1} (attempt {existing.attempt}) was already answered differently; the first answer is kept")
    return ScreeningSave(True, settle(session, p, ctx))


def save_answer(session: Session, p: Participant, ctx: ExperimentContext, data: ScreeningAnswerIn) -> ScreeningSave:
    """Store one check answer (insert-only) and settle the outcome. Raises SaveError (nothing stored)
    when the answer is not due: the session ended, the check is not the current stage, or the
    answer belongs to another part of the check than the one now due."""
    digest = data.payload_sha256()
    existing = _find(session, p, data)
    if existing is not None:
        return _repeat(session, p, ctx, existing, digest)
    if p.status != "started":
        raise SaveError(409, f"this session has ended ({p.status.replace('_', ' ')}); no more answers are accepted")
    stage = stage_of(session, p, ctx)
    if stage != "headphone":
        raise SaveError(409, f"the headphone check is not due now (current stage: {stage})")
    prog = settle(session, p, ctx)
    if prog.status != "pending" or prog.check is None or prog.attempt is None:
        raise SaveError(409, f"the headphone check is already decided ({prog.status})")
    if (data.check, data.attempt) != (prog.check, prog.attempt):
        raise SaveError(409, f"this is not the part of the check now due ({prog.check}, attempt {prog.attempt})")
    n, _, _ = rule(ctx.spec.headphone, data.check)
    if data.index >= n:
        raise SaveError(422, f"index {data.index} is out of range: this check has {n} trials")
    planned = plan_attempt(data.check, p.seed, data.attempt, n)[data.index]
    row = ScreeningTrial(
        participant_id=p.id,
        check=data.check,
        attempt=data.attempt,
        index=data.index,
        stimulus=planned.stimulus,
        correct_answer=planned.correct,
        answer=data.answer,
        correct=data.answer == planned.correct,
        rt_ms=data.rt_ms,
        events=[e.model_dump(exclude_none=True) for e in data.events] if data.events else None,
        payload_sha256=digest,
        received_at=utcnow(),
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        # A concurrent request (retry racing the first try, a second tab) stored it first.
        existing = _find(session, p, data)
        if existing is None:
            raise
        return _repeat(session, p, ctx, existing, digest)
    touch(p)
    return ScreeningSave(False, settle(session, p, ctx))
