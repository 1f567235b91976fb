"""Experiments in the database: creating them from a spec, and the per-experiment design input.

Stimulus sets are immutable once imported, so an experiment's :class:`DesignInput` depends only
on the experiment row; it is cached per process by (experiment id, updated_at). The cache holds
no state that matters across requests: any process rebuilds the same value from the database.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.design import DesignInput, StimRef, source_order
from app.models import Experiment, ExperimentStimulusSet, Stimulus, StimulusSet, utcnow
from app.spec import ExperimentSpec, SetSummary, SpecError, check_against_sets

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
    from app.models import Participant

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


@dataclass(frozen=True)
class ExperimentContext:
    """What serving an experiment needs, derived once per (experiment, version)."""

    spec: ExperimentSpec
    modality: str
    categories: list[dict[str, Any]]
    design: DesignInput
    stimuli: dict[int, tuple[str, str]]  # stimulus id -> (sha256, ext)


_CACHE: OrderedDict[tuple[int, Any], ExperimentContext] = OrderedDict()
_CACHE_SIZE = 32


def _ref(s: Stimulus, set_name: str, multi: bool) -> StimRef:
    def ns(key: str | None) -> str | None:
        return None if key is None else (f"{set_name}:{key}" if multi else key)

    return StimRef(
        id=s.id,
        key=ns(s.key) or "",
        kind=s.kind,
        label=s.label,
        source=ns(s.source),
        model=s.model,
        layer=s.layer,
        layer_index=s.layer_index,
        passed=s.passed,
        fail_reasons=tuple(s.fail_reasons or ()),
    )


def cached_context(exp_id: int, design_seed: int, updated_at: Any) -> ExperimentContext | None:
    """The context if this version of the experiment is already cached in this process; the save
    path asks this first so that it needs no ORM load of the experiment."""
    hit = _CACHE.get((exp_id, design_seed, updated_at))
    if hit is not None:
        _CACHE.move_to_end((exp_id, design_seed, updated_at))
    return hit


def context_for(session: Session, exp: Experiment) -> ExperimentContext:
    """The experiment's spec, categories and design input (cached; stimulus sets never change)."""
    cache_key = (exp.id, exp.design_seed, exp.updated_at)
    hit = cached_context(*cache_key)
    if hit is not None:
        return hit
    spec = spec_of(exp)
    sets = session.scalars(
        sa.select(StimulusSet)
        .join(ExperimentStimulusSet, ExperimentStimulusSet.stimulus_set_id == StimulusSet.id)
        .where(ExperimentStimulusSet.experiment_id == exp.id)
        .order_by(StimulusSet.id)
    ).all()
    multi = len(sets) > 1
    naturals: dict[str, StimRef] = {}
    metamers: dict[tuple[str, str], StimRef] = {}
    practice: list[StimRef] = []
    catch: list[StimRef] = []
    media: dict[int, tuple[str, str]] = {}
    wanted = set(spec.condition_keys)
    for sset in sets:
        for s in session.scalars(sa.select(Stimulus).where(Stimulus.set_id == sset.id).order_by(Stimulus.id)):
            media[s.id] = (s.media_sha256, s.media_ext)
            ref = _ref(s, sset.name, multi)
            if s.kind == "natural":
                naturals[ref.key] = ref
            elif s.kind == "metamer":
                cond = f"{s.model}/{s.layer}"
                if cond in wanted:
                    metamers[(ref.source or "", cond)] = ref
            elif s.kind == "practice":
                practice.append(ref)
            elif s.kind == "catch":
                catch.append(ref)
    n_sources = len(naturals)
    design = DesignInput(
        sources=source_order(naturals, exp.design_seed),
        conditions=tuple(spec.condition_keys),
        naturals=naturals,
        metamers=metamers,
        practice=tuple(practice),
        catch=tuple(catch),
        sources_per_participant=spec.sources_per_participant or n_sources,
        practice_trials=spec.practice.trials,
        gate_trials=spec.gate.trials,
        catch_trials=spec.catch.trials,
        breaks=spec.breaks,
    )
    ctx = ExperimentContext(
        spec=spec,
        modality=sets[0].modality if sets else "image",
        categories=list(sets[0].manifest.get("categories", [])) if sets else [],
        design=design,
        stimuli=media,
    )
    _CACHE[cache_key] = ctx
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return ctx

