"""Which statistics an experiment gets (app/results/stats_report.py), on hand-made accuracy tallies:
no database, the same Analysis object the exports build."""

from __future__ import annotations

import random

from app.experiments.spec import NATURAL, parse_spec
from app.results.accuracy import Analysis
from app.results.analysis import AccuracyTally, layout
from app.results.options import ExportOptions
from app.results.stats_report import compute_stats, stats_text
from app.results.summaries import Exclusions

PEOPLE = [f"p{i}" for i in range(5)]


def _analysis(model_layers: dict[str, list[str]], *, natural_predictions: bool = True) -> Analysis:
    """Five participants, two trials per condition, answers and model decisions drawn at random
    (seeded), so every F is finite."""
    conditions = [NATURAL] + [f"{m}/{lay}" for m, layers in model_layers.items() for lay in layers]
    tally = AccuracyTally(set(PEOPLE))
    rng = random.Random(1)
    stim = 0
    for p in PEOPLE:
        for c in conditions:
            for _ in range(2):
                stim += 1
                if c == NATURAL:
                    decisions = {m: rng.random() < 0.9 for m in model_layers} if natural_predictions else {}
                else:
                    decisions = {c.split("/")[0]: rng.random() < 0.8}
                tally.add(p, c, rng.random() < 0.6, stimulus_id=stim, model_correct=decisions)
    spec = parse_spec({"slug": "study", "title": "Study", "stimulus_sets": ["b"], "conditions": conditions})
    return Analysis([], layout(conditions, model_layers), tally, Exclusions({}, set(PEOPLE)), 4, "study", spec, "image", 0)


def _kinds(rows: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return sorted({(r.analysis, r.model) for r in rows})


def test_models_with_equal_layer_counts_are_compared_all_together_and_in_pairs() -> None:
    result = _analysis({"a": ["x", "y"], "b": ["x", "y"], "c": ["u", "v"], "d": ["x"]})
    report = compute_stats(result, ExportOptions(n_permutations=50))
    between = sorted({r.model for r in report.rows if r.analysis == "rm_anova_models"})
    assert between == ["a+b", "a+b+c", "a+c", "b+c"]  # d has one layer: compared with nobody
    levels = {r.levels for r in report.rows if r.analysis == "rm_anova_models" and r.model == "a+c"}
    assert levels == {"natural;x|u;y|v"}  # layer j of each model is level j; names differ, so both are given
    assert {r.levels for r in report.rows if r.model == "a+b"} == {"natural;x;y"}
    assert not report.notes


def test_no_comparison_when_no_two_models_have_the_same_number_of_layers() -> None:
    report = compute_stats(_analysis({"a": ["x", "y"], "b": ["x"]}), ExportOptions(n_permutations=50))
    assert "rm_anova_models" not in {r.analysis for r in report.rows}
    assert report.notes == ["between models not analysed: no two models have the same number of layers (a 2, b 1)"]


def test_without_the_models_natural_predictions_the_paper_scheme_says_why_it_cannot_run() -> None:
    result = _analysis({"a": ["x", "y"]}, natural_predictions=False)
    report = compute_stats(result, ExportOptions(n_permutations=50))
    assert "mixed_anova" not in {r.analysis for r in report.rows}
    assert "rm_anova_layer" in {r.analysis for r in report.rows}  # human data alone still tell the layer effect
    (note,) = report.notes
    assert "a: human vs model not analysed" in note and "pred_natural" in note
    assert note in stats_text(result, report, ExportOptions(n_permutations=50))
    centred = compute_stats(result, ExportOptions(n_permutations=50, scheme="centred"))  # layers only: runs
    assert {r.levels for r in centred.rows if r.analysis == "mixed_anova"} == {"x;y"}


def test_each_analysis_seed_depends_on_its_identity_not_on_the_other_models() -> None:
    alone = compute_stats(_analysis({"a": ["x", "y"]}), ExportOptions(n_permutations=50, seed=3))
    with_b = compute_stats(_analysis({"a": ["x", "y"], "b": ["x", "y"]}), ExportOptions(n_permutations=50, seed=3))
    seeds = lambda rep: {(r.analysis, r.effect): r.seed for r in rep.rows if r.model == "a"}  # noqa: E731
    assert seeds(alone) == seeds(with_b)
    assert len({r.seed for r in with_b.rows if r.analysis == "mixed_anova"}) == 2  # one per model
