"""Human vs model across layers: a mixed ANOVA with permutation p-values (REFERENCE §4). Pure numpy.

Design (one analysis per model, as in Feather et al.):

* Observers are the included human participants and, for each of them, a *yoked model observer*:
  the model's own accuracy (its predicted class == the true label) on exactly the stimuli that
  participant saw in each condition. Observer type (human | model) is the between-observer
  factor; the model's layers (metamer conditions, in depth order) are the within-observer factor.
  Observers without a value at every layer are left out (the count is reported).
* Sums of squares are the classical split-plot decomposition (one between factor A with groups
  g, subjects i within groups, one within factor B with levels j)::

      SS_A   = L * sum_g n_g (M_g - M)^2                     df = a - 1
      SS_S/A = L * sum_i (S_i - M_g(i))^2                    df = N - a
      SS_B   = N * sum_j (B_j - M)^2                         df = L - 1
      SS_AB  = sum_g n_g sum_j (C_gj - M)^2 - SS_A - SS_B    df = (a-1)(L-1)
      SS_res = sum_ij (y_ij - S_i)^2 - SS_B - SS_AB          df = (N-a)(L-1)

  F_A = MS_A / MS_S/A, F_B = MS_B / MS_res, F_AB = MS_AB / MS_res.
* p-values come from permutations (10,000 by default, seeded), not from the F distribution,
  because proportions correct near 0 or 1 are far from normal:
  - observer (A): observer-type labels are permuted across observers (whole profiles move);
  - layer (B): each observer's values are permuted across layers, independently per observer;
  - interaction (AB): each observer's profile is centred on its own mean (F_AB does not change),
    then observer-type labels are permuted. Under "no interaction" the centred profiles of the
    two groups are exchangeable, whatever the main effects are.
  p = (1 + #{F_perm >= F_obs}) / (1 + n_permutations).
* Per layer, a paired sign-flip permutation test of the mean human - model difference (two-sided)
  says where humans and the model part ways; Holm's step-down adjustment over the layers of a
  model is reported beside the raw p-values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_PERMUTATIONS = 10_000
_BATCH = 500  # permutations evaluated at once (bounds memory)


@dataclass(frozen=True)
class Effect:
    effect: str  # observer | layer | observer:layer
    F: float
    df1: int
    df2: int
    p_value: float
    n_permutations: int


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
    with np.errstate(divide="ignore", invalid="ignore"):
        f_a = (ss_a / df_a) / (ss_s / df_s) if df_a > 0 and df_s > 0 else np.full(M.shape, np.nan)
        f_b = (ss_b / df_b) / (ss_res / df_res) if df_b > 0 and df_res > 0 else np.full(M.shape, np.nan)
        f_ab = (ss_ab / df_ab) / (ss_res / df_res) if df_ab > 0 and df_res > 0 else np.full(M.shape, np.nan)
    # Rounding can leave tiny negative residual sums; treat a zero denominator as "no F".
    tiny = 1e-12 * (1.0 + np.abs(ss_within))
    f_b = np.where(ss_res > tiny, f_b, np.nan)
    f_ab = np.where(ss_res > tiny, f_ab, np.nan)
    f_a = np.where(ss_s > 1e-12 * (1.0 + ss_s + ss_a), f_a, np.nan)
    return {"observer": np.asarray(f_a), "layer": np.asarray(f_b), "observer:layer": np.asarray(f_ab)}


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
    df_s, df_ab, df_res = n - 2, n_lev - 1, (n - 2) * (n_lev - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        f_a = np.where(ss_s > 1e-12 * (1.0 + ss_s + ss_a), ss_a / (ss_s / df_s), np.nan)
        f_ab = np.where(ss_res > 1e-12 * (1.0 + abs(ss_res) + ss_ab), (ss_ab / df_ab) / (ss_res / df_res), np.nan) if df_ab > 0 and df_res > 0 else np.full(len(w), np.nan)
    return f_a, f_ab


def _p(observed: float, null: np.ndarray) -> float:
    if not math.isfinite(observed):
        return math.nan
    null = null[np.isfinite(null)]
    # Ties within floating-point noise count as "as extreme" (conservative).
    return float((1 + np.count_nonzero(null >= observed * (1 - 1e-9) - 1e-12)) / (1 + null.size))


def permutation_mixed_anova(
    human: np.ndarray, model: np.ndarray, *, n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0
) -> list[Effect]:
    """Observer (human | model) × layer mixed ANOVA with permutation p-values.

    ``human`` and ``model`` are (n_observers, n_layers) arrays of proportions correct.
    """
    human = np.asarray(human, dtype=float)
    model = np.asarray(model, dtype=float)
    if human.ndim != 2 or model.ndim != 2 or human.shape[1] != model.shape[1]:
        raise ValueError("human and model must be (observers, layers) arrays with the same layers")
    y = np.vstack([human, model])
    groups = np.r_[np.zeros(len(human), dtype=int), np.ones(len(model), dtype=int)]
    n, n_lev = y.shape
    obs = mixed_anova_F(y, groups)
    dfs = {
        "observer": (1, n - 2),
        "layer": (n_lev - 1, (n - 2) * (n_lev - 1)),
        "observer:layer": (n_lev - 1, (n - 2) * (n_lev - 1)),
    }
    rng = np.random.default_rng(seed)
    centred = y - y.mean(axis=1, keepdims=True)
    nulls: dict[str, list[np.ndarray]] = {k: [] for k in obs}
    # Batches bounded to about 2 million array elements, whatever the number of observers.
    batch = int(max(1, min(_BATCH, 2_000_000 // (n * n_lev))))
    done = 0
    while done < n_permutations:
        k = min(batch, n_permutations - done)
        # Random group labels: a permutation of the observed labels per draw.
        perm_groups = np.argsort(rng.random((k, n)), axis=1)
        g = groups[perm_groups]
        nulls["observer"].append(two_group_F(y, g)[0])
        nulls["observer:layer"].append(two_group_F(centred, g)[1])
        # Layers shuffled within each observer, independently.
        order = np.argsort(rng.random((k, n, n_lev)), axis=2)
        shuffled = np.take_along_axis(np.broadcast_to(y, (k, n, n_lev)), order, axis=2)
        nulls["layer"].append(mixed_anova_F(shuffled, groups)["layer"])
        done += k
    out = []
    for name in ("observer", "layer", "observer:layer"):
        f = float(obs[name])
        null = np.concatenate(nulls[name]) if nulls[name] else np.empty(0)
        out.append(Effect(name, f, dfs[name][0], dfs[name][1], _p(f, null), n_permutations))
    return out


def sign_flip_test(diffs: Sequence[float], *, n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> tuple[float, float]:
    """Paired two-sided permutation test of mean(diffs) == 0 by random sign flips.
    Returns (mean difference, p-value); p is nan without data."""
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


@dataclass(frozen=True)
class StatsRow:
    """One line of stats.csv."""

    experiment: str
    model: str
    analysis: str  # mixed_anova | paired_by_layer
    effect: str  # observer | layer | observer:layer | <layer name>
    statistic: str  # F | mean_diff (human - model)
    value: float
    df1: int | None
    df2: int | None
    p_value: float
    p_holm: float | None
    n_permutations: int
    seed: int
    n_observers: int
    n_dropped: int


STATS_COLUMNS = list(StatsRow.__dataclass_fields__)


def human_vs_model(
    experiment: str,
    model: str,
    layers: Sequence[str],
    human: np.ndarray,
    yoked: np.ndarray,
    *,
    n_dropped: int = 0,
    n_permutations: int = DEFAULT_PERMUTATIONS,
    seed: int = 0,
) -> list[StatsRow]:
    """The full analysis of one model: the mixed ANOVA and the per-layer paired tests."""
    rows: list[StatsRow] = []
    n = len(human)
    if n >= 2 and len(layers) >= 1:
        if len(layers) >= 2:
            for e in permutation_mixed_anova(human, yoked, n_permutations=n_permutations, seed=seed):
                rows.append(StatsRow(experiment, model, "mixed_anova", e.effect, "F", e.F, e.df1, e.df2, e.p_value, None, n_permutations, seed, n, n_dropped))
        tests = [sign_flip_test(human[:, j] - yoked[:, j], n_permutations=n_permutations, seed=seed + 1 + j) for j in range(len(layers))]
        adjusted = holm([p for _, p in tests])
        for j, layer in enumerate(layers):
            rows.append(
                StatsRow(experiment, model, "paired_by_layer", layer, "mean_diff", tests[j][0], None, None, tests[j][1], adjusted[j], n_permutations, seed, n, n_dropped)
            )
    return rows
