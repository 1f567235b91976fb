"""Researcher exports: database rows → tidy CSV files, accuracy tables, figures and statistics.

Everything is *streamed*: participants are read in small chunks, each in its own short
transaction, and rows are yielded as CSV text as they are produced. Memory stays bounded by the
chunk size, the number of stimuli and per-participant summaries, never by the number of trials;
and no export holds a database transaction open for long (on SQLite every transaction takes the
write lock, so a long read would stall participants' saves).

Files (columns are listed in the ``*_COLUMNS`` constants and documented in docs/admin-and-exports.md):

* ``trials.csv``         one row per answered trial (optionally also unanswered planned trials)
* ``participants.csv``   one row per participant (previews never appear anywhere)
* ``screening.csv``      one row per headphone-check trial
* ``exclusions.csv``     the sidecar: every excluded participant and every reason that applies
* ``accuracy_by_layer.csv``, ``accuracy_by_layer.svg``/``.png``, ``stats.csv``, ``stats.txt``

Pseudonymization replaces platform ids (Prolific PID / MTurk worker id, session and assignment
ids) with ``HMAC-SHA256(key, value)`` prefixes. The default key is derived from the server's
secret key and the experiment, so every file of one experiment agrees (and the same person keeps
the same pseudonym across attempts), but pseudonyms cannot be reversed or linked to another
experiment's export. A custom key can be supplied.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import math
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app import analysis, stats
from app.analysis import ACCURACY_COLUMNS, AccuracyRow, AccuracyTally, Level, ParticipantFacts
from app.experiments import spec_of
from app.models import Experiment, ExperimentStimulusSet, Participant, Response, ScreeningTrial, Stimulus, StimulusSet, Trial
from app.preview import REAL
from app.spec import NATURAL, ExperimentSpec

PARTICIPANT_CHUNK = 200  # participants per facts query
TRIAL_CHUNK = 20  # participants per trial query (a few thousand rows)
CSV_FLUSH_BYTES = 64 * 1024

FILES = ("trials.csv", "participants.csv", "screening.csv", "exclusions.csv", "accuracy_by_layer.csv", "accuracy_by_layer.svg", "accuracy_by_layer.png", "stats.csv", "stats.txt")


@dataclass
class ExportOptions:
    pseudonymize: bool = False
    pseudonym_key: str | None = None  # None: derived from the server secret and the experiment
    include_unanswered: bool = False  # trials.csv: also planned trials nobody answered
    n_boot: int = 10_000  # bootstrap resamples per accuracy row
    n_permutations: int = stats.DEFAULT_PERMUTATIONS
    seed: int = 0  # seeds the bootstrap and the permutations


# ---------------------------------------------------------------------------- pseudonyms


class Pseudonymizer:
    """Maps an id to ``p_<16 hex>`` with a keyed hash; identity when disabled."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key

    def __call__(self, value: str | None) -> str | None:
        if value is None or self.key is None:
            return value
        return "p_" + hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()[:16]


def pseudonymizer(secret_key: str, exp: Experiment, options: ExportOptions) -> Pseudonymizer:
    if not options.pseudonymize:
        return Pseudonymizer(None)
    if options.pseudonym_key:
        return Pseudonymizer(options.pseudonym_key.encode())
    return Pseudonymizer(hmac.new(secret_key.encode(), f"pseudonym:{exp.id}:{exp.design_seed}".encode(), hashlib.sha256).digest())


# ---------------------------------------------------------------------------- CSV


def _cell(v: Any) -> str:
    t = type(v)
    if t is str:
        return v  # type: ignore[no-any-return]
    if v is None:
        return ""
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return str(v)
    if t is float:
        return "" if math.isnan(v) else repr(v)
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.timezone.utc).isoformat()
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, separators=(",", ":"))
    return str(v)


def csv_chunks(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
    """CSV (UTF-8, header first, RFC 4180 quoting, ``\\n`` line ends) in chunks of about 64 KiB."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([_cell(row.get(c)) for c in columns])
        if buf.tell() >= CSV_FLUSH_BYTES:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    with open(path, "wb") as f:
        for chunk in csv_chunks(columns, rows):
            f.write(chunk)


# ---------------------------------------------------------------------------- participants


def participant_ids(factory: sessionmaker[Session], exp_id: int) -> list[int]:
    """Database ids of the experiment's real participants, in arrival order (ints only)."""
    with factory() as s:
        return list(s.scalars(sa.select(Participant.id).where(Participant.experiment_id == exp_id, REAL).order_by(Participant.id)))


def _chunks(ids: Sequence[int], n: int) -> Iterator[Sequence[int]]:
    for i in range(0, len(ids), n):
        yield ids[i : i + n]


@dataclass
class Summary:
    """One participant with the aggregates the exports need (no trial rows)."""

    p: Participant
    phases: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # phase -> planned, answered, correct
    natural: tuple[int, int] = (0, 0)  # answered, correct (main, natural condition, not swapped)
    screening: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)  # check -> attempt -> n, correct

    def facts(self, spec: ExperimentSpec) -> ParticipantFacts:
        gate = self.phases.get("gate", (0, 0, 0))
        return ParticipantFacts(
            participant=self.p.public_id,
            status=self.p.status,
            outcome=self.p.outcome,
            gate_trials=spec.gate.trials,
            gate_min_correct=spec.gate.min_correct,
            gate_answered=gate[1],
            gate_correct=gate[2],
            headphone_passed=self.p.headphone_passed,
            researcher_excluded=bool(self.p.excluded),
            researcher_reason=self.p.exclude_reason,
            natural_trials=self.natural[0],
            natural_correct=self.natural[1],
        )


def summaries(session: Session, ids: Sequence[int]) -> list[Summary]:
    """Participants ``ids`` with their per-phase, natural and screening aggregates (SQL GROUP BY)."""
    people = session.scalars(sa.select(Participant).where(Participant.id.in_(ids)).order_by(Participant.id)).all()
    out = {p.id: Summary(p) for p in people}
    correct = sa.func.sum(sa.case((Response.correct.is_(True), 1), else_=0))
    is_nat = sa.and_(Trial.phase == "main", Trial.condition == NATURAL, Trial.swapped.is_(False))
    rows = session.execute(
        sa.select(Trial.participant_id, Trial.phase, sa.func.count(Trial.id), sa.func.count(Response.id), correct)
        .outerjoin(Response, Response.trial_id == Trial.id)
        .where(Trial.participant_id.in_(ids))
        .group_by(Trial.participant_id, Trial.phase)
    ).all()
    for pid, phase, planned, answered, ok in rows:
        out[pid].phases[phase] = (int(planned), int(answered), int(ok or 0))
    rows = session.execute(
        sa.select(Response.participant_id, sa.func.count(Response.id), correct)
        .join(Trial, Trial.id == Response.trial_id)
        .where(Response.participant_id.in_(ids), is_nat)
        .group_by(Response.participant_id)
    ).all()
    for pid, answered, ok in rows:
        out[pid].natural = (int(answered), int(ok or 0))
    s_ok = sa.func.sum(sa.case((ScreeningTrial.correct.is_(True), 1), else_=0))
    rows = session.execute(
        sa.select(ScreeningTrial.participant_id, ScreeningTrial.check, ScreeningTrial.attempt, sa.func.count(ScreeningTrial.id), s_ok)
        .where(ScreeningTrial.participant_id.in_(ids))
        .group_by(ScreeningTrial.participant_id, ScreeningTrial.check, ScreeningTrial.attempt)
    ).all()
    for pid, check, attempt, n, ok in rows:
        out[pid].screening.setdefault(check, {})[int(attempt)] = (int(n), int(ok or 0))
    return [out[p.id] for p in people]


def iter_summaries(factory: sessionmaker[Session], exp_id: int) -> Iterator[Summary]:
    """Every real participant's Summary, chunk by chunk (each chunk its own short transaction)."""
    for ids in _chunks(participant_ids(factory, exp_id), PARTICIPANT_CHUNK):
        with factory() as s:
            rows = summaries(s, ids)
            s.expunge_all()
        yield from rows


@dataclass
class Exclusions:
    """Who is excluded and why (public id → [(reason, detail)]); everybody else is included."""

    reasons: dict[str, list[tuple[str, str]]]
    included: set[str]


def exclusions(factory: sessionmaker[Session], exp: Experiment) -> Exclusions:
    spec = spec_of(exp)
    reasons: dict[str, list[tuple[str, str]]] = {}
    included: set[str] = set()
    for summ in iter_summaries(factory, exp.id):
        r = analysis.exclusion_reasons(summ.facts(spec), spec.exclusions)
        if r:
            reasons[summ.p.public_id] = r
        else:
            included.add(summ.p.public_id)
    return Exclusions(reasons, included)


# ---------------------------------------------------------------------------- participants.csv

BROWSER_KEYS = ("screen_width", "screen_height", "window_width", "window_height", "device_pixel_ratio", "frame_ms", "language", "timezone", "touch")
HEADPHONE_CHECKS = ("antiphase", "huggins")

PARTICIPANT_COLUMNS = [
    "experiment", "participant", "platform", "platform_pid", "study_id", "session_id", "assignment_id", "hit_id", "attempt",
    "status", "outcome", "screen_reason", "slot", "plan_slot",
    "created_at", "consent_at", "instructions_at", "completed_at", "ended_at", "last_seen_at", "duration_min",
    "trials_planned", "trials_answered",
    "practice_answered", "practice_correct", "gate_answered", "gate_correct", "gate_passed",
    "main_answered", "main_correct", "natural_answered", "natural_correct", "catch_answered", "catch_correct",
    "headphone_passed",
    *[f"headphone_{c}_{k}" for c in HEADPHONE_CHECKS for k in ("passed", "attempts", "trials", "correct")],
    "headphone_score_json",
    *[f"browser_{k}" for k in BROWSER_KEYS], "user_agent",
    "excluded", "exclusion_reasons", "researcher_excluded", "researcher_reason",
]


def _minutes(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return round((b - a).total_seconds() / 60.0, 3)


def identity_columns(slug: str, p: Participant, pseudo: Pseudonymizer) -> dict[str, Any]:
    """Who the row is about: the first columns of both participants.csv and trials.csv, so the
    two files join on ``participant`` (and on the platform IDs, pseudonymized alike)."""
    return {
        "experiment": slug,
        "participant": p.public_id,
        "platform": p.platform,
        "platform_pid": pseudo(p.platform_pid),
        "study_id": p.study_id,
        "session_id": pseudo(p.session_id),
        "assignment_id": pseudo(p.assignment_id),
        "hit_id": p.hit_id,
        "attempt": p.attempt,
    }


def participant_row(summ: Summary, spec: ExperimentSpec, slug: str, pseudo: Pseudonymizer, reasons: list[tuple[str, str]]) -> dict[str, Any]:
    p = summ.p
    ph = summ.phases
    total_planned = sum(v[0] for v in ph.values())
    total_answered = sum(v[1] for v in ph.values())
    gate = ph.get("gate", (0, 0, 0))
    gate_passed: bool | None
    if spec.gate.trials == 0:
        gate_passed = None
    elif gate[1] >= spec.gate.trials:
        gate_passed = gate[2] >= spec.gate.min_correct
    else:
        gate_passed = None
    browser = p.browser if isinstance(p.browser, dict) else {}
    row: dict[str, Any] = {
        **identity_columns(slug, p, pseudo),
        "status": p.status,
        "outcome": p.outcome,
        "screen_reason": p.screen_reason,
        "slot": p.slot,
        "plan_slot": p.plan_slot,
        "created_at": p.created_at,
        "consent_at": p.consent_at,
        "instructions_at": p.instructions_at,
        "completed_at": p.completed_at,
        "ended_at": p.ended_at,
        "last_seen_at": p.last_seen_at,
        "duration_min": _minutes(p.created_at, p.completed_at),
        "trials_planned": total_planned,
        "trials_answered": total_answered,
        "gate_passed": gate_passed,
        "natural_answered": summ.natural[0],
        "natural_correct": summ.natural[1],
        "headphone_passed": p.headphone_passed,
        "headphone_score_json": p.headphone_score,
        "user_agent": p.user_agent,
        "excluded": bool(reasons),
        "exclusion_reasons": ";".join(r for r, _ in reasons),
        "researcher_excluded": bool(p.excluded),
        "researcher_reason": p.exclude_reason,
    }
    for phase in ("practice", "gate", "main", "catch"):
        _, answered, ok = ph.get(phase, (0, 0, 0))
        row[f"{phase}_answered"] = answered
        row[f"{phase}_correct"] = ok
    score = p.headphone_score if isinstance(p.headphone_score, dict) else {}
    for check in HEADPHONE_CHECKS:
        attempts = summ.screening.get(check, {})
        last = attempts[max(attempts)] if attempts else None  # (trials, correct) of the last attempt
        verdict = score.get(check, {}).get("passed") if isinstance(score.get(check), dict) else None
        row[f"headphone_{check}_passed"] = verdict if isinstance(verdict, bool) else None
        row[f"headphone_{check}_attempts"] = len(attempts)
        row[f"headphone_{check}_trials"] = last[0] if last else None
        row[f"headphone_{check}_correct"] = last[1] if last else None
    for k in BROWSER_KEYS:
        row[f"browser_{k}"] = browser.get(k)
    return row


def participant_rows(factory: sessionmaker[Session], exp: Experiment, pseudo: Pseudonymizer) -> Iterator[dict[str, Any]]:
    spec = spec_of(exp)
    for summ in iter_summaries(factory, exp.id):
        reasons = analysis.exclusion_reasons(summ.facts(spec), spec.exclusions)
        yield participant_row(summ, spec, exp.slug, pseudo, reasons)


EXCLUSION_COLUMNS = ["experiment", "participant", "platform_pid", "status", "outcome", "reasons", "details"]


def exclusion_rows(factory: sessionmaker[Session], exp: Experiment, pseudo: Pseudonymizer) -> Iterator[dict[str, Any]]:
    """The sidecar: one row per excluded participant, with every applicable reason."""
    spec = spec_of(exp)
    for summ in iter_summaries(factory, exp.id):
        reasons = analysis.exclusion_reasons(summ.facts(spec), spec.exclusions)
        if reasons:
            yield {
                "experiment": exp.slug,
                "participant": summ.p.public_id,
                "platform_pid": pseudo(summ.p.platform_pid),
                "status": summ.p.status,
                "outcome": summ.p.outcome,
                "reasons": ";".join(r for r, _ in reasons),
                "details": "; ".join(f"{r}: {d}" for r, d in reasons),
            }


# ---------------------------------------------------------------------------- stimuli


@dataclass(frozen=True)
class StimInfo:
    key: str
    kind: str
    set_name: str
    sha256: str
    passed: bool | None
    metrics: dict[str, Any]


class StimulusCache:
    """Stimulus metadata by id, loaded on demand (bounded by the size of the stimulus sets)."""

    def __init__(self) -> None:
        self.items: dict[int, StimInfo] = {}

    def load(self, session: Session, ids: Iterable[int]) -> None:
        missing = {i for i in ids if i is not None and i not in self.items}
        if not missing:
            return
        rows = session.execute(
            sa.select(Stimulus.id, Stimulus.key, Stimulus.kind, StimulusSet.name, Stimulus.media_sha256, Stimulus.passed, Stimulus.metrics)
            .join(StimulusSet, StimulusSet.id == Stimulus.set_id)
            .where(Stimulus.id.in_(missing))
        ).all()
        for sid, key, kind, set_name, sha, passed, metrics in rows:
            self.items[sid] = StimInfo(key, kind, set_name, sha, passed, metrics if isinstance(metrics, dict) else {})


def natural_predictions(session: Session, exp: Experiment) -> dict[int, dict[str, str]]:
    """Natural stimulus id → {model: the model's prediction on it} (from the models' metamers'
    ``pred_natural``), over the experiment's stimulus sets."""
    set_ids = list(session.scalars(sa.select(ExperimentStimulusSet.stimulus_set_id).where(ExperimentStimulusSet.experiment_id == exp.id)))
    naturals = {
        (set_id, key): sid
        for sid, set_id, key in session.execute(
            sa.select(Stimulus.id, Stimulus.set_id, Stimulus.key).where(Stimulus.set_id.in_(set_ids), Stimulus.kind == "natural")
        )
    }
    out: dict[int, dict[str, str]] = defaultdict(dict)
    for set_id, source, model, metrics in session.execute(
        sa.select(Stimulus.set_id, Stimulus.source, Stimulus.model, Stimulus.metrics).where(Stimulus.set_id.in_(set_ids), Stimulus.kind == "metamer")
    ):
        nat = naturals.get((set_id, source))
        if nat is not None and model and isinstance(metrics, dict) and metrics.get("pred_natural") is not None:
            out[nat].setdefault(model, str(metrics["pred_natural"]))
    return dict(out)


def model_layers(session: Session, exp: Experiment) -> dict[str, list[str]]:
    """Each model's layers in depth order, from the experiment's stimulus sets' manifests."""
    out: dict[str, list[str]] = {}
    for sset in exp.stimulus_sets:
        for m in sset.manifest.get("models", []) or []:
            if isinstance(m, dict) and m.get("name") and m["name"] not in out:
                out[m["name"]] = list(m.get("layers") or [])
    return out


def categories(exp: Experiment) -> list[dict[str, Any]]:
    return list(exp.stimulus_sets[0].manifest.get("categories", [])) if exp.stimulus_sets else []


# ---------------------------------------------------------------------------- trials.csv

DURATION_KEYS = ("fixation_ms", "stimulus_ms", "mask_ms", "audio_ms")
CLIENT_KEYS = ("frame_ms", "fixation_frames", "stimulus_frames", "mask_frames", "expected_audio_ms", "presentations")

TRIAL_COLUMNS = [
    "experiment", "participant", "platform", "platform_pid", "study_id", "session_id", "assignment_id", "hit_id", "attempt",
    "participant_status", "participant_outcome", "excluded", "exclusion_reasons",
    "trial_index", "phase", "block", "condition", "model", "layer", "layer_index", "source", "label",
    "stimulus_set", "stimulus_key", "stimulus_kind", "stimulus_sha256",
    "swapped", "swap_reason", "planned_stimulus_key",
    "metamer_passed", "metric_loss", "metric_spearman", "metric_pearson", "metric_snr_db", "metric_steps",
    "model_pred_metamer", "model_pred_natural", "model_correct",
    "answered", "answer", "correct", "rt_ms",
    "shown_at", "responded_at", "received_at",
    *[f"measured_{k}" for k in DURATION_KEYS], *[f"client_{k}" for k in CLIENT_KEYS],
    "n_focus_events", "durations_json", "client_json", "events_json",
]


def _f(d: Mapping[str, Any] | None, k: str) -> Any:
    if not isinstance(d, Mapping):
        return None
    v = d.get(k)
    return v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else None


def trial_rows(
    factory: sessionmaker[Session],
    exp: Experiment,
    pseudo: Pseudonymizer,
    excl: Exclusions | None = None,
    *,
    include_unanswered: bool = False,
) -> Iterator[dict[str, Any]]:
    """trials.csv rows, participant by participant, trial index order."""
    excl = excl or exclusions(factory, exp)
    cache = StimulusCache()
    with factory() as s:
        nat_pred = natural_predictions(s, exp)
    for ids in _chunks(participant_ids(factory, exp.id), TRIAL_CHUNK):
        with factory() as s:
            people = {p.id: p for p in s.scalars(sa.select(Participant).where(Participant.id.in_(ids)))}
            q = (
                sa.select(*_TRIAL_FIELDS)
                .outerjoin(Response, Response.trial_id == Trial.id)
                .where(Trial.participant_id.in_(ids))
                .order_by(Trial.participant_id, Trial.index)
            )
            if not include_unanswered:
                q = q.where(Response.id.is_not(None))
            rows = s.execute(q).all()  # plain rows, no ORM objects: several times faster
            cache.load(s, [r.stimulus_id for r in rows] + [r.planned_stimulus_id for r in rows if r.planned_stimulus_id])
            s.expunge_all()
        for r in rows:
            p = people[r.participant_id]
            yield _trial_row(exp.slug, p, r, cache, nat_pred, pseudo, excl.reasons.get(p.public_id, []))


# Columns read per trial (``index`` is renamed: Row has an ``index`` method).
_TRIAL_FIELDS = (
    Trial.participant_id, Trial.index.label("trial_index"), Trial.phase, Trial.block, Trial.stimulus_id, Trial.condition, Trial.model,
    Trial.layer, Trial.layer_index, Trial.source, Trial.label, Trial.swapped, Trial.swap_reason, Trial.planned_stimulus_id,
    Response.id.label("response_id"), Response.answer, Response.correct, Response.rt_ms, Response.shown_at, Response.responded_at,
    Response.received_at, Response.durations, Response.events, Response.client,
)


def _trial_row(
    slug: str,
    p: Participant,
    t: Any,  # a row of _TRIAL_FIELDS
    cache: StimulusCache,
    nat_pred: Mapping[int, Mapping[str, str]],
    pseudo: Pseudonymizer,
    reasons: list[tuple[str, str]],
) -> dict[str, Any]:
    st = cache.items.get(t.stimulus_id)
    planned = cache.items.get(t.planned_stimulus_id) if t.planned_stimulus_id else None
    # Metrics describe the metamer that was planned: the shown one, or the failed one if swapped.
    metamer = st if st is not None and st.kind == "metamer" else planned
    m = metamer.metrics if metamer is not None else {}
    pred_natural = m.get("pred_natural")
    if pred_natural is None and st is not None and st.kind == "natural" and t.model is None:
        preds = nat_pred.get(t.stimulus_id, {})
        pred_natural = next(iter(preds.values())) if len(preds) == 1 else None
    model_correct: bool | None = None
    if st is not None and st.kind == "metamer" and m.get("pred_metamer") is not None:
        model_correct = str(m["pred_metamer"]) == t.label
    elif st is not None and st.kind == "natural" and pred_natural is not None:
        model_correct = str(pred_natural) == t.label
    answered = t.response_id is not None
    durations = t.durations if isinstance(t.durations, dict) else None
    client = t.client if isinstance(t.client, dict) else None
    events = t.events if isinstance(t.events, list) else None
    row: dict[str, Any] = {
        **identity_columns(slug, p, pseudo),
        "participant_status": p.status,
        "participant_outcome": p.outcome,
        "excluded": bool(reasons),
        "exclusion_reasons": ";".join(x for x, _ in reasons),
        "trial_index": t.trial_index,
        "phase": t.phase,
        "block": t.block,
        "condition": t.condition,
        "model": t.model,
        "layer": t.layer,
        "layer_index": t.layer_index,
        "source": t.source,
        "label": t.label,
        "stimulus_set": st.set_name if st else None,
        "stimulus_key": st.key if st else None,
        "stimulus_kind": st.kind if st else None,
        "stimulus_sha256": st.sha256 if st else None,
        "swapped": bool(t.swapped),
        "swap_reason": t.swap_reason,
        "planned_stimulus_key": planned.key if planned else None,
        "metamer_passed": metamer.passed if metamer is not None else None,
        "metric_loss": _f(m, "loss"),
        "metric_spearman": _f(m, "spearman"),
        "metric_pearson": _f(m, "pearson"),
        "metric_snr_db": _f(m, "snr_db"),
        "metric_steps": _f(m, "steps"),
        "model_pred_metamer": m.get("pred_metamer"),
        "model_pred_natural": pred_natural,
        "model_correct": model_correct,
        "answered": answered,
        "answer": t.answer,
        "correct": t.correct,
        "rt_ms": t.rt_ms,
        "shown_at": t.shown_at,
        "responded_at": t.responded_at,
        "received_at": t.received_at,
        "n_focus_events": sum(1 for e in events if isinstance(e, dict) and e.get("type") in ("blur", "hidden")) if events is not None else None,
        "durations_json": durations,
        "client_json": client,
        "events_json": events,
    }
    for k in DURATION_KEYS:
        row[f"measured_{k}"] = _f(durations, k)
    for k in CLIENT_KEYS:
        row[f"client_{k}"] = _f(client, k)
    return row


# ---------------------------------------------------------------------------- screening.csv

SCREENING_COLUMNS = ["experiment", "participant", "platform_pid", "check", "attempt", "index", "stimulus", "correct_answer", "answer", "correct", "rt_ms", "received_at"]


def screening_rows(factory: sessionmaker[Session], exp: Experiment, pseudo: Pseudonymizer) -> Iterator[dict[str, Any]]:
    for ids in _chunks(participant_ids(factory, exp.id), PARTICIPANT_CHUNK):
        with factory() as s:
            rows = s.execute(
                sa.select(ScreeningTrial, Participant.public_id, Participant.platform_pid)
                .join(Participant, Participant.id == ScreeningTrial.participant_id)
                .where(ScreeningTrial.participant_id.in_(ids))
                .order_by(ScreeningTrial.participant_id, ScreeningTrial.check, ScreeningTrial.attempt, ScreeningTrial.index)
            ).all()
        for st, public_id, pid in rows:
            yield {
                "experiment": exp.slug,
                "participant": public_id,
                "platform_pid": pseudo(pid),
                "check": st.check,
                "attempt": st.attempt,
                "index": st.index,
                "stimulus": st.stimulus,
                "correct_answer": st.correct_answer,
                "answer": st.answer,
                "correct": st.correct,
                "rt_ms": st.rt_ms,
                "received_at": st.received_at,
            }


# ---------------------------------------------------------------------------- accuracy + stats


@dataclass
class Analysis:
    """Everything computed from the main trials of the included participants."""

    rows: list[AccuracyRow]
    levels: list[Level]
    tally: AccuracyTally
    excl: Exclusions
    n_categories: int


def analyse(factory: sessionmaker[Session], exp: Experiment, options: ExportOptions, excl: Exclusions | None = None) -> Analysis:
    """One streamed pass over the included participants' answered main trials."""
    spec = spec_of(exp)
    excl = excl or exclusions(factory, exp)
    with factory() as s:
        exp = s.get(Experiment, exp.id) or exp
        nat_pred = natural_predictions(s, exp)
        layers = model_layers(s, exp)
        n_cat = len(categories(exp))
        ids_by_public = dict(s.execute(sa.select(Participant.public_id, Participant.id).where(Participant.experiment_id == exp.id, REAL)).all())
    levels = analysis.layout(spec.condition_keys, layers)
    tally = AccuracyTally(excl.included)
    included_ids = sorted(ids_by_public[p] for p in excl.included if p in ids_by_public)
    public_of = {v: k for k, v in ids_by_public.items()}
    cache = StimulusCache()
    for ids in _chunks(included_ids, TRIAL_CHUNK * 5):
        with factory() as s:
            rows = s.execute(
                sa.select(Trial.participant_id, Trial.condition, Trial.swapped, Trial.stimulus_id, Trial.label, Response.correct)
                .join(Response, Response.trial_id == Trial.id)
                .where(Trial.participant_id.in_(ids), Trial.phase == "main")
            ).all()
            cache.load(s, [r[3] for r in rows if not r[2]])
        for pid, condition, swapped, stim_id, label, correct in rows:
            if condition is None:
                continue
            model_correct: dict[str, bool | None] = {}
            if not swapped:
                st = cache.items.get(stim_id)
                if st is not None and st.kind == "metamer":
                    pred = st.metrics.get("pred_metamer")
                    model_correct[condition.split("/", 1)[0]] = None if pred is None else str(pred) == label
                elif st is not None and st.kind == "natural":
                    for model, pred in nat_pred.get(stim_id, {}).items():
                        model_correct[model] = pred == label
            tally.add(public_of[pid], condition, bool(correct), swapped=bool(swapped), stimulus_id=stim_id, model_correct=model_correct)
    rows_out = analysis.accuracy_table(tally, levels, excl.included, experiment=exp.slug, n_categories=n_cat, n_boot=options.n_boot, seed=options.seed)
    return Analysis(rows_out, levels, tally, excl, n_cat)


def accuracy_dicts(result: Analysis) -> list[dict[str, Any]]:
    return [asdict(r) for r in result.rows]


def stats_rows(result: Analysis, options: ExportOptions) -> list[stats.StatsRow]:
    out: list[stats.StatsRow] = []
    models = []
    for lv in result.levels:
        if lv.model and lv.model not in models:
            models.append(lv.model)
    for i, model in enumerate(models):
        layer_levels = [lv for lv in result.levels if lv.model == model and lv.condition != NATURAL]
        if not layer_levels:
            continue
        people, human, yoked = analysis.paired_matrix(result.tally, layer_levels, result.excl.included, model)
        with_any = {p for (p, c) in result.tally.cells if p in result.excl.included and c in {lv.condition for lv in layer_levels}}
        out += stats.human_vs_model(
            result.rows[0].experiment if result.rows else "",
            model,
            [lv.layer for lv in layer_levels],
            human,
            yoked,
            n_dropped=len(with_any) - len(people),
            n_permutations=options.n_permutations,
            seed=options.seed + 7919 * i,
        )
    return out


STATS_METHOD = """Human vs model recognition across layers (Metamer Lab, app/stats.py).

Observers: each included participant, and a yoked model observer per participant whose accuracy
in a condition is the model's own accuracy (predicted class == true label) on exactly the stimuli
that participant saw there. Only main trials count; swapped trials (failed metamers replaced by
the natural stimulus) are left out.

Per model: a mixed ANOVA with observer type (human | model) between observers and metamer layer
(depth order) within observers, on proportions correct. Observers without a value at every layer
are dropped (n_dropped). p-values are permutation p-values, (1 + #{F* >= F}) / (1 + n):
  observer       - observer-type labels permuted across observers (whole profiles move);
  layer          - each observer's values permuted across layers, independently per observer;
  observer:layer - each observer's profile centred on its own mean, then labels permuted.
Per layer: paired sign-flip permutation test of mean(human - model), two-sided, with Holm's
adjustment across the model's layers (p_holm).
"""


def stats_text(result: Analysis, rows: Sequence[stats.StatsRow], options: ExportOptions) -> str:
    lines = [STATS_METHOD, f"Permutations: {options.n_permutations}, seed: {options.seed}. Included participants: {len(result.excl.included)}; excluded: {len(result.excl.reasons)}.", ""]
    for r in rows:
        if r.analysis == "mixed_anova":
            lines.append(f"{r.model:20s} {r.effect:16s} F({r.df1},{r.df2}) = {r.value:.3f}  p = {r.p_value:.4g}  (n = {r.n_observers} per group, dropped {r.n_dropped})")
        else:
            lines.append(f"{r.model:20s} layer {r.effect:10s} human - model = {r.value:+.3f}  p = {r.p_value:.4g}  p_holm = {r.p_holm:.4g}")
    return "\n".join(lines) + "\n"


def stats_dicts(rows: Sequence[stats.StatsRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


def figure_bytes(result: Analysis, exp: Experiment, fmt: str) -> bytes:
    from app.figures import accuracy_figure

    return accuracy_figure(result.rows, title=exp.title, fmt=fmt)


# ---------------------------------------------------------------------------- everything


def write_export(
    factory: sessionmaker[Session],
    exp: Experiment,
    out_dir: Path,
    options: ExportOptions,
    *,
    secret_key: str,
    only: Iterable[str] | None = None,
) -> list[Path]:
    """Write the export files (all of :data:`FILES`, or those named in ``only``) into ``out_dir``."""
    wanted = set(only or FILES)
    unknown = wanted - set(FILES)
    if unknown:
        raise ValueError(f"unknown export file(s): {', '.join(sorted(unknown))}; choose from {', '.join(FILES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    pseudo = pseudonymizer(secret_key, exp, options)
    excl = exclusions(factory, exp)
    written: list[Path] = []

    def out(name: str) -> Path:
        written.append(out_dir / name)
        return out_dir / name

    if "trials.csv" in wanted:
        write_csv(out("trials.csv"), TRIAL_COLUMNS, trial_rows(factory, exp, pseudo, excl, include_unanswered=options.include_unanswered))
    if "participants.csv" in wanted:
        write_csv(out("participants.csv"), PARTICIPANT_COLUMNS, participant_rows(factory, exp, pseudo))
    if "screening.csv" in wanted:
        write_csv(out("screening.csv"), SCREENING_COLUMNS, screening_rows(factory, exp, pseudo))
    if "exclusions.csv" in wanted:
        write_csv(out("exclusions.csv"), EXCLUSION_COLUMNS, exclusion_rows(factory, exp, pseudo))
    needs_analysis = wanted & {"accuracy_by_layer.csv", "accuracy_by_layer.svg", "accuracy_by_layer.png", "stats.csv", "stats.txt"}
    if needs_analysis:
        result = analyse(factory, exp, options, excl)
        if "accuracy_by_layer.csv" in wanted:
            write_csv(out("accuracy_by_layer.csv"), ACCURACY_COLUMNS, accuracy_dicts(result))
        for fmt in ("svg", "png"):
            if f"accuracy_by_layer.{fmt}" in wanted:
                out(f"accuracy_by_layer.{fmt}").write_bytes(figure_bytes(result, exp, fmt))
        if wanted & {"stats.csv", "stats.txt"}:
            srows = stats_rows(result, options)
            if "stats.csv" in wanted:
                write_csv(out("stats.csv"), stats.STATS_COLUMNS, stats_dicts(srows))
            if "stats.txt" in wanted:
                out("stats.txt").write_text(stats_text(result, srows, options))
    return written


class _ZipSink:
    """A write-only, non-seekable file object that collects what ZipFile writes, to be drained."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def write(self, b: bytes) -> int:
        self.parts.append(bytes(b))
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def seekable(self) -> bool:
        return False

    def drain(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def zip_stream(entries: Iterable[tuple[str, Callable[[], Iterable[bytes]]]]) -> Iterator[bytes]:
    """A zip archive streamed as it is written: ``entries`` are (name, chunk-iterator factory)."""
    sink = _ZipSink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:  # type: ignore[arg-type]
        for name, make in entries:
            with zf.open(name, "w", force_zip64=True) as f:
                for chunk in make():
                    f.write(chunk)
                    data = sink.drain()
                    if data:
                        yield data
            data = sink.drain()
            if data:
                yield data
    data = sink.drain()
    if data:
        yield data


def bundle_entries(
    factory: sessionmaker[Session], exp: Experiment, options: ExportOptions, *, secret_key: str
) -> list[tuple[str, Callable[[], Iterable[bytes]]]]:
    """The whole export as zip entries, each produced lazily while the archive streams."""
    pseudo = pseudonymizer(secret_key, exp, options)
    state: dict[str, Any] = {}

    def excl() -> Exclusions:
        if "excl" not in state:
            state["excl"] = exclusions(factory, exp)
        return state["excl"]  # type: ignore[no-any-return]

    def result() -> Analysis:
        if "result" not in state:
            state["result"] = analyse(factory, exp, options, excl())
        return state["result"]  # type: ignore[no-any-return]

    def srows() -> list[stats.StatsRow]:
        if "stats" not in state:
            state["stats"] = stats_rows(result(), options)
        return state["stats"]  # type: ignore[no-any-return]

    return [
        ("trials.csv", lambda: csv_chunks(TRIAL_COLUMNS, trial_rows(factory, exp, pseudo, excl(), include_unanswered=options.include_unanswered))),
        ("participants.csv", lambda: csv_chunks(PARTICIPANT_COLUMNS, participant_rows(factory, exp, pseudo))),
        ("screening.csv", lambda: csv_chunks(SCREENING_COLUMNS, screening_rows(factory, exp, pseudo))),
        ("exclusions.csv", lambda: csv_chunks(EXCLUSION_COLUMNS, exclusion_rows(factory, exp, pseudo))),
        ("accuracy_by_layer.csv", lambda: csv_chunks(ACCURACY_COLUMNS, accuracy_dicts(result()))),
        ("accuracy_by_layer.svg", lambda: [figure_bytes(result(), exp, "svg")]),
        ("accuracy_by_layer.png", lambda: [figure_bytes(result(), exp, "png")]),
        ("stats.csv", lambda: csv_chunks(stats.STATS_COLUMNS, stats_dicts(srows()))),
        ("stats.txt", lambda: [stats_text(result(), srows(), options).encode()]),
    ]
