"""stats.csv and stats.txt: which statistics an experiment gets, run on the accuracy pass of
:mod:`app.results.accuracy` (the tests themselves are :mod:`app.results.stats`, pure numpy).

* Per model, the human-vs-model split-plot ANOVA under the chosen scheme (default: the paper's,
  natural + every layer as levels) and the paired test at each level.
* Per model, the human-only one-way repeated-measures ANOVA of the layer effect (natural + layers).
* For every set of two or more models with the same number of layers, the human-only level ×
  model repeated-measures ANOVA; when a set has more than two models, also every pair of them.

Each analysis gets its own seed, derived from the export's seed and the analysis's identity
(:func:`app.results.analysis.row_seed`), so its p-values do not change when other models are
added; the seed is in every row.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from app.experiments.spec import NATURAL
from app.results import analysis, stats
from app.results.accuracy import Analysis
from app.results.analysis import SEM_CONVENTIONS, Level, row_seed
from app.results.methods import ComparisonAnalysis, MethodsFacts, ModelAnalysis, methods_paragraph
from app.results.options import ExportOptions


@dataclass
class StatsReport:
    rows: list[stats.StatsRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # analyses that could not run, and why
    mixed: list[ModelAnalysis] = field(default_factory=list)
    layer_effect: list[ModelAnalysis] = field(default_factory=list)
    comparisons: list[ComparisonAnalysis] = field(default_factory=list)


def _models(levels: Sequence[Level]) -> list[str]:
    out: list[str] = []
    for lv in levels:
        if lv.model and lv.model not in out:
            out.append(lv.model)
    return out


def compute_stats(result: Analysis, options: ExportOptions) -> StatsReport:
    """Every statistic the experiment's data supports, as stats.csv rows (with notes on those
    that could not run)."""
    scheme = stats.SCHEMES[options.scheme]
    rep = StatsReport()
    exp, inc, perms = result.experiment, result.excl.included, options.n_permutations
    models = _models(result.levels)
    layers = {m: [lv for lv in result.levels if lv.model == m and lv.condition != NATURAL] for m in models}
    natural = {m: [lv for lv in result.levels if lv.model == m and lv.condition == NATURAL] for m in models}

    for m in models:
        levels = (natural[m] if scheme.natural else []) + layers[m]
        names = [lv.layer for lv in levels]
        people, human, yoked, dropped = analysis.paired_matrix(result.tally, levels, inc, m)
        if scheme.natural and natural[m] and not analysis.per_participant(result.tally, NATURAL, inc, m):
            rep.notes.append(f"{m}: human vs model not analysed: the bank records no prediction of {m} on the natural stimuli (pred_natural), so its yoked observers have no natural level")
        elif len(people) < 2:
            rep.notes.append(f"{m}: human vs model not analysed: {len(people)} participant(s) with a value at every level ({', '.join(names)})")
        else:
            seed = row_seed(options.seed, "mixed_anova", m)
            rep.rows += stats.human_vs_model(exp, m, names, human, yoked, scheme=scheme, n_dropped=dropped, n_permutations=perms, seed=seed)
            if len(levels) >= 2:
                rep.mixed.append(ModelAnalysis(m, names, len(people), dropped))

        hlevels = natural[m] + layers[m]
        hnames = [lv.layer for lv in hlevels]
        people, y, dropped = analysis.human_matrix(result.tally, [[lv.condition] for lv in hlevels], inc)
        if len(hlevels) >= 2 and len(people) >= 2:
            rep.rows += stats.human_only(exp, m, hnames, y[:, :, 0], n_dropped=dropped, n_permutations=perms, seed=row_seed(options.seed, "rm_anova_layer", m))
            rep.layer_effect.append(ModelAnalysis(m, hnames, len(people), dropped))

    by_count: dict[int, list[str]] = {}
    for m in models:
        if layers[m]:
            by_count.setdefault(len(layers[m]), []).append(m)
    for group in by_count.values():
        if len(group) < 2:
            continue
        pairs = [list(p) for p in itertools.combinations(group, 2)] if len(group) > 2 else []
        for ms in [group, *pairs]:
            _between(rep, result, ms, layers, options)
    if len(models) >= 2 and all(len(g) < 2 for g in by_count.values()):
        counts = ", ".join(f"{m} {len(layers[m])}" for m in models)
        rep.notes.append(f"between models not analysed: no two models have the same number of layers ({counts})")
    return rep


def _between(rep: StatsReport, result: Analysis, models: list[str], layers: dict[str, list[Level]], options: ExportOptions) -> None:
    """The level × model ANOVA of human accuracy for ``models`` (equal layer counts): layer j of
    every model is level j; natural, when it is a condition, is level 0 for all of them."""
    table: list[list[str]] = []
    names: list[str] = []
    if any(lv.condition == NATURAL for lv in result.levels):
        table.append([NATURAL] * len(models))
        names.append(NATURAL)
    for j in range(len(layers[models[0]])):
        row = [layers[m][j] for m in models]
        table.append([lv.condition for lv in row])
        layer_names = [lv.layer for lv in row]
        names.append(layer_names[0] if len(set(layer_names)) == 1 else "|".join(layer_names))
    people, y, dropped = analysis.human_matrix(result.tally, table, result.excl.included)
    label = "+".join(models)
    if len(people) < 2:
        rep.notes.append(f"{label}: between models not analysed: {len(people)} participant(s) with a value in every condition")
        return
    seed = row_seed(options.seed, "rm_anova_models", label)
    rep.rows += stats.human_only(result.experiment, label, names, y, n_dropped=dropped, n_permutations=options.n_permutations, seed=seed)
    rep.comparisons.append(ComparisonAnalysis(models, len(names), len(people)))


def stats_dicts(rows: Sequence[stats.StatsRow]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]


_TITLES = {
    "mixed_anova": "Human vs model: split-plot ANOVA, observer (humans | yoked model observers) between, level within",
    "paired_by_layer": "Human vs model at each level: paired sign-flip test of human - model, two-sided, Holm across the model's levels",
    "rm_anova_layer": "Humans only, layer effect: one-way repeated-measures ANOVA over levels",
    "rm_anova_models": "Humans only, between models: two-way repeated-measures ANOVA, level x model (natural is the same column for every model)",
}


def _num(v: float | None, fmt: str) -> str:
    return "n/a" if v is None or v != v else format(v, fmt)


def stats_text(result: Analysis, report: StatsReport, options: ExportOptions) -> str:
    """stats.txt: the settings, every test with F, df, p and partial eta squared, the p formula
    and null of each, and a methods paragraph generated from what actually ran."""
    scheme = stats.SCHEMES[options.scheme]
    excluded = Counter(reason for reasons in result.excl.reasons.values() for reason in {r for r, _ in reasons})
    n_started = len(result.excl.included) + len(result.excl.reasons)
    lines = [
        f"Statistics for experiment {result.experiment} (Metamer Lab)",
        "",
        f"Scheme (human vs model): {scheme.name} - {scheme.summary}.",
        f"Permutations: {options.n_permutations} per test; seed: {options.seed} (each analysis's own seed, derived from it, is in stats.csv).",
        f"Participants: {n_started} started, {len(result.excl.included)} included, {len(result.excl.reasons)} excluded"
        + (f" ({', '.join(f'{r}: {n}' for r, n in sorted(excluded.items()))}; see exclusions.csv)" if excluded else "")
        + ".",
        f"SEM in accuracy_by_layer.csv and the figure: {SEM_CONVENTIONS[options.sem_ddof]}.",
        "Only main trials count; swapped trials (a failed metamer replaced by its natural stimulus) are not scored.",
    ]
    for kind in ("mixed_anova", "paired_by_layer", "rm_anova_layer", "rm_anova_models"):
        rows = [r for r in report.rows if r.analysis == kind]
        if not rows:
            continue
        lines += ["", _TITLES[kind]]
        seen: set[tuple[str, str]] = set()
        for r in rows:
            if (r.model, r.levels) not in seen:
                seen.add((r.model, r.levels))
                who = f"{r.n_observers} participants" + (f" + {r.n_observers} yoked model observers" if kind == "mixed_anova" else "")
                lines.append(f"  {r.model}: levels {', '.join(r.levels.split(';'))}; {who}; dropped {r.n_dropped}; seed {r.seed}")
            if r.statistic == "F":
                lines.append(
                    f"    {r.effect:16s} F({r.df1},{r.df2}) = {_num(r.value, '.4f')}  p = {_num(r.p_value, '.4g')}  partial eta^2 = {_num(r.partial_eta_sq, '.4f')}"
                )
                lines.append(f"    {'':16s} null: {r.permutation}; p = {r.p_formula}")
            else:
                lines.append(f"    {r.effect:16s} human - model = {_num(r.value, '+.4f')}  p = {_num(r.p_value, '.4g')}  p_holm = {_num(r.p_holm, '.4g')}")
        if kind == "paired_by_layer":
            lines.append(f"    (p = {stats.P_SIGN_FLIP.text}; null: {stats.PAIRED_NULL})")
    if report.notes:
        lines += ["", "Not analysed"] + [f"  {n}" for n in report.notes]
    facts = MethodsFacts(
        modality=result.modality,
        n_started=n_started,
        n_included=len(result.excl.included),
        excluded_by_reason={r: excluded[r] for r in analysis.REASONS if excluded.get(r)},
        spec=result.spec,
        scheme=scheme,
        n_permutations=options.n_permutations,
        seed=options.seed,
        sem_convention=SEM_CONVENTIONS[options.sem_ddof],
        mixed=report.mixed,
        layer_effect=report.layer_effect,
        comparisons=report.comparisons,
    )
    lines += ["", "Methods (generated from this analysis; adapt freely)", "", methods_paragraph(facts)]
    return "\n".join(lines) + "\n"
