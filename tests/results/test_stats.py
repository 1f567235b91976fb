"""The statistics (app/results/stats.py): the three ANOVAs, their permutation nulls and p formulas.

F statistics, degrees of freedom and partial eta squared are checked against pingouin (an
independent implementation, installed with the dev extra only) and against nested least-squares
fits; the permutation schemes are checked against exact nulls enumerated over every permutation
of small data sets. Tests use a few hundred to a few thousand permutations; exports default to
10,000."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pingouin as pg  # the independent implementation (dev extra); a missing one fails, never skips
import pytest

from app.results import stats
from app.results.stats import (
    CENTRED,
    FEATHER2023,
    P_GE,
    P_GT,
    P_PLUS_ONE,
    holm,
    human_only,
    human_vs_model,
    mixed_anova_F,
    partial_eta_squared,
    permutation_mixed_anova,
    permutation_p,
    permutation_rm_anova_layer,
    permutation_rm_anova_models,
    rm_anova2_F,
    rm_anova_F,
    sign_flip_test,
)


N, L = 20, 6


def _data(rng: np.random.Generator, human_curve: np.ndarray, model_curve: np.ndarray, sd: float = 0.12) -> tuple[np.ndarray, np.ndarray]:
    human = np.clip(human_curve + rng.normal(0, sd, (N, L)) + rng.normal(0, 0.05, (N, 1)), 0, 1)
    model = np.clip(model_curve + rng.normal(0, sd, (N, L)) + rng.normal(0, 0.05, (N, 1)), 0, 1)
    return human, model


# ------------------------------------------------------------------------------ F, df, partial eta squared


def _quiet(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize(("seed", "n", "n_lev"), [(1, 5, 3), (2, 12, 8), (3, 20, 9)])
def test_the_mixed_anova_agrees_with_pingouin_on_random_balanced_data(seed: int, n: int, n_lev: int) -> None:
    rng = np.random.default_rng(seed)
    human, model = rng.random((n, n_lev)), rng.random((n, n_lev)) * 0.8
    long = pd.DataFrame(
        [{"subject": f"{g}{i}", "observer": g, "level": j, "acc": arr[i, j]} for g, arr in (("human", human), ("model", model)) for i in range(n) for j in range(n_lev)]
    )
    ref = _quiet(pg.mixed_anova, long, dv="acc", within="level", subject="subject", between="observer", correction=False, effsize="np2").set_index("Source")
    ours = {e.effect: e for e in permutation_mixed_anova(human, model, n_permutations=10, seed=0)}
    for effect, source in (("observer", "observer"), ("layer", "level"), ("observer:layer", "Interaction")):
        e = ours[effect]
        assert (e.df1, e.df2) == (ref.loc[source, "DF1"], ref.loc[source, "DF2"]), effect
        assert e.F == pytest.approx(ref.loc[source, "F"], rel=1e-9), effect
        assert e.partial_eta_sq == pytest.approx(ref.loc[source, "np2"], rel=1e-9), effect


@pytest.mark.parametrize(("seed", "n", "n_lev", "n_mod"), [(4, 6, 4, 2), (5, 10, 9, 2), (6, 8, 5, 3)])
def test_the_level_by_model_anova_agrees_with_pingouin_on_random_balanced_data(seed: int, n: int, n_lev: int, n_mod: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random((n, n_lev, n_mod))
    y[:, 0, :] = y[:, :1, 0]  # natural: the same column for every model, as in the exports
    long = pd.DataFrame([{"subject": i, "level": j, "model": k, "acc": y[i, j, k]} for i in range(n) for j in range(n_lev) for k in range(n_mod)])
    ref = _quiet(pg.rm_anova, long, dv="acc", within=["level", "model"], subject="subject", correction=False, effsize="np2").set_index("Source")
    ours = {e.effect: e for e in permutation_rm_anova_models(y, n_permutations=10, seed=0)}
    for effect, source in (("layer", "level"), ("model", "model"), ("layer:model", "level * model")):
        e = ours[effect]
        assert (e.df1, e.df2) == (ref.loc[source, "ddof1"], ref.loc[source, "ddof2"]), effect
        assert e.F == pytest.approx(ref.loc[source, "F"], rel=1e-9), effect
        assert e.partial_eta_sq == pytest.approx(ref.loc[source, "np2"], rel=1e-9), effect


@pytest.mark.parametrize(("seed", "n", "n_lev"), [(7, 4, 3), (8, 20, 9)])
def test_the_layer_effect_anova_agrees_with_pingouin_on_random_balanced_data(seed: int, n: int, n_lev: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random((n, n_lev))
    long = pd.DataFrame([{"subject": i, "level": j, "acc": y[i, j]} for i in range(n) for j in range(n_lev)])
    ref = _quiet(pg.rm_anova, long, dv="acc", within="level", subject="subject", correction=False, effsize="np2", detailed=True).set_index("Source")
    e = permutation_rm_anova_layer(y, n_permutations=10, seed=0)
    assert (e.df1, e.df2) == (ref.loc["level", "DF"], ref.loc["Error", "DF"])
    assert e.F == pytest.approx(ref.loc["level", "F"], rel=1e-9)
    assert e.partial_eta_sq == pytest.approx(ref.loc["level", "np2"], rel=1e-9)


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


def test_the_one_way_anova_by_hand() -> None:
    # Subjects (1, 3) and (2, 6): level means 1.5, 4.5; grand mean 3; SS_level = 2 * (1.5² + 1.5²) = 9;
    # residuals y - S - B + M = ±0.5 → SS_error = 1 on 1 df; F = 9 / 1 = 9, partial eta² = 9 / 10.
    y = np.array([[1.0, 3.0], [2.0, 6.0]])
    assert float(rm_anova_F(y)) == pytest.approx(9.0)
    assert partial_eta_squared(9.0, 1, 1) == pytest.approx(0.9)


def test_the_split_plot_anova_by_hand() -> None:
    # Humans (1, 0), (1, 1); models (0, 0), (0, 1); 2 levels; grand mean M = 1/2.
    # Observer means .5, 1, 0, .5; group means 3/4, 1/4:
    #   SS_A = 2 * (2 * 1/16 + 2 * 1/16) = 1/2 (df 1); SS_S/A = 2 * 4 * 1/16 = 1/2 (df 2) → F_A = 2.
    # Level means 1/2, 1/2 → SS_B = 0. Cells: humans (1, 1/2), models (0, 1/2):
    #   sum_g n_g sum_j (C_gj - M)² = 2 * 1/4 + 2 * 1/4 = 1 → SS_AB = 1 - 1/2 - 0 = 1/2 (df 1).
    # Within-observer SS = 1/2 + 0 + 0 + 1/2 = 1 → SS_res = 1 - 0 - 1/2 = 1/2 (df 2) → F_AB = 2.
    y = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
    f = mixed_anova_F(y, np.array([0, 0, 1, 1]))
    assert float(f["observer"]) == pytest.approx(2.0)
    assert float(f["layer"]) == pytest.approx(0.0)
    assert float(f["observer:layer"]) == pytest.approx(2.0)


# ------------------------------------------------------------------------------ p formulas


def test_the_paper_p_counts_permuted_F_at_least_as_large_over_N_with_a_floor() -> None:
    null = np.array([1.0, 2.0, 3.0, 4.0])
    assert permutation_p(3.0, null, P_GE, 4) == 0.5  # 3 and 4 are >= 3
    assert permutation_p(3.0, null, P_GT, 4) == 0.25  # only 4 is > 3
    assert permutation_p(9.0, null, P_GE, 4) == 0.25  # none: floored at 1/N
    assert permutation_p(3.0, null, P_PLUS_ONE, 4) == pytest.approx(3 / 5)
    # A tie up to rounding counts as ">=" and not as ">".
    assert permutation_p(3.0, np.array([3.0 * (1 + 1e-13), 0.0]), P_GE, 2) == 0.5
    assert permutation_p(3.0, np.array([3.0 * (1 + 1e-13), 0.0]), P_GT, 2) == 0.5  # floored, 0 counted
    assert permutation_p(3.0, np.array([3.0 * (1 + 1e-13), 5.0]), P_GT, 2) == 0.5


def test_an_F_that_cannot_be_computed_is_not_extreme_but_stays_in_N() -> None:
    assert permutation_p(2.0, np.array([np.nan, 3.0, 1.0, np.nan]), P_GE, 4) == 0.25
    assert permutation_p(2.0, np.array([np.nan, 3.0, 1.0, np.nan]), P_PLUS_ONE, 4) == pytest.approx(2 / 3)
    assert math.isnan(permutation_p(math.nan, np.array([1.0]), P_GE, 1))


def test_partial_eta_squared() -> None:
    assert partial_eta_squared(467.84, 1, 38) == pytest.approx(0.92488, abs=1e-5)  # F(1,38) = 467.84
    assert math.isnan(partial_eta_squared(math.nan, 1, 10))


# ------------------------------------------------------------------------------ the permutation schemes, exactly


def _exact_p(observed: float, null: np.ndarray, strict: bool = False) -> float:
    null = null[np.isfinite(null)]
    hits = null > observed * (1 + 1e-9) + 1e-12 if strict else null >= observed * (1 - 1e-9) - 1e-12
    return float(hits.mean())


def _labelings(groups: np.ndarray) -> np.ndarray:
    """Every distinct assignment of the observed group labels to observers."""
    n = len(groups)
    ones = int(groups.sum())
    out = [np.isin(np.arange(n), c).astype(int) for c in itertools.combinations(range(n), ones)]
    return np.array(out)


def _all_orders(n_rows: int, n_lev: int) -> np.ndarray:
    """Every combination of one level order per row: (n_lev!^n_rows, n_rows, n_lev)."""
    perms = list(itertools.permutations(range(n_lev)))
    return np.array([list(c) for c in itertools.product(perms, repeat=n_rows)])


# Two humans and two yoked model observers at three levels, chosen so that the two schemes disagree.
SMALL_H = np.array([[0.9, 0.8, 0.2], [0.7, 0.9, 0.1]])
SMALL_M = np.array([[0.8, 0.9, 0.9], [0.6, 0.5, 0.8]])


def _exact_mixed_nulls() -> dict[str, np.ndarray]:
    y = np.vstack([SMALL_H, SMALL_M])
    groups = np.array([0, 0, 1, 1])
    labels = _labelings(groups)
    orders = _all_orders(4, 3)
    shuffled = np.take_along_axis(np.broadcast_to(y, orders.shape), orders, axis=2)  # (1296, 4, 3)
    joint_y = np.repeat(shuffled, len(labels), axis=0)
    joint_g = np.tile(labels, (len(shuffled), 1))
    centred = y - y.mean(axis=1, keepdims=True)
    return {
        "observer": mixed_anova_F(np.broadcast_to(y, (len(labels), 4, 3)), labels)["observer"],
        "layer": mixed_anova_F(shuffled, groups)["layer"],
        "interaction_feather2023": mixed_anova_F(joint_y, joint_g)["observer:layer"],
        "interaction_centred": mixed_anova_F(np.broadcast_to(centred, (len(labels), 4, 3)), labels)["observer:layer"],
    }


def test_the_paper_scheme_p_values_converge_to_the_exact_permutation_p_values() -> None:
    """observer: labels permuted; layer: levels shuffled per observer; interaction: labels permuted
    AND levels shuffled per observer, independently. Monte Carlo SE at 20,000 draws <= 0.0036."""
    exact = _exact_mixed_nulls()
    observed = mixed_anova_F(np.vstack([SMALL_H, SMALL_M]), np.array([0, 0, 1, 1]))
    ours = {e.effect: e for e in permutation_mixed_anova(SMALL_H, SMALL_M, scheme=FEATHER2023, n_permutations=20_000, seed=3)}
    assert ours["observer"].p_value == pytest.approx(_exact_p(float(observed["observer"]), exact["observer"]), abs=0.015)
    assert ours["layer"].p_value == pytest.approx(_exact_p(float(observed["layer"]), exact["layer"]), abs=0.015)
    p_int = _exact_p(float(observed["observer:layer"]), exact["interaction_feather2023"])
    assert ours["observer:layer"].p_value == pytest.approx(p_int, abs=0.015)


def test_the_centred_scheme_keeps_its_own_interaction_null_and_differs_from_the_paper() -> None:
    exact = _exact_mixed_nulls()
    f_ab = float(mixed_anova_F(np.vstack([SMALL_H, SMALL_M]), np.array([0, 0, 1, 1]))["observer:layer"])
    p_centred, p_paper = _exact_p(f_ab, exact["interaction_centred"]), _exact_p(f_ab, exact["interaction_feather2023"])
    assert abs(p_centred - p_paper) > 0.1  # the two nulls really call this interaction differently
    ours = {e.effect: e for e in permutation_mixed_anova(SMALL_H, SMALL_M, scheme=CENTRED, n_permutations=20_000, seed=3)}
    assert ours["observer:layer"].p_value == pytest.approx(p_centred, abs=0.015)
    assert ours["observer:layer"].p_rule is P_PLUS_ONE


def test_the_model_comparison_p_values_converge_to_the_exact_permutation_p_values() -> None:
    """model: model labels permuted within each participant (on means over levels); interaction:
    all level x model cells shuffled within each participant; p counts strictly greater F."""
    y = np.array([[[0.9, 0.9], [0.5, 0.8], [0.1, 0.4]], [[0.8, 0.8], [0.6, 0.6], [0.2, 0.7]], [[1.0, 1.0], [0.4, 0.9], [0.3, 0.3]]])
    n, n_lev, n_mod = y.shape
    observed = rm_anova2_F(y)
    means = y.mean(axis=1)
    swaps = _all_orders(n, n_mod)  # every within-participant order of the models' means
    null_model = rm_anova_F(np.take_along_axis(np.broadcast_to(means, swaps.shape), swaps, axis=2))
    ours = {e.effect: e for e in permutation_rm_anova_models(y, n_permutations=20_000, seed=2)}
    assert ours["model"].p_value == pytest.approx(_exact_p(float(observed["model"]), null_model, strict=True), abs=0.015)
    assert ours["model"].p_rule is P_GT and ours["layer:model"].p_rule is P_GT


def test_the_model_comparison_interaction_null_shuffles_all_cells_within_participants() -> None:
    # Two participants, 2 levels x 2 models: 4! orders of the cells per participant, 576 in all.
    y = np.array([[[0.9, 0.2], [0.3, 0.8]], [[0.7, 0.1], [0.2, 0.9]]])
    n = len(y)
    orders = _all_orders(n, 4)
    flat = np.take_along_axis(np.broadcast_to(y.reshape(n, 4), orders.shape), orders, axis=2).reshape(-1, n, 2, 2)
    null = rm_anova2_F(flat)["layer:model"]
    f = float(rm_anova2_F(y)["layer:model"])
    ours = {e.effect: e for e in permutation_rm_anova_models(y, n_permutations=20_000, seed=5)}
    assert ours["layer:model"].p_value == pytest.approx(max(_exact_p(f, null, strict=True), 1 / 20_000), abs=0.015)


def test_the_layer_effect_p_value_converges_to_the_exact_permutation_p_value() -> None:
    y = np.array([[0.9, 0.6, 0.4], [0.8, 0.7, 0.2], [0.7, 0.9, 0.5]])
    orders = _all_orders(3, 3)
    null = rm_anova_F(np.take_along_axis(np.broadcast_to(y, orders.shape), orders, axis=2))
    e = permutation_rm_anova_layer(y, n_permutations=20_000, seed=1)
    assert e.p_value == pytest.approx(_exact_p(float(rm_anova_F(y)), null), abs=0.015)
    assert e.p_rule is P_GE


# ------------------------------------------------------------------------------ behaviour on synthetic studies


@pytest.mark.parametrize("scheme", [FEATHER2023, CENTRED], ids=lambda s: s.name)
def test_a_planted_human_model_difference_is_detected(scheme: stats.Scheme) -> None:
    rng = np.random.default_rng(7)
    # Humans fail on deep-layer metamers; the model recognizes them all (as in the paper).
    human, model = _data(rng, np.linspace(0.9, 0.1, L), np.full(L, 0.9))
    effects = {e.effect: e for e in permutation_mixed_anova(human, model, scheme=scheme, n_permutations=500, seed=1)}
    assert effects["observer"].p_value < 0.01
    assert effects["observer:layer"].p_value < 0.01
    assert effects["layer"].p_value < 0.01
    assert effects["observer"].p_value >= 1 / 501  # a permutation p-value is never 0


@pytest.mark.parametrize("scheme", [FEATHER2023, CENTRED], ids=lambda s: s.name)
def test_a_null_difference_is_not_flagged(scheme: stats.Scheme) -> None:
    rng = np.random.default_rng(8)
    curve = np.linspace(0.9, 0.3, L)  # both decline the same way: a layer effect, nothing else
    human, model = _data(rng, curve, curve)
    effects = {e.effect: e for e in permutation_mixed_anova(human, model, scheme=scheme, n_permutations=500, seed=1)}
    assert effects["observer"].p_value > 0.05
    assert effects["observer:layer"].p_value > 0.05
    assert effects["layer"].p_value < 0.01


@pytest.mark.parametrize("scheme", [FEATHER2023, CENTRED], ids=lambda s: s.name)
def test_false_positive_rate_is_near_the_nominal_level(scheme: stats.Scheme) -> None:
    rng = np.random.default_rng(9)
    hits = {"observer": 0, "observer:layer": 0}
    runs = 40
    for i in range(runs):
        curve = rng.uniform(0.3, 0.9, L)
        human, model = _data(rng, curve, curve)
        for e in permutation_mixed_anova(human, model, scheme=scheme, n_permutations=199, seed=i):
            if e.effect in hits and e.p_value <= 0.05:
                hits[e.effect] += 1
    # Nominal 5%: 2 of 40 expected; more than 6 would be a badly miscalibrated test.
    assert hits["observer"] <= 6 and hits["observer:layer"] <= 6, hits


def test_a_planted_difference_between_models_is_detected_and_a_null_one_is_not() -> None:
    rng = np.random.default_rng(14)
    curve = np.linspace(0.9, 0.1, 7)
    robust = np.r_[0.9, np.linspace(0.85, 0.6, 6)]  # humans recognize the robust model's deep metamers
    noise = lambda: rng.normal(0, 0.08, (15, 7))  # noqa: E731
    y = np.clip(np.stack([curve + noise(), robust + noise()], axis=2), 0, 1)
    y[:, 0, 1] = y[:, 0, 0]  # one natural condition
    effects = {e.effect: e for e in permutation_rm_anova_models(y, n_permutations=500, seed=0)}
    assert effects["model"].p_value < 0.01 and effects["layer:model"].p_value < 0.01
    same = np.clip(np.stack([curve + noise(), curve + noise()], axis=2), 0, 1)
    same[:, 0, 1] = same[:, 0, 0]
    effects = {e.effect: e for e in permutation_rm_anova_models(same, n_permutations=500, seed=0)}
    assert effects["model"].p_value > 0.05 and effects["layer:model"].p_value > 0.05


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


# ------------------------------------------------------------------------------ stats.csv rows


def test_human_vs_model_rows_name_their_scheme_levels_null_and_p_formula() -> None:
    rng = np.random.default_rng(12)
    human, model = rng.random((5, 4)), rng.random((5, 4))
    levels = ["natural", "a", "b", "c"]
    rows = human_vs_model("exp", "m", levels, human, model, n_permutations=100, seed=3)
    assert [(r.analysis, r.effect) for r in rows] == [
        ("mixed_anova", "observer"), ("mixed_anova", "layer"), ("mixed_anova", "observer:layer"),
        ("paired_by_layer", "natural"), ("paired_by_layer", "a"), ("paired_by_layer", "b"), ("paired_by_layer", "c"),
    ]
    anova = rows[:3]
    assert [(r.df1, r.df2) for r in anova] == [(1, 8), (3, 24), (3, 24)]
    assert all(r.scheme == "feather2023" and r.levels == "natural;a;b;c" and r.p_formula == P_GE.text and r.seed == 3 for r in anova)
    assert all(r.partial_eta_sq == pytest.approx(partial_eta_squared(r.value, r.df1, r.df2)) for r in anova)
    assert "shuffled across levels" in anova[2].permutation and "labels permuted" in anova[2].permutation
    assert all(r.p_formula == stats.P_SIGN_FLIP.text and r.partial_eta_sq is None for r in rows[3:])
    centred = human_vs_model("exp", "m", levels[1:], human[:, 1:], model[:, 1:], scheme="centred", n_permutations=100)
    assert centred[0].scheme == "centred" and centred[0].p_formula == P_PLUS_ONE.text and centred[0].levels == "a;b;c"
    assert human_vs_model("exp", "m", ["a"], human[:1, :1], model[:1, :1]) == []  # one observer: no test


def test_between_models_and_layer_effect_rows() -> None:
    rng = np.random.default_rng(15)
    y = rng.random((6, 3, 2))
    rows = human_only("exp", "std+robust", ["natural", "conv", "fc"], y, n_permutations=100, seed=1)
    assert [(r.analysis, r.model, r.effect, r.df1, r.df2) for r in rows] == [
        ("rm_anova_models", "std+robust", "model", 1, 5), ("rm_anova_models", "std+robust", "layer", 2, 10), ("rm_anova_models", "std+robust", "layer:model", 2, 10),
    ]
    assert all(r.p_formula == P_GT.text and r.scheme == "feather2023" for r in rows)
    (row,) = human_only("exp", "std", ["natural", "conv", "fc"], y[:, :, 0], n_permutations=100, seed=1)
    assert (row.analysis, row.effect, row.df1, row.df2, row.p_formula) == ("rm_anova_layer", "layer", 2, 10, P_GE.text)
    assert row.value == pytest.approx(float(rm_anova_F(y[:, :, 0])))
    assert human_only("exp", "a+b", ["x", "y"], y[:1, :2]) == []  # one participant: no test
