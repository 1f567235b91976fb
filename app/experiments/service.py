"""Experiments in the database: creating and editing them from a spec, their status, the stimulus
set summaries a spec is validated against, and how many participants count.

What serving an experiment needs (its design input, cached per process) is in
:mod:`app.experiments.context`.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.core.schema import COUNTING_STATUSES, PREVIEW_PLATFORM, Experiment, ExperimentStimulusSet, Participant, Stimulus, StimulusSet, utcnow
from app.experiments.spec import ExperimentSpec, SetSummary, SpecError, check_against_sets

STATUSES = ("draft", "active", "paused", "closed")


def set_summaries(session: Session, names: list[str] | None = None) -> dict[str, SetSummary]:
    """Summaries of stimulus sets (all, or those named) for validating experiment specs."""
    q = sa.select(StimulusSet)
    if names is not None:
        q = q.where(StimulusSet.name.in_(names))
    out: dict[str, SetSummary] = {}
    for sset in session.scalars(q):
        rows = session.execute(
            sa.select(Stimulus.kind, Stimulus.key, Stimulus.model, Stimulus.layer).where(Stimulus.set_id == sset.id)
        ).all()
        conditions: dict[str, int] = {}
        for kind, _key, model, layer in rows:
            if kind == "metamer":
                k = f"{model}/{layer}"
                conditions[k] = conditions.get(k, 0) + 1
        out[sset.name] = SetSummary(
            name=sset.name,
            modality=sset.modality,
            categories=sset.manifest.get("categories", []),
            sources=[key for kind, key, _, _ in rows if kind == "natural"],
            conditions=conditions,
            n_practice=sum(1 for r in rows if r[0] == "practice"),
            n_catch=sum(1 for r in rows if r[0] == "catch"),
        )
    return out


def validate_spec(session: Session, spec: ExperimentSpec, *, existing_id: int | None = None) -> list[str]:
    """Every problem of ``spec`` against the database (sets, conditions, slug uniqueness)."""
    problems = check_against_sets(spec, set_summaries(session, spec.stimulus_sets))
    q = sa.select(Experiment.id).where(Experiment.slug == spec.slug)
    other = session.scalar(q)
    if other is not None and other != existing_id:
        problems.append(f"slug: an experiment with slug {spec.slug!r} already exists")
    return problems


def create_experiment(session: Session, spec: ExperimentSpec, *, status: str = "draft") -> Experiment:
    """Validate ``spec`` against the database and add the experiment (caller commits)."""
    problems = validate_spec(session, spec)
    if problems:
        raise SpecError(problems, spec.slug)
    sets = session.scalars(sa.select(StimulusSet).where(StimulusSet.name.in_(spec.stimulus_sets))).all()
    exp = Experiment(
        slug=spec.slug,
        title=spec.title,
        status=status,
        spec=spec.model_dump(mode="json"),
        design_seed=secrets.randbits(62),
        activated_at=utcnow() if status == "active" else None,
    )
    session.add(exp)
    session.flush()
    for sset in sets:
        session.add(ExperimentStimulusSet(experiment_id=exp.id, stimulus_set_id=sset.id))
    session.flush()
    return exp


def update_experiment(session: Session, exp: Experiment, spec: ExperimentSpec) -> Experiment:
    """Replace an experiment's spec. The design-relevant parts are frozen once anyone has started,
    because trial plans already made must stay valid and balanced."""
    problems = validate_spec(session, spec, existing_id=exp.id)
    started = session.scalar(sa.select(sa.func.count()).select_from(Participant).where(Participant.experiment_id == exp.id))
    if started:
        old = ExperimentSpec.model_validate(exp.spec)
        frozen = ("slug", "stimulus_sets", "conditions", "sources_per_participant", "practice", "gate", "catch", "breaks")
        for field in frozen:
            if getattr(old, field) != getattr(spec, field):
                problems.append(f"{field}: cannot change after participants have started ({started} so far)")
    if problems:
        raise SpecError(problems, spec.slug)
    exp.spec = spec.model_dump(mode="json")
    exp.title = spec.title
    exp.slug = spec.slug
    if [s.name for s in exp.stimulus_sets] != spec.stimulus_sets:
        session.execute(sa.delete(ExperimentStimulusSet).where(ExperimentStimulusSet.experiment_id == exp.id))
        for sset in session.scalars(sa.select(StimulusSet).where(StimulusSet.name.in_(spec.stimulus_sets))):
            session.add(ExperimentStimulusSet(experiment_id=exp.id, stimulus_set_id=sset.id))
    exp.updated_at = utcnow()
    session.flush()
    return exp


def set_status(exp: Experiment, status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    exp.status = status
    if status == "active" and exp.activated_at is None:
        exp.activated_at = utcnow()
    if status == "closed":
        exp.closed_at = utcnow()


def spec_of(exp: Experiment) -> ExperimentSpec:
    return ExperimentSpec.model_validate(exp.spec)


def counting(session: Session, exp_id: int) -> int:
    """Participants started or completed, researcher previews left out."""
    return session.scalar(
        sa.select(sa.func.count())
        .select_from(Participant)
        .where(Participant.experiment_id == exp_id, Participant.status.in_(COUNTING_STATUSES), Participant.platform != PREVIEW_PLATFORM)
    ) or 0
