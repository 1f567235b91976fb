"""Headphone screening (REFERENCE §5): the stimuli, the trial sets, scoring and the decision.

Two published checks, both three-alternative tasks whose answer is an interval position 1..3:

* **antiphase** (Woods et al. 2017), "which tone is quietest?". Three 200 Hz tones; one is 6 dB
  softer, one of the louder ones has its channels in antiphase. Over loudspeakers the antiphase
  tone partly cancels and sounds quietest, so loudspeaker listeners pick it instead of the soft one.
* **huggins** (Milne et al. 2021), "which noise contains a faint tone?". Three Gaussian-noise
  bursts; in the target the 600 Hz ±6 % band is phase-inverted in one ear, which produces a faint
  pitch only when each ear gets its own channel, i.e. over headphones.

The stimuli are generated here with numpy from fixed seeds, never downloaded. They are written
to the content-addressed media store lazily (only the files a participant needs, once per app
process; a file that disappeared from the store is written again), so every process of one
installation produces byte-identical files and the same URLs.

The participant's trials are a pure function of (participant seed, check, attempt), so a reload
shows the same trials. Progress and the pass/fail decision are derived from the stored
:class:`~app.models.ScreeningTrial` rows alone (:func:`progress`), and written to the participant
(:func:`settle`) as a cache that ``app.responses.stage_of`` reads. Failing a check, after the retry
where one is allowed, ends the session as screened out, which frees the balancing slot.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.experiments import ExperimentContext
from app.models import Participant, ScreeningTrial, utcnow
from app.participants import end_session, touch
from app.responses import ClientEvent, SaveError, stage_of
from app.spec import HeadphoneSpec
from app.store import MediaStore
from synthesis.media import encode_wav

Check = Literal["antiphase", "huggins"]
CHECK_ORDER: tuple[Check, ...] = ("antiphase", "huggins")  # the order of the two under "both"

SAMPLE_RATE = 44_100  # Hz; Milne et al. generate the Huggins stimuli at 44.1 kHz
LEVEL_RMS = 0.1  # RMS of the louder tones and of every noise (−20 dBFS), so volumes match

# Antiphase (Woods et al. 2017)
TONE_HZ = 200.0
TONE_S = 1.0
TONE_RAMP_S = 0.06  # raised-cosine onset and offset ramps
TONE_GAP_S = 0.5
SOFT_DB = -6.0  # level of the soft tone relative to the others (dB)

# Huggins pitch (Milne et al. 2021)
BURST_S = 1.0
BURST_GAP_S = 1.0
BURST_RAMP_S = 0.02  # raised-cosine ramps, so the bursts start and end without clicks
HUGGINS_CENTER_HZ = 600.0
HUGGINS_HALF_WIDTH = 0.06  # the inverted band is centre × (1 ± 6 %) = 564–636 Hz
HUGGINS_SETS = 6

CALIBRATION_S = 4.0
CALIBRATION_RAMP_S = 0.05
NOISE_SEED = 5_2021  # root of every noise; changing it changes every Huggins/calibration file

CALIBRATION = "calibration/noise"


# ---------------------------------------------------------------------------------- signals


def raised_cosine_ramps(n: int, ramp_s: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Envelope of ``n`` samples rising from 0 and falling back to 0 over ``ramp_s`` seconds each."""
    k = int(round(ramp_s * sample_rate))
    env = np.ones(n)
    if k > 0:
        rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
        env[:k] = rise
        env[n - k :] = rise[::-1]
    return env


def _samples(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


def _concat_with_gaps(intervals: list[np.ndarray], gap_s: float) -> np.ndarray:
    """Stereo intervals ``(n, 2)`` joined by digital silence of ``gap_s`` seconds."""
    gap = np.zeros((_samples(gap_s), 2))
    parts: list[np.ndarray] = []
    for i, x in enumerate(intervals):
        if i:
            parts.append(gap)
        parts.append(x)
    return np.concatenate(parts)


def tone_interval(kind: Literal["normal", "soft", "antiphase"]) -> np.ndarray:
    """One ramped 200 Hz tone, stereo ``(n, 2)``: in phase, 6 dB softer, or right = −left."""
    n = _samples(TONE_S)
    t = np.arange(n) / SAMPLE_RATE
    # Steady-state RMS of a sine is peak/√2, so this puts the loud tones at LEVEL_RMS.
    tone = np.sqrt(2.0) * LEVEL_RMS * np.sin(2 * np.pi * TONE_HZ * t) * raised_cosine_ramps(n, TONE_RAMP_S)
    if kind == "soft":
        tone = tone * 10 ** (SOFT_DB / 20)
    right = -tone if kind == "antiphase" else tone
    return np.stack([tone, right], axis=1)


def antiphase_wave(soft: int, anti: int) -> np.ndarray:
    """An antiphase trial: the soft tone at position ``soft``, the antiphase tone at ``anti`` (1..3)."""
    if soft == anti or not {soft, anti} <= {1, 2, 3}:
        raise ValueError(f"soft ({soft}) and antiphase ({anti}) must be two different positions 1..3")
    kinds: list[Literal["normal", "soft", "antiphase"]] = [
        "soft" if pos == soft else "antiphase" if pos == anti else "normal" for pos in (1, 2, 3)
    ]
    return _concat_with_gaps([tone_interval(k) for k in kinds], TONE_GAP_S)


def _noise(*key: int, seconds: float) -> np.ndarray:
    """Gaussian noise at LEVEL_RMS (exactly, over its length) from a seed derived from ``key``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([NOISE_SEED, *key])))
    x = rng.standard_normal(_samples(seconds))
    return x * (LEVEL_RMS / np.sqrt(np.mean(x**2)))


def huggins_band() -> tuple[float, float]:
    """The phase-inverted band in Hz: 600 Hz ± 6 % → (564, 636)."""
    return HUGGINS_CENTER_HZ * (1 - HUGGINS_HALF_WIDTH), HUGGINS_CENTER_HZ * (1 + HUGGINS_HALF_WIDTH)


def invert_band(x: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    """``x`` with the phase of every frequency component in [lo_hz, hi_hz] inverted (× −1).

    Done on the whole burst's spectrum, so the result is exact: the channels' cross-spectrum has
    phase π inside the band and 0 outside, and the magnitude spectrum (hence the level) is unchanged.
    """
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1.0 / SAMPLE_RATE)
    spec[(f >= lo_hz) & (f <= hi_hz)] *= -1
    return np.fft.irfft(spec, n=x.size)


def huggins_wave(set_index: int, target: int) -> np.ndarray:
    """A Huggins trial of set ``set_index`` (1..6) with the target burst at position ``target`` (1..3).

    Each burst is its own noise. Non-targets are diotic (identical channels); in the target the
    right channel has the 564–636 Hz band inverted. The ramps are applied after the inversion,
    to both channels alike, so they do not disturb the interaural relation.
    """
    if not 1 <= set_index <= HUGGINS_SETS or target not in (1, 2, 3):
        raise ValueError(f"no Huggins stimulus for set {set_index}, target {target}")
    env = raised_cosine_ramps(_samples(BURST_S), BURST_RAMP_S)
    lo, hi = huggins_band()
    bursts = []
    for pos in (1, 2, 3):
        # The seed names (set, target, position): every stimulus has its own noises.
        left = _noise(1, set_index, target, pos, seconds=BURST_S)
        right = invert_band(left, lo, hi) if pos == target else left
        bursts.append(np.stack([left * env, right * env], axis=1))
    return _concat_with_gaps(bursts, BURST_GAP_S)


def calibration_wave() -> np.ndarray:
    """Diotic Gaussian noise at the level of the check stimuli, for setting a comfortable volume."""
    x = _noise(0, seconds=CALIBRATION_S) * raised_cosine_ramps(_samples(CALIBRATION_S), CALIBRATION_RAMP_S)
    return np.stack([x, x], axis=1)


def intervals(check: Check) -> list[tuple[float, float]]:
    """Where the three sounds of a trial are: (start, end) in ms from the start of the file."""
    dur, gap = (TONE_S, TONE_GAP_S) if check == "antiphase" else (BURST_S, BURST_GAP_S)
    return [(1000 * k * (dur + gap), 1000 * (k * (dur + gap) + dur)) for k in range(3)]


# --------------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class ScreeningStimulus:
    """One generated file. ``correct`` is the answer position (None for the calibration noise);
    ``lure`` is the position a loudspeaker listener tends to pick (the antiphase tone)."""

    name: str
    check: Check | Literal["calibration"]
    correct: int | None
    lure: int | None
    make: Callable[[], np.ndarray]


def _catalogue() -> dict[str, ScreeningStimulus]:
    out: dict[str, ScreeningStimulus] = {CALIBRATION: ScreeningStimulus(CALIBRATION, "calibration", None, None, calibration_wave)}
    for soft, anti in itertools.permutations((1, 2, 3), 2):
        name = f"antiphase/soft{soft}-anti{anti}"
        out[name] = ScreeningStimulus(name, "antiphase", soft, anti, lambda s=soft, a=anti: antiphase_wave(s, a))
    for k in range(1, HUGGINS_SETS + 1):
        for target in (1, 2, 3):
            name = f"huggins/set{k}-target{target}"
            out[name] = ScreeningStimulus(name, "huggins", target, None, lambda k=k, t=target: huggins_wave(k, t))
    return out


STIMULI: dict[str, ScreeningStimulus] = _catalogue()


def encode(name: str) -> bytes:
    """The WAV file (16-bit stereo, 44.1 kHz) of stimulus ``name``."""
    return encode_wav(STIMULI[name].make(), SAMPLE_RATE)


class MediaCatalogue:
    """Stimulus name → sha256 of its WAV in the store, generated on first need.

    One instance per process (:data:`MEDIA`). The name → hash map is kept in memory; the files
    are checked with one ``stat`` each when asked for, and written again if missing.
    """

    def __init__(self) -> None:
        self._sha: dict[str, str] = {}
        self._lock = threading.Lock()

    def sha_for(self, store: MediaStore, names: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in names:
            sha = self._sha.get(name)
            if sha is None or not store.exists(sha, ".wav"):
                with self._lock:
                    sha = self._sha.get(name)
                    if sha is None or not store.exists(sha, ".wav"):
                        sha, _ = store.put_bytes(encode(name), ".wav")
                        self._sha[name] = sha
            out[name] = sha
        return out

    def url_for(self, store: MediaStore, names: Iterable[str]) -> dict[str, str]:
        return {name: f"/media/{sha}.wav" for name, sha in self.sha_for(store, names).items()}


MEDIA = MediaCatalogue()


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
