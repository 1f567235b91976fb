"""The exports' tables as row dicts, streamed participant by participant: trials.csv,
participants.csv, screening.csv and exclusions.csv. Columns are the ``*_COLUMNS`` constants,
documented in docs/admin-and-exports.md. Researcher previews never appear."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.core.schema import Experiment, Participant, Response, ScreeningTrial, Trial
from app.experiments.service import spec_of
from app.experiments.spec import ExperimentSpec
from app.results import analysis, summaries
from app.results.predictions import StimulusCache, natural_predictions
from app.results.pseudonyms import Pseudonymizer
from app.results.summaries import Exclusions, Summary, chunks, exclusions, iter_summaries, participant_ids

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
    for ids in chunks(participant_ids(factory, exp.id), summaries.TRIAL_CHUNK):
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
    for ids in chunks(participant_ids(factory, exp.id), summaries.PARTICIPANT_CHUNK):
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
