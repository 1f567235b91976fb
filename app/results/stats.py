"""The statistics of Feather et al. (2019, 2023; docs/science.md §7), as plain numpy functions (no web, no DB).

Three analyses, each an ANOVA whose F statistics are the classical ones and whose p-values come
from permutations (proportions correct near 0 or 1 are far from normal, so the F distribution is
not trusted):

* **Human vs model** (:func:`permutation_mixed_anova`): a split-plot ANOVA with observer type
  (the human participants | one *yoked model observer* per participant) between observers and the
  *levels* (natural, then the model's metamer layers in depth order) within observers.
* **Between models, humans only** (:func:`permutation_rm_anova_models`): a two-way
  repeated-measures ANOVA of level × model on human accuracy, for models with the same number of
  layers (natural is the same column for every model).
* **Layer effect, humans only** (:func:`permutation_rm_anova_layer`): a one-way
  repeated-measures ANOVA over the levels.

Sums of squares of the split-plot ANOVA (between factor A with groups g, subjects i within
groups, within factor B with levels j; S_i subject means, M_g group means, B_j level means,
C_gj cell means, M the grand mean)::

    SS_A   = L * sum_g n_g (M_g - M)^2                     df = a - 1
    SS_S/A = L * sum_i (S_i - M_g(i))^2                    df = N - a
    SS_B   = N * sum_j (B_j - M)^2                         df = L - 1
    SS_AB  = sum_g n_g sum_j (C_gj - M)^2 - SS_A - SS_B    df = (a-1)(L-1)
    SS_res = sum_ij (y_ij - S_i)^2 - SS_B - SS_AB          df = (N-a)(L-1)

F_A = MS_A / MS_S/A, F_B = MS_B / MS_res, F_AB = MS_AB / MS_res, uncorrected (no sphericity
correction: the permutation null does not assume sphericity). Every effect also gets its partial
eta squared, SS_effect / (SS_effect + SS_error) = F·df1 / (F·df1 + df2).

A *scheme* (:data:`SCHEMES`) says which levels the human-vs-model ANOVA uses, how each of its
nulls is made and which p formula applies. ``feather2023`` (the default) is the paper's;
``centred`` is Metamer Lab's earlier analysis, kept for comparison. The human-only analyses are
always the paper's. docs/admin-and-exports.md and docs/science.md §7 describe them in words.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_PERMUTATIONS = 10_000
_ELEMENTS = 2_000_000  # array elements per batch of permutations (bounds memory to ~16 MiB per array)
_BATCH = 500  # at most this many permutations at once

# Relative tolerance for ties: a permuted F that equals the observed one up to floating-point
# rounding counts as "as large" (>=) and not as "larger" (>), so rounding never decides a p-value.
_TIE_RTOL = 1e-9


# ------------------------------------------------------------------------------ p formulas


@dataclass(frozen=True)
class PRule:
    """How a p-value is computed from the observed F and its permutation null."""

    name: str
    text: str  # the exact formula, as stats.csv and stats.txt print it
    words: str  # the same in words, for the methods paragraph


P_GE = PRule("ge_floor", "#{F* >= F} / N, floored at 1/N", "the proportion of the {n} permuted F statistics at least as large as the observed F (floored at 1/{n})")
P_GT = PRule("gt_floor", "#{F* > F} / N, floored at 1/N", "the proportion of the {n} permuted F statistics larger than the observed F (floored at 1/{n})")
P_PLUS_ONE = PRule("plus_one", "(1 + #{F* >= F}) / (1 + N)", "(1 + the number of the {n} permuted F statistics at least as large as the observed F) / (1 + {n})")
P_SIGN_FLIP = PRule("plus_one_abs", "(1 + #{|mean*| >= |mean|}) / (1 + N)", "(1 + the number of the {n} sign-flipped mean differences at least as large in absolute value) / (1 + {n})")


def permutation_p(observed: float, null: np.ndarray, rule: PRule, n_permutations: int) -> float:
    """The p-value of ``observed`` against its permutation ``null`` under ``rule``.

    N is ``n_permutations``. For the floored rules a permuted F that could not be computed (nan:
    a zero error term) counts as not extreme but stays in N, as in the paper's code; for
    ``plus_one`` such draws are left out of the null. nan when ``observed`` is not finite.
    """
    if not math.isfinite(observed):
        return math.nan
    null = np.asarray(null, dtype=float)
    finite = null[np.isfinite(null)]
    if rule is P_GT:
        count = int(np.count_nonzero(finite > observed * (1 + _TIE_RTOL) + 1e-12))
    else:
        count = int(np.count_nonzero(finite >= observed * (1 - _TIE_RTOL) - 1e-12))
    if rule is P_PLUS_ONE:
        return (1 + count) / (1 + finite.size)
    return max(count, 1) / n_permutations


def partial_eta_squared(F: float, df1: int, df2: int) -> float:
    """Partial eta squared from F: F·df1 / (F·df1 + df2) (= SS_effect / (SS_effect + SS_error))."""
    if not math.isfinite(F) or df1 <= 0 or df2 <= 0:
        return math.nan
    return F * df1 / (F * df1 + df2)


# ------------------------------------------------------------------------------ schemes


@dataclass(frozen=True)
class Scheme:
    """One way of running the human-vs-model ANOVA: its levels, nulls and p formula."""

    name: str
    natural: bool  # is the natural condition one of the within levels?
    p_rule: PRule
    observer_null: str
    layer_null: str
    interaction_null: str
    summary: str


FEATHER2023 = Scheme(
    name="feather2023",
    natural=True,
    p_rule=P_GE,
    observer_null="observer labels permuted across observers, on each observer's mean over levels",
    layer_null="each observer's values shuffled across levels, independently per observer",
    interaction_null="observer labels permuted and each observer's values shuffled across levels, independently per observer",
    summary="the analysis of Feather et al. (2023): natural and every metamer layer as levels; p = #{F* >= F} / N, floored at 1/N",
)
CENTRED = Scheme(
    name="centred",
    natural=False,
    p_rule=P_PLUS_ONE,
    observer_null="observer labels permuted across observers (whole profiles move)",
    layer_null="each observer's values shuffled across levels, independently per observer",
    interaction_null="each observer's profile centred on its own mean, then observer labels permuted",
    summary="Metamer Lab's earlier analysis: metamer layers only (natural left out), centred-profile interaction null; p = (1 + #{F* >= F}) / (1 + N)",
)
SCHEMES = {s.name: s for s in (FEATHER2023, CENTRED)}
DEFAULT_SCHEME = FEATHER2023.name

# The human-only analyses, as in the paper (p uses "strictly greater" for the model comparison).
MODELS_MODEL_NULL = "model labels permuted within each participant, on each participant's mean over levels per model"
MODELS_LAYER_NULL = "levels shuffled within each participant (the same order for every model)"
MODELS_INTERACTION_NULL = "all level x model cells shuffled within each participant"
LAYER_EFFECT_NULL = "levels shuffled within each participant"


@dataclass(frozen=True)
class Effect:
    """One tested effect of one ANOVA."""

    effect: str  # observer | layer | observer:layer | model | layer:model
    F: float
    df1: int
    df2: int
    partial_eta_sq: float
    p_value: float
    n_permutations: int
    null: str  # how the permutation null was made
    p_rule: PRule


def _effect(name: str, F: float, df1: int, df2: int, null_values: np.ndarray, rule: PRule, n: int, how: str) -> Effect:
    return Effect(name, F, df1, df2, partial_eta_squared(F, df1, df2), permutation_p(F, null_values, rule, n), n, how, rule)


# ------------------------------------------------------------------------------ F statistics


def mixed_anova_F(y: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
    """F statistics of the split-plot ANOVA, batched.

    ``y``: (..., N, L) values of N subjects at L levels; ``groups``: (..., N) integer group labels
    0..a-1 (broadcast against y's leading dims). Returns arrays of shape (...) for keys
    "observer", "layer", "observer:layer" (nan where a denominator is 0).
    """
    y = np.asarray(y, dtype=float)
    g = np.broadcast_to(np.asarray(groups), y.shape[:-1])
    n_subj, n_lev = y.shape[-2], y.shape[-1]
    labels = np.unique(g)
    a = len(labels)
    S = y.mean(axis=-1)  # subject means (..., N)
    M = S.mean(axis=-1)  # grand mean (...)
    B = y.mean(axis=-2)  # level means (..., L)
    ss_a = np.zeros(M.shape)
    ss_cells = np.zeros(M.shape)
    ss_s = np.zeros(M.shape)
    for lab in labels:
        w = (g == lab).astype(float)  # (..., N)
        n_g = w.sum(axis=-1)  # (...)
        Mg = (S * w).sum(axis=-1) / n_g
        Cg = (y * w[..., None]).sum(axis=-2) / n_g[..., None]  # (..., L)
        ss_a += n_lev * n_g * (Mg - M) ** 2
        ss_cells += n_g * ((Cg - M[..., None]) ** 2).sum(axis=-1)
        ss_s += n_lev * (w * (S - Mg[..., None]) ** 2).sum(axis=-1)
    ss_b = n_subj * ((B - M[..., None]) ** 2).sum(axis=-1)
    ss_ab = ss_cells - ss_a - ss_b
    ss_within = ((y - S[..., None]) ** 2).sum(axis=(-2, -1))
    ss_res = ss_within - ss_b - ss_ab
    df_a, df_s = a - 1, n_subj - a
    df_b, df_ab, df_res = n_lev - 1, (a - 1) * (n_lev - 1), (n_subj - a) * (n_lev - 1)
    return {
        "observer": _ratio(ss_a, df_a, ss_s, df_s, 1.0 + ss_s + ss_a),
        "layer": _ratio(ss_b, df_b, ss_res, df_res, 1.0 + np.abs(ss_within)),
        "observer:layer": _ratio(ss_ab, df_ab, ss_res, df_res, 1.0 + np.abs(ss_within)),
    }


def _ratio(ss: np.ndarray, df: int, ss_err: np.ndarray, df_err: int, scale: np.ndarray | float) -> np.ndarray:
    """(ss/df) / (ss_err/df_err), nan where a df is 0 or the error sum of squares is zero up to
    rounding (``1e-12 * scale``: rounding can leave tiny negative residual sums)."""
    ss, ss_err = np.asarray(ss, dtype=float), np.asarray(ss_err, dtype=float)
    if df <= 0 or df_err <= 0:
        return np.full(ss.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = (ss / df) / (ss_err / df_err)
    return np.asarray(np.where(ss_err > 1e-12 * np.asarray(scale), f, np.nan))


def rm_anova_F(y: np.ndarray) -> np.ndarray:
    """F of the one-way repeated-measures ANOVA, batched: ``y`` (..., N, L) → (...).

    SS_L = N·sum_j (B_j - M)², df L-1; error SS_LxS = sum_ij (y_ij - S_i - B_j + M)², df (N-1)(L-1).
    """
    y = np.asarray(y, dtype=float)
    n, n_lev = y.shape[-2], y.shape[-1]
    S = y.mean(axis=-1, keepdims=True)
    B = y.mean(axis=-2, keepdims=True)
    M = y.mean(axis=(-2, -1), keepdims=True)
    ss_l = n * ((B - M) ** 2).sum(axis=(-2, -1))
    ss_err = ((y - S - B + M) ** 2).sum(axis=(-2, -1))
    ss_total = ((y - M) ** 2).sum(axis=(-2, -1))
    return _ratio(ss_l, n_lev - 1, ss_err, (n - 1) * (n_lev - 1), 1.0 + ss_total)


def rm_anova2_F(y: np.ndarray) -> dict[str, np.ndarray]:
    """F statistics of the two-way repeated-measures ANOVA, batched: ``y`` (..., N, L, K) with
    N subjects, L levels and K models. Returns arrays (...) for "layer", "model", "layer:model".

    Each effect is tested against its own subject interaction (SS_LxS, SS_KxS, SS_LKxS), as in
    every standard repeated-measures ANOVA::

        SS_L  = N K sum_l (Y_l - Y)^2              error K sum_il (Y_il - Y_i - Y_l + Y)^2
        SS_K  = N L sum_k (Y_k - Y)^2              error L sum_ik (Y_ik - Y_i - Y_k + Y)^2
        SS_LK = N sum_lk (Y_lk - Y_l - Y_k + Y)^2  error sum_ilk (y_ilk - Y_il - Y_ik - Y_lk + Y_i + Y_l + Y_k - Y)^2

    (the last one computed as the total sum of squares less all the other terms).
    """
    y = np.asarray(y, dtype=float)
    n, n_lev, n_mod = y.shape[-3], y.shape[-2], y.shape[-1]
    Y = y.mean(axis=(-3, -2, -1), keepdims=True)
    Yi = y.mean(axis=(-2, -1), keepdims=True)
    Yl = y.mean(axis=(-3, -1), keepdims=True)
    Yk = y.mean(axis=(-3, -2), keepdims=True)
    Yil = y.mean(axis=-1, keepdims=True)
    Yik = y.mean(axis=-2, keepdims=True)
    Ylk = y.mean(axis=-3, keepdims=True)
    axes = (-3, -2, -1)
    ss_total = ((y - Y) ** 2).sum(axis=axes)
    ss_subj = n_lev * n_mod * ((Yi - Y) ** 2).sum(axis=axes)
    ss_l = n * n_mod * ((Yl - Y) ** 2).sum(axis=axes)
    ss_k = n * n_lev * ((Yk - Y) ** 2).sum(axis=axes)
    ss_lk = n * ((Ylk - Yl - Yk + Y) ** 2).sum(axis=axes)
    err_l = n_mod * ((Yil - Yi - Yl + Y) ** 2).sum(axis=axes)
    err_k = n_lev * ((Yik - Yi - Yk + Y) ** 2).sum(axis=axes)
    # The LK x S residual is what the other terms leave of the total (the terms are orthogonal);
    # computing it so avoids an eight-term pass over the full array for every permutation.
    err_lk = ss_total - ss_subj - ss_l - ss_k - ss_lk - err_l - err_k
    scale = 1.0 + ss_total
    return {
        "layer": _ratio(ss_l, n_lev - 1, err_l, (n_lev - 1) * (n - 1), scale),
        "model": _ratio(ss_k, n_mod - 1, err_k, (n_mod - 1) * (n - 1), scale),
        "layer:model": _ratio(ss_lk, (n_lev - 1) * (n_mod - 1), err_lk, (n_lev - 1) * (n_mod - 1) * (n - 1), scale),
    }


def two_group_F(y: np.ndarray, in_group1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F_observer and F_interaction for many relabelings of the same data, fast.

    ``y``: (N, L); ``in_group1``: (k, N) 0/1 masks with the same group sizes. Uses the sums of
    squares of :func:`mixed_anova_F` rewritten with matrix products, O(k·N·L) time and O(k·L)
    extra memory, since only the labels change between permutations.
    """
    y = np.asarray(y, dtype=float)
    w = np.asarray(in_group1, dtype=float)
    n, n_lev = y.shape
    n1 = w.sum(axis=1)
    n0 = n - n1
    S = y.mean(axis=1)
    M = S.mean()
    sum1 = w @ S
    M1 = sum1 / n1
    M0 = (S.sum() - sum1) / n0
    ss_a = n_lev * (n0 * (M0 - M) ** 2 + n1 * (M1 - M) ** 2)
    ss_s = n_lev * ((S**2).sum() - n0 * M0**2 - n1 * M1**2)
    col1 = w @ y  # (k, L) sums over group 1
    C1 = col1 / n1[:, None]
    C0 = (y.sum(axis=0)[None, :] - col1) / n0[:, None]
    ss_cells = n0 * ((C0 - M) ** 2).sum(axis=1) + n1 * ((C1 - M) ** 2).sum(axis=1)
    B = y.mean(axis=0)
    ss_b = n * ((B - M) ** 2).sum()
    ss_ab = ss_cells - ss_a - ss_b
    ss_res = ((y - S[:, None]) ** 2).sum() - ss_b - ss_ab
    f_a = _ratio(ss_a, 1, ss_s, n - 2, 1.0 + ss_s + ss_a)
    f_ab = _ratio(ss_ab, n_lev - 1, ss_res, (n - 2) * (n_lev - 1), 1.0 + np.abs(ss_res) + ss_ab)
    return f_a, f_ab


# ------------------------------------------------------------------------------ permutations


def _batches(n_permutations: int, elements_per_draw: int) -> list[int]:
    """Batch sizes that add up to ``n_permutations``, each bounded in memory."""
    size = int(max(1, min(_BATCH, _ELEMENTS // max(1, elements_per_draw))))
    return [min(size, n_permutations - start) for start in range(0, n_permutations, size)]


def _shuffle_last(rng: np.random.Generator, y: np.ndarray, k: int) -> np.ndarray:
    """k copies of ``y`` (..., L), each row's last axis shuffled independently: (k, ..., L)."""
    order = np.argsort(rng.random((k, *y.shape)), axis=-1)
    return np.take_along_axis(np.broadcast_to(y, (k, *y.shape)), order, axis=-1)


def _null(n_permutations: int, elements_per_draw: int, draw: Callable[[int], np.ndarray]) -> np.ndarray:
    parts = [draw(k) for k in _batches(n_permutations, elements_per_draw)]
    return np.concatenate(parts) if parts else np.empty(0)


def permutation_mixed_anova(
    human: np.ndarray,
    model: np.ndarray,
    *,
    scheme: Scheme | str = FEATHER2023,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> list[Effect]:
    """Observer (human | model) × level split-plot ANOVA with permutation p-values.

    ``human`` and ``model`` are (n_observers, n_levels) arrays of proportions correct, with the
    levels the scheme asks for (the caller chooses them). The nulls follow ``scheme``; the
    observer null only needs each observer's mean over levels, because F_observer depends on
    nothing else.
    """
    sch = SCHEMES[scheme] if isinstance(scheme, str) else scheme
    human = np.asarray(human, dtype=float)
    model = np.asarray(model, dtype=float)
    if human.ndim != 2 or model.ndim != 2 or human.shape[1] != model.shape[1]:
        raise ValueError("human and model must be (observers, levels) arrays with the same levels")
    y = np.vstack([human, model])
    groups = np.r_[np.zeros(len(human), dtype=int), np.ones(len(model), dtype=int)]
    n, n_lev = y.shape
    obs = mixed_anova_F(y, groups)
    rng = np.random.default_rng(seed)

    def labels(k: int) -> np.ndarray:  # k random permutations of the observed labels
        return groups[np.argsort(rng.random((k, n)), axis=1)]

    f_obs = _null(n_permutations, n * n_lev, lambda k: two_group_F(y, labels(k))[0])
    f_lay = _null(n_permutations, n * n_lev, lambda k: mixed_anova_F(_shuffle_last(rng, y, k), groups)["layer"])
    if sch.name == CENTRED.name:
        centred = y - y.mean(axis=1, keepdims=True)
        f_int = _null(n_permutations, n * n_lev, lambda k: two_group_F(centred, labels(k))[1])
    else:
        f_int = _null(n_permutations, n * n_lev, lambda k: mixed_anova_F(_shuffle_last(rng, y, k), labels(k))["observer:layer"])
    df_res = (n - 2) * (n_lev - 1)
    return [
        _effect("observer", float(obs["observer"]), 1, n - 2, f_obs, sch.p_rule, n_permutations, sch.observer_null),
        _effect("layer", float(obs["layer"]), n_lev - 1, df_res, f_lay, sch.p_rule, n_permutations, sch.layer_null),
        _effect("observer:layer", float(obs["observer:layer"]), n_lev - 1, df_res, f_int, sch.p_rule, n_permutations, sch.interaction_null),
    ]


def permutation_rm_anova_models(y: np.ndarray, *, n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> list[Effect]:
    """Level × model repeated-measures ANOVA of human accuracy, ``y`` (N, L, K), p by permutation
    within participants, p = #{F* > F} / N floored at 1/N (the paper's model comparison)."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 3 or y.shape[2] < 2:
        raise ValueError("y must be (participants, levels, models) with at least two models")
    n, n_lev, n_mod = y.shape
    obs = rm_anova2_F(y)
    rng = np.random.default_rng(seed)
    means = y.mean(axis=1)  # (N, K): F_model depends only on these
    f_mod = _null(n_permutations, n * n_mod, lambda k: rm_anova_F(_shuffle_last(rng, means, k)))

    def levels_shuffled(k: int) -> np.ndarray:
        order = np.argsort(rng.random((k, n, n_lev)), axis=-1)[..., None]  # one order per participant
        return np.take_along_axis(np.broadcast_to(y, (k, n, n_lev, n_mod)), np.broadcast_to(order, (k, n, n_lev, n_mod)), axis=-2)

    f_lay = _null(n_permutations, n * n_lev * n_mod, lambda k: rm_anova2_F(levels_shuffled(k))["layer"])
    flat = y.reshape(n, n_lev * n_mod)
    f_int = _null(n_permutations, n * n_lev * n_mod, lambda k: rm_anova2_F(_shuffle_last(rng, flat, k).reshape(k, n, n_lev, n_mod))["layer:model"])
    d = n - 1
    return [
        _effect("model", float(obs["model"]), n_mod - 1, (n_mod - 1) * d, f_mod, P_GT, n_permutations, MODELS_MODEL_NULL),
        _effect("layer", float(obs["layer"]), n_lev - 1, (n_lev - 1) * d, f_lay, P_GT, n_permutations, MODELS_LAYER_NULL),
        _effect("layer:model", float(obs["layer:model"]), (n_lev - 1) * (n_mod - 1), (n_lev - 1) * (n_mod - 1) * d, f_int, P_GT, n_permutations, MODELS_INTERACTION_NULL),
    ]


def permutation_rm_anova_layer(y: np.ndarray, *, n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> Effect:
    """One-way repeated-measures ANOVA of human accuracy over levels, ``y`` (N, L); p by shuffling
    levels within each participant, p = #{F* >= F} / N floored at 1/N."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 2:
        raise ValueError("y must be (participants, levels)")
    n, n_lev = y.shape
    rng = np.random.default_rng(seed)
    null = _null(n_permutations, n * n_lev, lambda k: rm_anova_F(_shuffle_last(rng, y, k)))
    return _effect("layer", float(rm_anova_F(y)), n_lev - 1, (n - 1) * (n_lev - 1), null, P_GE, n_permutations, LAYER_EFFECT_NULL)


def sign_flip_test(diffs: Sequence[float], *, n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> tuple[float, float]:
    """Paired two-sided permutation test of mean(diffs) == 0 by random sign flips.
    Returns (mean difference, p-value), p by :data:`P_SIGN_FLIP`; nan without data."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return (math.nan, math.nan)
    observed = abs(float(d.mean()))
    rng = np.random.default_rng(seed)
    count = 0
    done = 0
    while done < n_permutations:
        k = min(_BATCH * 10, n_permutations - done)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(k, d.size))
        null = np.abs((signs * d).mean(axis=1))
        count += int(np.count_nonzero(null >= observed - 1e-12))
        done += k
    return (float(d.mean()), (1 + count) / (1 + n_permutations))


PAIRED_NULL = "signs of the per-participant differences flipped at random (two-sided)"


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan stays nan)."""
    idx = [i for i, p in enumerate(pvalues) if math.isfinite(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


# ------------------------------------------------------------------------------ stats.csv rows


@dataclass(frozen=True)
class StatsRow:
    """One line of stats.csv (columns documented in docs/admin-and-exports.md)."""

    experiment: str
    analysis: str  # mixed_anova | paired_by_layer | rm_anova_models | rm_anova_layer
    scheme: str
    model: str  # the model, or the compared models joined by "+"
    effect: str  # observer | layer | observer:layer | model | layer:model | <level name>
    statistic: str  # F | mean_diff (human - model)
    value: float
    df1: int | None
    df2: int | None
    partial_eta_sq: float | None
    p_value: float
    p_holm: float | None
    p_formula: str
    permutation: str  # how the null was made
    n_permutations: int
    seed: int
    levels: str  # the within levels, in order, joined by ";"
    n_observers: int  # participants in the analysis (each with a yoked model observer in mixed_anova)
    n_dropped: int  # participants left out for lacking a value at some level


STATS_COLUMNS = list(StatsRow.__dataclass_fields__)


def _row(experiment: str, analysis: str, scheme: str, model: str, e: Effect, seed: int, levels: Sequence[str], n: int, n_dropped: int) -> StatsRow:
    return StatsRow(experiment, analysis, scheme, model, e.effect, "F", e.F, e.df1, e.df2, e.partial_eta_sq, e.p_value, None, e.p_rule.text, e.null, e.n_permutations, seed, ";".join(levels), n, n_dropped)


def human_vs_model(
    experiment: str,
    model: str,
    levels: Sequence[str],
    human: np.ndarray,
    yoked: np.ndarray,
    *,
    scheme: Scheme | str = FEATHER2023,
    n_dropped: int = 0,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> list[StatsRow]:
    """One model against humans: the split-plot ANOVA (two or more levels) and, per level, the
    paired sign-flip test of human - model with Holm's adjustment across the levels."""
    sch = SCHEMES[scheme] if isinstance(scheme, str) else scheme
    rows: list[StatsRow] = []
    n = len(human)
    if n < 2 or not levels:
        return rows
    if len(levels) >= 2:
        for e in permutation_mixed_anova(human, yoked, scheme=sch, n_permutations=n_permutations, seed=seed):
            rows.append(_row(experiment, "mixed_anova", sch.name, model, e, seed, levels, n, n_dropped))
    tests = [sign_flip_test(human[:, j] - yoked[:, j], n_permutations=n_permutations, seed=seed + 1 + j) for j in range(len(levels))]
    adjusted = holm([p for _, p in tests])
    for j, level in enumerate(levels):
        rows.append(
            StatsRow(experiment, "paired_by_layer", sch.name, model, level, "mean_diff", tests[j][0], None, None, None, tests[j][1], adjusted[j],
                     P_SIGN_FLIP.text, PAIRED_NULL, n_permutations, seed + 1 + j, ";".join(levels), n, n_dropped)
        )
    return rows


def human_only(
    experiment: str,
    label: str,
    levels: Sequence[str],
    human: np.ndarray,
    *,
    n_dropped: int = 0,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> list[StatsRow]:
    """The human-only ANOVAs as stats.csv rows. ``human`` (N, L): the layer effect over one
    model's levels (``label`` the model); (N, L, K): level x model between K models (``label`` the
    models joined by "+"). No rows without two participants and two levels."""
    human = np.asarray(human, dtype=float)
    if len(human) < 2 or len(levels) < 2:
        return []
    if human.ndim == 3:
        analysis, effects = "rm_anova_models", permutation_rm_anova_models(human, n_permutations=n_permutations, seed=seed)
    else:
        analysis, effects = "rm_anova_layer", [permutation_rm_anova_layer(human, n_permutations=n_permutations, seed=seed)]
    return [_row(experiment, analysis, FEATHER2023.name, label, e, seed, levels, len(human), n_dropped) for e in effects]
