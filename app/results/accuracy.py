"""Accuracy by layer and the figure, from one streamed pass over the included participants'
answered main trials (the pure computations are :mod:`app.results.analysis`; the statistics on
the same pass are :mod:`app.results.stats_report`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.core.schema import REAL, Experiment, Participant, Response, Trial
from app.experiments.service import spec_of
from app.experiments.spec import ExperimentSpec
from app.results import analysis, summaries
from app.results.analysis import AccuracyRow, AccuracyTally, Level
from app.results.options import ExportOptions
from app.results.predictions import StimulusCache, categories, model_layers, natural_predictions
from app.results.summaries import Exclusions, chunks, exclusions


@dataclass
class Analysis:
    """Everything computed from the main trials of the included participants."""

    rows: list[AccuracyRow]
    levels: list[Level]
    tally: AccuracyTally
    excl: Exclusions
    n_categories: int
    experiment: str  # slug
    spec: ExperimentSpec
    modality: str  # image | audio
    sem_ddof: int


def analyse(factory: sessionmaker[Session], exp: Experiment, options: ExportOptions, excl: Exclusions | None = None) -> Analysis:
    """One streamed pass over the included participants' answered main trials."""
    spec = spec_of(exp)
    excl = excl or exclusions(factory, exp)
    with factory() as s:
        exp = s.get(Experiment, exp.id) or exp
        nat_pred = natural_predictions(s, exp)
        layers = model_layers(s, exp)
        n_cat = len(categories(exp))
        modality = exp.stimulus_sets[0].modality if exp.stimulus_sets else "image"
        ids_by_public = dict(s.execute(sa.select(Participant.public_id, Participant.id).where(Participant.experiment_id == exp.id, REAL)).all())
    levels = analysis.layout(spec.condition_keys, layers)
    tally = AccuracyTally(excl.included)
    included_ids = sorted(ids_by_public[p] for p in excl.included if p in ids_by_public)
    public_of = {v: k for k, v in ids_by_public.items()}
    cache = StimulusCache()
    for ids in chunks(included_ids, summaries.TRIAL_CHUNK * 5):
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
    rows_out = analysis.accuracy_table(
        tally, levels, excl.included, experiment=exp.slug, n_categories=n_cat, n_boot=options.n_boot, seed=options.seed, sem_ddof=options.sem_ddof
    )
    return Analysis(rows_out, levels, tally, excl, n_cat, exp.slug, spec, modality, options.sem_ddof)


def accuracy_dicts(result: Analysis) -> list[dict[str, Any]]:
    return [asdict(r) for r in result.rows]


def figure_bytes(result: Analysis, exp: Experiment, fmt: str) -> bytes:
    from app.results.figures import accuracy_figure

    return accuracy_figure(result.rows, title=exp.title, fmt=fmt)
