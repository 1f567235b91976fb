"""Per-participant aggregates for the exports, read in small chunks (each its own short
transaction), and who is excluded and why.

Memory stays bounded by the chunk size and the per-participant summaries, never by the number of
trials; no export holds a database transaction open for long (on SQLite every transaction takes
the write lock, so a long read would stall participants' saves).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.core.schema import REAL, Experiment, Participant, Response, ScreeningTrial, Trial
from app.experiments.service import spec_of
from app.experiments.spec import NATURAL, ExperimentSpec
from app.results import analysis
from app.results.analysis import ParticipantFacts

PARTICIPANT_CHUNK = 200  # participants per facts query
TRIAL_CHUNK = 20  # participants per trial query (a few thousand rows)


def participant_ids(factory: sessionmaker[Session], exp_id: int) -> list[int]:
    """Database ids of the experiment's real participants, in arrival order (ints only)."""
    with factory() as s:
        return list(s.scalars(sa.select(Participant.id).where(Participant.experiment_id == exp_id, REAL).order_by(Participant.id)))


def chunks(ids: Sequence[int], n: int) -> Iterator[Sequence[int]]:
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
    for ids in chunks(participant_ids(factory, exp_id), PARTICIPANT_CHUNK):
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
