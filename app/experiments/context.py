"""What serving an experiment needs, derived once per (experiment, version) and cached per process.

Stimulus sets are immutable once imported, so an experiment's :class:`DesignInput` depends only
on the experiment row; it is cached per process by (experiment id, design seed, updated_at). The
cache holds no state that matters across requests: any process rebuilds the same value from the
database.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.core.schema import Experiment, ExperimentStimulusSet, Stimulus, StimulusSet
from app.experiments.design import DesignInput, StimRef, source_order
from app.experiments.service import spec_of
from app.experiments.spec import ExperimentSpec


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



def context_by_id(session: Session, exp_id: int) -> ExperimentContext:
    """:func:`context_for` the experiment with id ``exp_id`` (e.g. a participant's ``experiment_id``).

    The threaded save passes a session on its own connection (a second connection would wait on
    SQLite's write lock, held by that one); the async save a session of its own, in a thread."""
    exp = session.get(Experiment, exp_id)
    assert exp is not None
    return context_for(session, exp)
