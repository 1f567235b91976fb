"""Validity criteria for metamers (docs/science.md §2): statistics, null distributions, pass/fail.

A metamer counts only if

1. the model's decision on the metamer equals its decision on the natural signal (decisions, not
   ground-truth labels; the model's class→category hook makes the decision), and
2. at the matched layer, Spearman ρ, Pearson r and dB SNR between the metamer's and the natural
   signal's activations each exceed the **maximum** of a null distribution: the same statistics
   between random pairs of *different* natural signals at that layer.

dB SNR = 10·log10(‖A‖ / ‖A − A′‖) with A the natural signal's activation (the paper's definition;
note 10, not 20). An exact match has no finite SNR and is reported as :data:`SNR_CAP_DB`.
Statistics here are numpy-only, so they can be checked by hand.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from synthesis.bank import NullSummary, Quantiles

SNR_CAP_DB = 200.0
HIST_BINS = 50


def _flat(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1)


def ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (as Spearman's ρ needs; ReLU layers tie a lot)."""
    x = _flat(a)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg = ends - (counts - 1) / 2.0
    return avg[inverse]


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r of two flattened activations; None when either is constant (r undefined)."""
    x, y = _flat(a), _flat(b)
    x = x - x.mean()
    y = y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    if den == 0 or not np.isfinite(den):
        return None
    return float(np.clip((x * y).sum() / den, -1.0, 1.0))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman ρ: Pearson r of the (tie-averaged) ranks; None when either is constant."""
    return pearson(ranks(a), ranks(b))


def snr_db(natural: np.ndarray, other: np.ndarray) -> float:
    """10·log10(‖A‖ / ‖A − A′‖), A = ``natural``; capped at :data:`SNR_CAP_DB` for exact matches."""
    a, b = _flat(natural), _flat(other)
    num = np.linalg.norm(a)
    den = np.linalg.norm(a - b)
    if den == 0:
        return SNR_CAP_DB
    if num == 0:
        return -SNR_CAP_DB
    return float(min(SNR_CAP_DB, 10.0 * np.log10(num / den)))


@dataclass(frozen=True)
class Stats:
    spearman: float | None
    pearson: float | None
    snr_db: float | None


def compare(natural: np.ndarray, metamer: np.ndarray) -> Stats:
    """The three statistics between a natural signal's and a metamer's activations at one layer."""
    return Stats(spearman(natural, metamer), pearson(natural, metamer), snr_db(natural, metamer))


def sample_pairs(n_signals: int, n_pairs: int, seed: int) -> np.ndarray:
    """``n_pairs`` ordered pairs (i, j) of *different* signals, shape (n_pairs, 2).

    When ``n_pairs`` is at least the number of ordered pairs, every pair is used once instead.
    """
    if n_signals < 2:
        raise ValueError("a null distribution needs at least two natural signals")
    total = n_signals * (n_signals - 1)
    if n_pairs >= total:
        i, j = np.meshgrid(np.arange(n_signals), np.arange(n_signals), indexing="ij")
        keep = i != j
        return np.stack([i[keep], j[keep]], axis=1)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n_signals, size=n_pairs)
    # j uniform over the others: draw from n-1 values and skip i.
    j = rng.integers(0, n_signals - 1, size=n_pairs)
    j = j + (j >= i)
    return np.stack([i, j], axis=1)


@dataclass
class NullDistribution:
    """Null statistics at one layer: arrays over the sampled pairs."""

    spearman: np.ndarray
    pearson: np.ndarray
    snr_db: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(self.spearman.size)

    def summary(self, histogram: str | None = None, histogram_sha256: str | None = None) -> NullSummary:
        def q(v: np.ndarray) -> Quantiles:
            v = v[np.isfinite(v)]
            if v.size == 0:
                raise ValueError("the null distribution is undefined: the natural signals' activations are constant at this layer")
            return Quantiles(max=float(v.max()), p50=float(np.percentile(v, 50)), p95=float(np.percentile(v, 95)), p99=float(np.percentile(v, 99)))

        return NullSummary(n_pairs=self.n_pairs, spearman=q(self.spearman), pearson=q(self.pearson), snr_db=q(self.snr_db),
                           histogram=histogram, histogram_sha256=histogram_sha256)

    def histogram_json(self, model: str, layer: str) -> bytes:
        """Histograms of the three statistics, for inspection next to the metamers."""
        out: dict[str, object] = {"model": model, "layer": layer, "n_pairs": self.n_pairs}
        for name in ("spearman", "pearson", "snr_db"):
            v = getattr(self, name)
            v = v[np.isfinite(v)]
            counts, edges = np.histogram(v, bins=HIST_BINS) if v.size else (np.zeros(0), np.zeros(0))
            out[name] = {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}
        return (json.dumps(out, indent=0) + "\n").encode()


def null_distribution(activations: np.ndarray, n_pairs: int, seed: int) -> NullDistribution:
    """Null statistics from ``activations`` of natural signals at one layer, shape (N, ...)."""
    acts = np.asarray(activations, dtype=np.float64).reshape(len(activations), -1)
    pairs = sample_pairs(len(acts), n_pairs, seed)
    # Rank and centre every signal once; each pair is then two dot products.
    rk = np.stack([ranks(a) for a in acts])
    sp = _pair_corr(rk, pairs)
    pe = _pair_corr(acts, pairs)
    norms = np.linalg.norm(acts, axis=1)
    diff = np.linalg.norm(acts[pairs[:, 0]] - acts[pairs[:, 1]], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = 10.0 * np.log10(norms[pairs[:, 0]] / diff)
    snr = np.where(diff == 0, SNR_CAP_DB, np.minimum(snr, SNR_CAP_DB))
    return NullDistribution(sp, pe, snr)


def _pair_corr(v: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    c = v - v.mean(axis=1, keepdims=True)
    n = np.sqrt((c * c).sum(axis=1))
    out = np.full(len(pairs), np.nan)
    for start in range(0, len(pairs), 4096):
        p = pairs[start : start + 4096]
        den = n[p[:, 0]] * n[p[:, 1]]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start : start + 4096] = np.einsum("ij,ij->i", c[p[:, 0]], c[p[:, 1]]) / den
    return np.clip(out, -1.0, 1.0)


def judge(stats: Stats, null: NullSummary | None, pred_metamer: str, pred_natural: str) -> tuple[bool, list[str]]:
    """Pass/fail and the reasons for failing (empty when passed)."""
    reasons: list[str] = []
    if pred_metamer != pred_natural:
        reasons.append(f"model decides {pred_metamer!r} for the metamer but {pred_natural!r} for the natural signal")
    if null is None:
        reasons.append("no null distribution for this layer")
    else:
        for name, value, q in (("spearman", stats.spearman, null.spearman), ("pearson", stats.pearson, null.pearson), ("snr_db", stats.snr_db, null.snr_db)):
            if value is None:
                reasons.append(f"{name} is undefined (constant activations)")
            elif not value > q.max:
                reasons.append(f"{name} {value:.4g} does not exceed the null maximum {q.max:.4g} ({null.n_pairs} pairs)")
    return (not reasons), reasons


def pass_rates(entries: Sequence[tuple[str, str, bool]]) -> dict[tuple[str, str], tuple[int, int]]:
    """(model, layer, passed) triples → {(model, layer): (passed, total)}."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for model, layer, ok in entries:
        p, t = out.get((model, layer), (0, 0))
        out[(model, layer)] = (p + int(ok), t + 1)
    return out
