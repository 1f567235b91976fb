"""Accuracy by layer, statistics and the figure, from one streamed pass over the included
participants' answered main trials (the pure computations are :mod:`app.results.analysis` and
:mod:`app.results.stats`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.core.schema import REAL, Experiment, Participant, Response, Trial
from app.experiments.service import spec_of
from app.experiments.spec import NATURAL
from app.results import analysis, stats, summaries
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


STATS_METHOD = """Human vs model recognition across layers (Metamer Lab, app/results/stats.py).

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
    from app.results.figures import accuracy_figure

    return accuracy_figure(result.rows, title=exp.title, fmt=fmt)
