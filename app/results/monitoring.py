"""Live monitoring of an experiment for the admin panel: who is where, how balanced the design is.

All numbers come from SQL aggregates (no trial rows are loaded) and leave researcher previews out.

Balancing has two views:

* **rows** of the Latin square: slot k takes source block ``k mod B`` with condition rotation
  ``(k div B) mod C``, so slots k and k + B·C plan the same row; after every ``B·C`` counting
  participants each (source, condition) cell has been planned equally often. The table lists, per
  row, how many completed it and who is on it now.
* **coverage**: answered main trials per (source, condition) cell, over real, not researcher-
  excluded participants, summarized per condition (min / max over sources) with the full matrix.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.core.schema import REAL, Experiment, Participant, Response, Trial
from app.experiments.context import context_for
from app.experiments.design import blocks_of

STATUSES = ("started", "completed", "screened_out", "returned", "abandoned")


@dataclass
class SlotRow:
    """One row of the Latin square. Slots k, k + period, k + 2·period… all plan this same row."""

    row: int
    block: int
    rotation: int
    completed: int  # participants who completed with a plan slot on this row
    in_progress: int  # started participants holding a slot on this row
    holders: list[str]  # public ids of (up to 5 of) those in progress


@dataclass
class Monitor:
    status_counts: dict[str, int]
    outcome_counts: dict[str, int]
    total: int
    researcher_excluded: int
    median_minutes: float | None
    gate: dict[str, int]  # passed / failed / pending
    headphone: dict[str, int]  # passed / failed / pending
    period: int | None
    n_blocks: int | None
    slots: list[SlotRow]
    conditions: list[str]
    coverage: dict[str, dict[str, int]]  # source -> condition -> answered trials
    coverage_summary: dict[str, dict[str, int]] = field(default_factory=dict)  # condition -> min/max/total

    def rate(self, d: dict[str, int]) -> float | None:
        decided = d.get("passed", 0) + d.get("failed", 0)
        return d.get("passed", 0) / decided if decided else None

    def as_json(self) -> dict[str, Any]:
        return {
            "status_counts": self.status_counts,
            "outcome_counts": self.outcome_counts,
            "total": self.total,
            "researcher_excluded": self.researcher_excluded,
            "median_minutes": self.median_minutes,
            "gate": {**self.gate, "rate": self.rate(self.gate)},
            "headphone": {**self.headphone, "rate": self.rate(self.headphone)},
            "period": self.period,
            "slots": [s.__dict__ for s in self.slots],
            "coverage_summary": self.coverage_summary,
        }


def monitor(session: Session, exp: Experiment) -> Monitor:
    ctx = context_for(session, exp)
    spec = ctx.spec
    base = sa.and_(Participant.experiment_id == exp.id, REAL)
    status_counts = Counter({s: 0 for s in STATUSES})
    for status, n in session.execute(sa.select(Participant.status, sa.func.count()).where(base).group_by(Participant.status)):
        status_counts[status] += n
    outcome_counts = dict(
        session.execute(sa.select(Participant.outcome, sa.func.count()).where(base, Participant.outcome.is_not(None)).group_by(Participant.outcome)).all()
    )
    excluded = session.scalar(sa.select(sa.func.count()).select_from(Participant).where(base, Participant.excluded.is_(True))) or 0
    durations = [
        (b - a).total_seconds() / 60.0
        for a, b in session.execute(sa.select(Participant.created_at, Participant.completed_at).where(base, Participant.status == "completed", Participant.completed_at.is_not(None)))
    ]
    median = round(statistics.median(durations), 2) if durations else None

    gate = {"passed": 0, "failed": 0, "pending": 0}
    if spec.gate.trials:
        ok = sa.func.sum(sa.case((Response.correct.is_(True), 1), else_=0))
        answered = dict(
            (pid, (n, k or 0))
            for pid, n, k in session.execute(
                sa.select(Response.participant_id, sa.func.count(Response.id), ok)
                .join(Trial, Trial.id == Response.trial_id)
                .join(Participant, Participant.id == Response.participant_id)
                .where(base, Trial.phase == "gate")
                .group_by(Response.participant_id)
            )
        )
        for pid, status in session.execute(sa.select(Participant.id, Participant.status).where(base)):
            n, k = answered.get(pid, (0, 0))
            if n >= spec.gate.trials:
                gate["passed" if k >= spec.gate.min_correct else "failed"] += 1
            elif status == "started":
                gate["pending"] += 1
    headphone = {"passed": 0, "failed": 0, "pending": 0}
    if spec.headphone.check != "none":
        for passed, n in session.execute(sa.select(Participant.headphone_passed, sa.func.count()).where(base).group_by(Participant.headphone_passed)):
            headphone["pending" if passed is None else "passed" if passed else "failed"] += n

    design = ctx.design
    n_sources, n_cond = len(design.sources), len(design.conditions)
    period = n_blocks = None
    slots: list[SlotRow] = []
    try:
        n_blocks = blocks_of(n_sources, design.sources_per_participant)
        period = n_blocks * n_cond
    except ValueError:
        pass
    if period:
        completed: Counter[int] = Counter()
        for plan_slot, n in session.execute(
            sa.select(Participant.plan_slot, sa.func.count()).where(base, Participant.status == "completed").group_by(Participant.plan_slot)
        ):
            completed[plan_slot % period] += n
        running: dict[int, list[str]] = {}
        for slot, pub in session.execute(
            sa.select(Participant.slot, Participant.public_id).where(base, Participant.status == "started", Participant.slot.is_not(None)).order_by(Participant.slot)
        ):
            running.setdefault(slot % period, []).append(pub)
        for k in range(period):
            slots.append(SlotRow(k, k % n_blocks, (k // n_blocks) % n_cond, completed.get(k, 0), len(running.get(k, [])), running.get(k, [])[:5]))

    coverage: dict[str, dict[str, int]] = defaultdict(dict)
    for source, condition, n in session.execute(
        sa.select(Trial.source, Trial.condition, sa.func.count(Response.id))
        .join(Response, Response.trial_id == Trial.id)
        .join(Participant, Participant.id == Trial.participant_id)
        .where(base, Participant.excluded.is_(False), Trial.phase == "main")
        .group_by(Trial.source, Trial.condition)
    ):
        if source is not None and condition is not None:
            coverage[source][condition] = n
    summary: dict[str, dict[str, int]] = {}
    for c in design.conditions:
        vals = [coverage.get(s, {}).get(c, 0) for s in design.sources]
        summary[c] = {"min": min(vals) if vals else 0, "max": max(vals) if vals else 0, "total": sum(vals)}
    return Monitor(
        status_counts=dict(status_counts),
        outcome_counts=outcome_counts,
        total=sum(status_counts.values()),
        researcher_excluded=excluded,
        median_minutes=median,
        gate=gate,
        headphone=headphone,
        period=period,
        n_blocks=n_blocks,
        slots=slots,
        conditions=list(design.conditions),
        coverage={s: coverage.get(s, {}) for s in sorted(design.sources)},
        coverage_summary=summary,
    )
