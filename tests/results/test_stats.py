"""The human-vs-model mixed ANOVA with permutation p-values (app/results/stats.py).

Tests use a few hundred permutations; the exports default to 10,000."""

from __future__ import annotations

import numpy as np
import pytest

from app.results.stats import holm, human_vs_model, mixed_anova_F, permutation_mixed_anova, sign_flip_test

N, L = 20, 6


def _data(rng: np.random.Generator, human_curve: np.ndarray, model_curve: np.ndarray, sd: float = 0.12) -> tuple[np.ndarray, np.ndarray]:
    human = np.clip(human_curve + rng.normal(0, sd, (N, L)) + rng.normal(0, 0.05, (N, 1)), 0, 1)
    model = np.clip(model_curve + rng.normal(0, sd, (N, L)) + rng.normal(0, 0.05, (N, 1)), 0, 1)
    return human, model


def _ss_by_regression(y: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """F statistics from nested least-squares fits (an independent route to the same ANOVA)."""
    n, n_lev = y.shape
    Y = y.ravel()
    subj = np.repeat(np.arange(n), n_lev)
    lev = np.tile(np.arange(n_lev), n)
    grp = np.repeat(groups, n_lev)

    def dummies(v: np.ndarray) -> np.ndarray:
        u = np.unique(v)
        return (v[:, None] == u[None, 1:]).astype(float)

    def rss(*blocks: np.ndarray) -> float:
        X = np.hstack([np.ones((Y.size, 1)), *blocks])
        beta, *_ = np.linalg.lstsq(X, Y, rcond=None)
        r = Y - X @ beta
        return float(r @ r)

    A, S, B = dummies(grp), dummies(subj), dummies(lev)
    r0, ra, ras, rasb, rfull = rss(), rss(A), rss(A, S), rss(A, S, B), rss(A, S, B, A * B)
    df_s, df_res = n - 2, (n - 2) * (n_lev - 1)
    return {
        "observer": (r0 - ra) / ((ra - ras) / df_s),
        "layer": ((ras - rasb) / (n_lev - 1)) / (rfull / df_res),
        "observer:layer": ((rasb - rfull) / (n_lev - 1)) / (rfull / df_res),
    }


def test_F_statistics_match_an_independent_least_squares_computation() -> None:
    rng = np.random.default_rng(5)
    human, model = _data(rng, np.linspace(0.9, 0.2, L), np.full(L, 0.8))
    y = np.vstack([human, model])
    groups = np.r_[np.zeros(N, int), np.ones(N, int)]
    ours = mixed_anova_F(y, groups)
    ref = _ss_by_regression(y, groups)
    for k in ref:
        assert float(ours[k]) == pytest.approx(ref[k], rel=1e-9), k


def test_a_planted_human_model_difference_is_detected() -> None:
    rng = np.random.default_rng(7)
    # Humans fail on deep-layer metamers; the model recognizes them all (as in the paper).
    human, model = _data(rng, np.linspace(0.9, 0.1, L), np.full(L, 0.9))
    effects = {e.effect: e for e in permutation_mixed_anova(human, model, n_permutations=500, seed=1)}
    assert effects["observer"].p_value < 0.01
    assert effects["observer:layer"].p_value < 0.01
    assert effects["layer"].p_value < 0.01
    assert effects["observer"].p_value >= 1 / 501  # a permutation p-value is never 0


def test_a_null_difference_is_not_flagged() -> None:
    rng = np.random.default_rng(8)
    curve = np.linspace(0.9, 0.3, L)  # both decline the same way: a layer effect, nothing else
    human, model = _data(rng, curve, curve)
    effects = {e.effect: e for e in permutation_mixed_anova(human, model, n_permutations=500, seed=1)}
    assert effects["observer"].p_value > 0.05
    assert effects["observer:layer"].p_value > 0.05
    assert effects["layer"].p_value < 0.01


def test_false_positive_rate_is_near_the_nominal_level() -> None:
    rng = np.random.default_rng(9)
    hits = {"observer": 0, "observer:layer": 0}
    runs = 40
    for i in range(runs):
        curve = rng.uniform(0.3, 0.9, L)
        human, model = _data(rng, curve, curve)
        for e in permutation_mixed_anova(human, model, n_permutations=199, seed=i):
            if e.effect in hits and e.p_value <= 0.05:
                hits[e.effect] += 1
    # Nominal 5%: 2 of 40 expected; more than 6 would be a badly miscalibrated test.
    assert hits["observer"] <= 6 and hits["observer:layer"] <= 6, hits


def test_permutations_are_seeded() -> None:
    rng = np.random.default_rng(10)
    human, model = _data(rng, np.linspace(0.8, 0.4, L), np.linspace(0.7, 0.5, L))
    a = permutation_mixed_anova(human, model, n_permutations=300, seed=4)
    b = permutation_mixed_anova(human, model, n_permutations=300, seed=4)
    c = permutation_mixed_anova(human, model, n_permutations=300, seed=5)
    assert a == b and a != c


def test_sign_flip_test_detects_a_paired_difference_and_ignores_none() -> None:
    rng = np.random.default_rng(11)
    mean, p = sign_flip_test(0.3 + rng.normal(0, 0.1, 20), n_permutations=1000, seed=0)
    assert mean == pytest.approx(0.3, abs=0.06) and p < 0.01
    assert sign_flip_test(np.zeros(10), n_permutations=100)[1] == 1.0
    assert sign_flip_test(rng.normal(0, 0.1, 20), n_permutations=1000, seed=0)[1] > 0.05


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.5, float("nan")])
    assert adjusted[0] == 0.5 and np.isnan(adjusted[1])


def test_human_vs_model_reports_anova_and_per_layer_rows() -> None:
    rng = np.random.default_rng(12)
    human, model = rng.random((5, 3)), rng.random((5, 3))
    rows = human_vs_model("exp", "m", ["a", "b", "c"], human, model, n_permutations=100, seed=0)
    assert [(r.analysis, r.effect) for r in rows] == [
        ("mixed_anova", "observer"), ("mixed_anova", "layer"), ("mixed_anova", "observer:layer"),
        ("paired_by_layer", "a"), ("paired_by_layer", "b"), ("paired_by_layer", "c"),
    ]
    assert rows[0].df1 == 1 and rows[0].df2 == 8 and rows[1].df2 == 16
    assert human_vs_model("exp", "m", ["a"], human[:1, :1], model[:1, :1]) == []  # one observer: no test


def test_the_fast_relabeling_path_agrees_with_the_general_F() -> None:
    from app.results.stats import two_group_F

    rng = np.random.default_rng(13)
    y = rng.random((12, 4))
    labels = np.r_[np.zeros(6, int), np.ones(6, int)]
    perms = np.stack([rng.permutation(labels) for _ in range(25)])
    fast_a, fast_ab = two_group_F(y, perms)
    for i, g in enumerate(perms):
        general = mixed_anova_F(y, g)
        assert fast_a[i] == pytest.approx(float(general["observer"]), rel=1e-9)
        assert fast_ab[i] == pytest.approx(float(general["observer:layer"]), rel=1e-9)
