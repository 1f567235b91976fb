"""Validity criteria against hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synthesis.bank import NullSummary, Quantiles
from synthesis.criteria import SNR_CAP_DB, compare, judge, null_distribution, pearson, ranks, sample_pairs, snr_db, spearman
from synthesis.models.registry import CategoryMap


def test_pearson_by_hand() -> None:
    # x = [1, 2, 3], y = [1, 2, 4]: centred x = [-1, 0, 1], y = [-4/3, -1/3, 5/3];
    # r = 3 / sqrt(2 * 14/3) = 3 / sqrt(28/3)
    assert pearson(np.array([1, 2, 3]), np.array([1, 2, 4])) == pytest.approx(3 / math.sqrt(28 / 3))


def test_ranks_average_ties() -> None:
    assert ranks(np.array([0.0, 5.0, 0.0, 2.0])).tolist() == [1.5, 4.0, 1.5, 3.0]


def test_spearman_by_hand_with_ties() -> None:
    # ranks x = [1.5, 1.5, 3, 4], y = [1, 2, 4, 3]; centred x = [-1, -1, .5, 1.5], y = [-1.5, -.5, 1.5, .5]
    # r = (1.5 + .5 + .75 + .75) / sqrt(4.5 * 5) = 3.5 / sqrt(22.5)
    assert spearman(np.array([0, 0, 1, 2]), np.array([10, 20, 40, 30])) == pytest.approx(3.5 / math.sqrt(22.5))


def test_spearman_is_one_for_any_monotonic_transform() -> None:
    x = np.array([0.3, -1.0, 2.0, 5.0, 0.1])
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)


def test_constant_activations_give_undefined_correlations() -> None:
    assert pearson(np.zeros(4), np.arange(4)) is None
    assert spearman(np.ones(4), np.arange(4)) is None


def test_snr_db_is_ten_log10_of_the_norm_ratio() -> None:
    # ‖A‖ = 5, ‖A − A′‖ = 0.5 → 10·log10(10) = 10 dB (10, not 20: the paper's definition)
    assert snr_db(np.array([3.0, 4.0]), np.array([3.0, 3.5])) == pytest.approx(10.0)
    assert snr_db(np.array([3.0, 4.0]), np.array([3.0, 4.0])) == SNR_CAP_DB


def test_compare_is_per_layer_activation_statistics() -> None:
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    s = compare(a, a * 2)
    assert s.pearson == pytest.approx(1.0) and s.spearman == pytest.approx(1.0)
    assert s.snr_db == pytest.approx(0.0)  # ‖A − 2A‖ = ‖A‖


def test_null_pairs_are_always_two_different_signals() -> None:
    pairs = sample_pairs(50, 1000, seed=0)  # 2450 ordered pairs exist: sample 1000 of them
    assert pairs.shape == (1000, 2)
    assert (pairs[:, 0] != pairs[:, 1]).all()
    assert set(pairs.ravel().tolist()) == set(range(50))


def test_null_uses_every_pair_once_when_asked_for_more_than_exist() -> None:
    pairs = sample_pairs(3, 100, seed=0)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]


def test_null_distribution_matches_pairwise_statistics() -> None:
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.normal(size=(6, 2, 5)), 0)  # ReLU-like, with ties at zero
    dist = null_distribution(acts, n_pairs=1000, seed=1)
    assert dist.n_pairs == 30
    pairs = sample_pairs(6, 1000, seed=1)
    for k, (i, j) in enumerate(pairs):
        assert dist.spearman[k] == pytest.approx(spearman(acts[i], acts[j]))
        assert dist.pearson[k] == pytest.approx(pearson(acts[i], acts[j]))
        assert dist.snr_db[k] == pytest.approx(snr_db(acts[i], acts[j]))
    summary = dist.summary()
    assert summary.spearman.max == pytest.approx(float(dist.spearman.max()))


def _null(top: float) -> NullSummary:
    q = Quantiles(max=top, p50=0.0, p95=top / 2, p99=top)
    return NullSummary(n_pairs=10, spearman=q, pearson=q, snr_db=Quantiles(max=3.0, p50=0.0, p95=1.0, p99=2.0))


def test_judge_passes_only_when_every_statistic_beats_the_null_max_and_decisions_agree() -> None:
    from synthesis.criteria import Stats

    ok, reasons = judge(Stats(0.9, 0.95, 10.0), _null(0.8), "3", "3")
    assert ok and reasons == []
    ok, reasons = judge(Stats(0.8, 0.95, 10.0), _null(0.8), "3", "3")  # equal to the max is not enough
    assert not ok and reasons == ["spearman 0.8 does not exceed the null maximum 0.8 (10 pairs)"]
    ok, reasons = judge(Stats(0.9, 0.95, 10.0), _null(0.8), "5", "3")
    assert not ok and "'5'" in reasons[0] and "'3'" in reasons[0]
    ok, reasons = judge(Stats(None, 0.95, 1.0), _null(0.8), "3", "3")
    assert len(reasons) == 2


def test_category_map_takes_the_highest_ranked_mapped_class() -> None:
    cmap = CategoryMap({"dog": [1, 2], "cat": [4]})
    logits = torch.tensor([[9.0, 1.0, 2.0, 8.0, 3.0], [0.0, 5.0, 1.0, 0.0, 4.0]])
    # Class 0 and 3 score highest but belong to no category; then 4 (cat) beats 2 (dog).
    assert cmap(logits) == ["cat", "dog"]


def test_category_map_rejects_a_class_in_two_categories() -> None:
    with pytest.raises(ValueError, match="both"):
        CategoryMap({"dog": [1], "wolf": [1]})
