"""Accuracy tables (app/results/analysis.py): participant-level means, SEMs, bootstrap CIs, exclusions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.experiments.spec import ExclusionSpec
from app.results.analysis import (
    AccuracyTally,
    ParticipantFacts,
    accuracy_table,
    bootstrap_ci,
    exclusion_reasons,
    human_matrix,
    layout,
    paired_matrix,
    row_seed,
    sem,
)


def test_sem_is_the_population_sd_over_root_n_by_default_as_in_the_paper() -> None:
    # (1, 1, .5): squared deviations from 5/6 sum to 1/6; population variance 1/18; SEM sqrt(1/18 / 3).
    assert sem([1.0, 1.0, 0.5]) == pytest.approx(math.sqrt(1 / 54))
    assert sem([1.0, 0.0, 0.0]) == pytest.approx(math.sqrt(2 / 27))
    assert sem([0.2, 0.4]) == pytest.approx(0.1 / math.sqrt(2))
    assert math.isnan(sem([0.7])) and math.isnan(sem([]))


def test_sem_with_the_sample_sd_on_request() -> None:
    assert sem([1.0, 1.0, 0.5], ddof=1) == pytest.approx(1 / 6)
    assert sem([1.0, 0.0, 0.0], ddof=1) == pytest.approx(1 / 3)
    assert sem([0.2, 0.4], ddof=1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="ddof"):
        sem([0.2, 0.4], ddof=2)


def test_bootstrap_ci_of_three_values_takes_the_hand_computed_limits() -> None:
    # Means of resamples of (1, 0, 0) are 0, 1/3, 2/3, 1 with probabilities 8/27, 12/27, 6/27, 1/27.
    assert bootstrap_ci([1.0, 0.0, 0.0], seed=3) == (pytest.approx(0.0), pytest.approx(1.0))
    assert bootstrap_ci([0.0, 0.0, 0.5], seed=3) == (pytest.approx(0.0), pytest.approx(0.5))


def test_bootstrap_ci_is_reproducible_and_degenerate_cases_are_sane() -> None:
    x = list(np.random.default_rng(0).random(30))
    assert bootstrap_ci(x, seed=11) == bootstrap_ci(x, seed=11)
    assert bootstrap_ci(x, seed=11) != bootstrap_ci(x, seed=12)
    assert bootstrap_ci([0.4, 0.4, 0.4]) == (pytest.approx(0.4), pytest.approx(0.4))
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_bootstrap_ci_agrees_with_the_normal_approximation_for_large_samples() -> None:
    x = np.random.default_rng(1).random(400)
    lo, hi = bootstrap_ci(list(x), n_boot=4000, seed=2)
    half = 1.96 * x.std(ddof=0) / math.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.006)
    assert hi == pytest.approx(x.mean() + half, abs=0.006)


def test_row_seeds_depend_on_the_row_not_on_the_table() -> None:
    assert row_seed(0, "tiny/fc") == row_seed(0, "tiny/fc")
    assert row_seed(0, "tiny/fc") != row_seed(0, "tiny/conv1") != row_seed(1, "tiny/conv1")


def facts(**kw: object) -> ParticipantFacts:
    base: dict[str, object] = {"participant": "p", "status": "completed", "gate_trials": 4, "gate_min_correct": 3, "gate_answered": 4, "gate_correct": 4}
    return ParticipantFacts(**{**base, **kw})  # type: ignore[arg-type]


def names(f: ParticipantFacts, **rules: object) -> list[str]:
    return [r for r, _ in exclusion_reasons(f, ExclusionSpec(**rules))]  # type: ignore[arg-type]


def test_each_exclusion_rule_applies_on_its_own_and_can_be_switched_off() -> None:
    assert names(facts()) == []
    assert names(facts(status="abandoned")) == ["incomplete"]
    assert names(facts(status="abandoned"), incomplete=False) == []
    assert names(facts(status="screened_out", gate_correct=2)) == ["incomplete", "failed_gate"]
    assert names(facts(gate_correct=2), failed_gate=False) == []
    assert names(facts(gate_answered=2, gate_correct=0, status="started"), incomplete=False) == []  # gate not finished
    assert names(facts(headphone_passed=False)) == ["failed_headphone"]
    assert names(facts(headphone_passed=None)) == []
    assert names(facts(outcome="failed_attention")) == ["failed_attention"]
    assert names(facts(outcome="failed_attention"), failed_attention=False) == []


def test_minimum_natural_accuracy_is_optional_and_needs_natural_trials() -> None:
    f = facts(natural_trials=4, natural_correct=1)
    assert names(f) == []
    assert names(f, min_natural_accuracy=0.5) == ["low_natural_accuracy"]
    assert names(facts(natural_trials=4, natural_correct=2), min_natural_accuracy=0.5) == []
    assert names(facts(natural_trials=0, natural_correct=0), min_natural_accuracy=0.5) == []


def test_a_researchers_exclusion_always_applies_with_its_reason() -> None:
    r = exclusion_reasons(facts(researcher_excluded=True, researcher_reason="asleep"), ExclusionSpec(incomplete=False, failed_gate=False))
    assert r == [("researcher", "asleep")]


def test_layout_puts_natural_first_then_layers_in_depth_order() -> None:
    levels = layout(["tiny/fc", "natural", "tiny/conv1", "big/l2", "big/l1"], {"tiny": ["conv1", "conv2", "fc"], "big": ["l1", "l2"]})
    assert [(lv.model, lv.layer, lv.layer_index) for lv in levels] == [
        ("tiny", "natural", None), ("tiny", "conv1", 0), ("tiny", "fc", 2),
        ("big", "natural", None), ("big", "l1", 0), ("big", "l2", 1),
    ]
    assert [(lv.model, lv.condition) for lv in layout(["natural"], {})] == [("", "natural")]


def test_the_tally_leaves_swapped_trials_out_but_counts_them() -> None:
    t = AccuracyTally()
    t.add("p1", "m/a", True, stimulus_id=1, model_correct={"m": True})
    t.add("p1", "m/a", False, stimulus_id=2, model_correct={"m": False})
    t.add("p1", "m/a", False, swapped=True, stimulus_id=9, model_correct={"m": True})
    cell = t.cells[("p1", "m/a")]
    assert (cell.n, cell.correct, cell.swapped) == (2, 1, 1)
    assert t.model_on_stimuli("m/a", "m") == (2, 0.5)


def test_model_accuracy_uses_only_stimuli_that_included_participants_saw() -> None:
    t = AccuracyTally(included={"in"})
    t.add("in", "m/a", True, stimulus_id=1, model_correct={"m": True})
    t.add("out", "m/a", True, stimulus_id=2, model_correct={"m": False})
    assert t.model_on_stimuli("m/a", "m") == (1, 1.0)


def test_the_accuracy_table_averages_participants_not_trials() -> None:
    t = AccuracyTally()
    # p1 answers 4 natural trials (3 right), p2 answers 1 (right): trial-pooled would be 0.8.
    for ok in (True, True, True, False):
        t.add("p1", "natural", ok, stimulus_id=10 + int(ok), model_correct={"m": True})
    t.add("p2", "natural", True, stimulus_id=20, model_correct={"m": False})
    t.add("p3", "natural", False, stimulus_id=30, model_correct={"m": True})  # excluded below
    rows = accuracy_table(t, layout(["natural", "m/a"], {"m": ["a"]}), {"p1", "p2"}, experiment="x", n_categories=16, n_boot=200)
    nat = rows[0]
    assert (nat.condition, nat.n_participants, nat.n_trials) == ("natural", 2, 5)
    assert nat.human_mean == pytest.approx((0.75 + 1.0) / 2)
    assert nat.human_sem == pytest.approx(0.125 / math.sqrt(2))  # population SD of (.75, 1) is .125
    assert nat.sem_ddof == 0
    assert nat.model_yoked_mean == pytest.approx((1.0 + 0.0) / 2)
    assert nat.chance == pytest.approx(1 / 16)
    empty = rows[1]
    assert empty.n_participants == 0 and math.isnan(empty.human_mean) and math.isnan(empty.human_ci_low)


def test_paired_matrix_keeps_only_observers_with_every_level() -> None:
    t = AccuracyTally()
    for p in ("p1", "p2"):
        t.add(p, "m/a", True, model_correct={"m": True})
    t.add("p1", "m/b", False, model_correct={"m": True})
    people, h, m, dropped = paired_matrix(t, layout(["m/a", "m/b"], {"m": ["a", "b"]}), {"p1", "p2"}, "m")
    assert people == ["p1"] and dropped == 1
    assert h.tolist() == [[1.0, 0.0]] and m.tolist() == [[1.0, 1.0]]


def test_human_matrix_puts_the_shared_natural_condition_in_every_model_column() -> None:
    t = AccuracyTally()
    for p, ok in (("p1", True), ("p2", False), ("p3", True)):
        t.add(p, "natural", ok)
        t.add(p, "a/x", not ok)
        t.add(p, "b/x", True)
    t.add("p4", "natural", True)  # no metamer trial: left out
    people, y, dropped = human_matrix(t, [["natural", "natural"], ["a/x", "b/x"]], {"p1", "p2", "p3", "p4"})
    assert people == ["p1", "p2", "p3"] and dropped == 1
    assert y.shape == (3, 2, 2)
    assert y[:, 0, :].tolist() == [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
    assert y[:, 1, :].tolist() == [[0.0, 1.0], [1.0, 1.0], [0.0, 1.0]]
