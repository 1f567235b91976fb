"""The optimizer: convergence, independence of batch elements, reproducibility, stopping, errors."""

from __future__ import annotations

import pytest
import torch

from synthesis.features import FeatureExtractor
from synthesis.optimize import Problem, SynthesisError, initial_signal, normalized_l2, preset, synthesize
from tests.synthesis.tiny import SIZE, make_net, smooth_images

EXAMPLE = torch.zeros(1, 1, SIZE, SIZE)
RANGE = (0.0, 1.0)
SHAPE = (1, SIZE, SIZE)


def problems(fe: FeatureExtractor, layers: list[str], n_sources: int, settings, seed: int = 0) -> list[Problem]:
    naturals = smooth_images(n_sources, seed=11)
    with torch.no_grad():
        targets = fe(naturals)
    return [
        Problem(f"s{i}/{la}", la, targets[la][i], initial_signal(SHAPE, seed, f"s{i}", "image", settings, RANGE))
        for la in layers
        for i in range(n_sources)
    ]


@pytest.mark.parametrize("name", ["paper", "adam"])
def test_loss_decreases(name: str) -> None:
    fe = FeatureExtractor(make_net(), ["relu1", "relu2"], EXAMPLE, fake_relu=True)
    # Unit-norm steps of 1 are large for a 64-pixel image; 0.2 suits its scale.
    s = preset(name, rounds=2, round_steps=30, lr=0.2 if name == "paper" else None)
    results = synthesize(fe, problems(fe, ["relu1", "relu2"], 2, s), s, RANGE)
    for r in results:
        assert r.losses[-1] < 0.5 * r.losses[0], r.key
        assert r.loss == min(r.losses)


def test_reported_loss_is_the_loss_of_the_returned_signal() -> None:
    fe = FeatureExtractor(make_net(), ["relu2"], EXAMPLE)
    s = preset("paper", rounds=2, round_steps=20)
    probs = problems(fe, ["relu2"], 3, s)
    for p, r in zip(probs, synthesize(fe, probs, s, RANGE), strict=True):
        with torch.no_grad():
            again = normalized_l2(fe(r.x.unsqueeze(0))["relu2"], p.target.unsqueeze(0))
        assert float(again) == pytest.approx(r.loss, rel=1e-5)


def test_batch_of_k_equals_k_single_runs() -> None:
    fe = FeatureExtractor(make_net(), ["relu1", "relu2", "fc"], EXAMPLE, fake_relu=True)
    s = preset("paper", rounds=2, round_steps=15, patience=5)
    probs = problems(fe, ["relu1", "relu2", "fc"], 2, s)
    batched = synthesize(fe, probs, s, RANGE)
    for p, b in zip(probs, batched, strict=True):
        (single,) = synthesize(fe, [p], s, RANGE)
        assert single.steps == b.steps
        assert torch.allclose(single.x, b.x, atol=1e-4), p.key
        assert single.loss == pytest.approx(b.loss, rel=1e-3, abs=1e-6)


def test_seed_reproduces_a_run_exactly() -> None:
    fe = FeatureExtractor(make_net(), ["relu1", "fc"], EXAMPLE, fake_relu=True)
    s = preset("paper", rounds=2, round_steps=15, patience=5)
    a = synthesize(fe, problems(fe, ["relu1", "fc"], 2, s, seed=7), s, RANGE)
    b = synthesize(fe, problems(fe, ["relu1", "fc"], 2, s, seed=7), s, RANGE)
    c = synthesize(fe, problems(fe, ["relu1", "fc"], 2, s, seed=8), s, RANGE)
    for ra, rb, rc in zip(a, b, c, strict=True):
        assert torch.equal(ra.x, rb.x) and ra.losses == rb.losses and ra.steps == rb.steps
        assert not torch.equal(ra.x, rc.x)


def test_initial_noise_depends_on_seed_and_source_only() -> None:
    s = preset("paper")
    a = initial_signal(SHAPE, 1, "src-a", "image", s, RANGE)
    assert torch.equal(a, initial_signal(SHAPE, 1, "src-a", "image", s, RANGE))
    assert not torch.equal(a, initial_signal(SHAPE, 1, "src-b", "image", s, RANGE))
    assert not torch.equal(a, initial_signal(SHAPE, 2, "src-a", "image", s, RANGE))
    assert abs(float(a.mean()) - 0.5) < 0.05 and 0.02 < float(a.std()) < 0.08
    wave = initial_signal((1000,), 1, "src-a", "audio", s, (-1.0, 1.0))
    assert float(wave.abs().max()) < 1e-5


def test_each_example_stops_on_its_own() -> None:
    fe = FeatureExtractor(make_net(), ["relu1", "fc"], EXAMPLE, fake_relu=True)
    s = preset("paper", rounds=3, round_steps=40, target_loss=0.05)
    res = synthesize(fe, problems(fe, ["relu1", "fc"], 2, s), s, RANGE)
    steps = [r.steps for r in res]
    assert len(set(steps)) > 1  # examples finished at different steps
    for r in res:
        assert len(r.losses) == r.steps
        if r.stop_reason == "target":
            assert r.losses[-1] <= 0.05 and r.steps < s.max_steps


def test_plateau_moves_an_example_to_its_next_round_early() -> None:
    fe = FeatureExtractor(make_net(), ["relu2"], EXAMPLE)
    fixed = preset("paper", rounds=2, round_steps=200)
    early = preset("paper", rounds=2, round_steps=200, patience=3, rtol=0.05)
    probs = problems(fe, ["relu2"], 1, fixed)
    (r_fixed,) = synthesize(fe, probs, fixed, RANGE)
    (r_early,) = synthesize(fe, probs, early, RANGE)
    assert r_fixed.steps == 400
    assert r_early.steps < 400 and r_early.stop_reason == "converged"


def test_signal_stays_in_range() -> None:
    fe = FeatureExtractor(make_net(), ["fc"], EXAMPLE)
    s = preset("paper", rounds=1, round_steps=20, lr=5.0)
    for r in synthesize(fe, problems(fe, ["fc"], 2, s), s, RANGE):
        assert float(r.x.min()) >= 0.0 and float(r.x.max()) <= 1.0


def test_nan_loss_names_the_job() -> None:
    fe = FeatureExtractor(make_net(), ["relu2"], EXAMPLE)
    s = preset("paper", rounds=1, round_steps=5)
    probs = problems(fe, ["relu2"], 1, s)
    probs[0].target = torch.full_like(probs[0].target, float("nan"))
    with pytest.raises(SynthesisError, match="job digits/relu2/0000.*s0/relu2"):
        synthesize(fe, probs, s, RANGE, job="job digits/relu2/0000")


def test_unknown_preset_and_setting_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        preset("sgd")
    with pytest.raises(ValueError, match="round_stepz"):
        preset("paper", round_stepz=3)


def test_an_example_stops_at_its_own_stop_loss() -> None:
    fe = FeatureExtractor(make_net(), ["relu1"], EXAMPLE)
    s = preset("paper", rounds=2, round_steps=50, lr=0.2)
    probs = problems(fe, ["relu1"], 2, s)
    probs[0].stop_loss = 0.2
    first, second = synthesize(fe, probs, s, RANGE)
    assert first.stop_reason == "target" and first.loss <= 0.2 and first.steps < second.steps
    assert second.stop_reason == "schedule" and second.steps == 100

