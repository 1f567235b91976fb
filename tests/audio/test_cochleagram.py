"""The cochleagram front end (docs/science.md §3) against properties that fail when it is wrong."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from synthesis.cochleagram import PRESETS, Cochleagram, CochleagramConfig, erb_number, filterbank, preset

DEMO = PRESETS["demo"]
PAPER = PRESETS["paper"]


def tone(hz: float, cfg: CochleagramConfig, amplitude: float = 0.1) -> torch.Tensor:
    t = torch.arange(cfg.samples, dtype=torch.float64) / cfg.sample_rate
    return (amplitude * torch.sin(2 * torch.pi * hz * t)).float().unsqueeze(0)


def bandpass(cfg: CochleagramConfig) -> slice:
    """Band-pass channels sit between ``oversample`` low-pass and ``oversample`` high-pass ones."""
    return slice(cfg.oversample, cfg.channels - cfg.oversample)


@pytest.mark.parametrize("cfg", [PAPER, DEMO, replace(DEMO, n_filters=7, oversample=3, low_hz=300.0, high_hz=5000.0)],
                         ids=["paper", "demo", "custom"])
@pytest.mark.parametrize("samples", [4000, 4001])
def test_squared_responses_sum_to_one_at_every_frequency(cfg: CochleagramConfig, samples: int) -> None:
    gains, _ = filterbank(cfg, samples)
    total = (gains**2).sum(axis=0)
    np.testing.assert_allclose(total, 1.0, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), oversample=st.integers(1, 5), low=st.floats(20.0, 500.0), high_frac=st.floats(0.3, 1.0))
def test_the_passband_stays_flat_for_any_density_and_band(n: int, oversample: int, low: float, high_frac: float) -> None:
    cfg = CochleagramConfig(sample_rate=16_000, samples=1_600, n_filters=n, oversample=oversample, low_hz=low,
                            high_hz=max(low * 1.5, 8_000 * high_frac), env_rate=100)
    gains, _ = filterbank(cfg, 1_600)
    assert gains.shape[0] == cfg.channels == oversample * (n + 1) - 1 + 2 * oversample
    np.testing.assert_allclose((gains**2).sum(axis=0), 1.0, atol=1e-9)


def test_the_paper_settings_give_211_channels_evenly_spaced_on_the_erb_scale() -> None:
    _, hz = filterbank(PAPER, PAPER.samples)
    assert len(hz) == 211
    centres = hz[bandpass(PAPER)]
    assert len(centres) == 203
    steps = np.diff(erb_number(centres))
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    assert 50 < centres[0] < centres[-1] < 10_000


def test_output_shapes_match_the_presets_analytically() -> None:
    assert PAPER.output_shape() == (211, 390)  # 2 s at 20 kHz, 200 Hz envelopes, 1001-tap kernel
    assert DEMO.output_shape() == (53, 90)  # 1 s at 16 kHz, 100 Hz envelopes
    assert PAPER.bins(20_000) == 190 and DEMO.bins(8_000) == 40


def test_the_paper_preset_maps_2_s_at_20_khz_to_211_by_390() -> None:
    x = torch.randn(1, 40_000) * 0.1
    with torch.no_grad():
        y = Cochleagram("paper")(x)
    assert tuple(y.shape) == (1, 211, 390)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("samples", [16_000, 12_345])
def test_the_demo_output_shape_follows_the_input_length(samples: int) -> None:
    with torch.no_grad():
        y = Cochleagram(DEMO)(torch.randn(2, samples) * 0.1)
    assert tuple(y.shape) == (2, *DEMO.output_shape(samples))


@pytest.mark.parametrize("hz", [220, 437, 1000, 1733, 3100, 5555])
def test_a_pure_tone_peaks_in_the_channel_nearest_on_the_erb_scale(hz: int) -> None:
    m = Cochleagram(DEMO)
    with torch.no_grad():
        profile = m(tone(hz, DEMO))[0].mean(dim=1).numpy()
    nearest = int(np.argmin(np.abs(erb_number(m.channel_hz[bandpass(DEMO)]) - erb_number(hz)))) + DEMO.oversample
    assert int(np.argmax(profile)) == nearest


def test_a_tone_at_a_centre_frequency_peaks_there_with_the_filters_full_gain() -> None:
    m = Cochleagram(DEMO)
    k = 30
    centre = float(m.channel_hz[k])
    with torch.no_grad():
        y = m(tone(round(centre), DEMO, amplitude=0.2))[0]
    assert int(y.mean(dim=1).argmax()) == k
    # A steady envelope keeps its level through the Kaiser low-pass: (gain · amplitude)^0.3 with the
    # filter's gain 1/√oversample at its centre (less a hair: the tone is rounded to a whole Hz).
    expected = (0.2 / np.sqrt(DEMO.oversample)) ** DEMO.power
    np.testing.assert_allclose(y[k, 5:-5].numpy(), expected, rtol=2e-3)


@pytest.mark.parametrize("name", ["demo", "paper"])
@pytest.mark.parametrize("signal", ["silence", "full-scale noise"])
def test_gradients_are_finite_for_silence_and_full_scale_noise(name: str, signal: str) -> None:
    cfg = preset(name)
    samples = cfg.samples if name == "demo" else 8_000
    x = torch.zeros(2, samples) if signal == "silence" else torch.rand(2, samples, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x.requires_grad_(True)
    y = Cochleagram(cfg)(x)
    (grad,) = torch.autograd.grad(y.square().sum(), x)
    assert torch.isfinite(y).all() and torch.isfinite(grad).all()
    if signal != "silence":
        assert grad.abs().max() > 0


def test_near_silence_gets_a_bounded_but_nonzero_gradient() -> None:
    # Metamers start from noise with SD 1e-7; the clipped compression must still pass a gradient.
    x = (torch.randn(1, DEMO.samples, generator=torch.Generator().manual_seed(1)) * 1e-7).requires_grad_(True)
    (grad,) = torch.autograd.grad(Cochleagram(DEMO)(x).sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_the_compression_derivative_is_clipped_near_zero() -> None:
    from synthesis.cochleagram import _ClippedPower

    x = torch.tensor([0.0, 1e-6, 0.5], requires_grad=True)
    y = _ClippedPower.apply(x, 0.3, 1e-8, 5.0)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert grad[0] == grad[1] == pytest.approx(5.0)
    assert grad[2] == pytest.approx(0.3 * (0.5 + 1e-8) ** -0.7)
    np.testing.assert_allclose(y.detach().numpy(), (x.detach().numpy() + 1e-8) ** 0.3, rtol=1e-6)


@pytest.mark.parametrize("name", ["demo", "paper"])
def test_a_batch_gives_the_same_result_as_single_inputs(name: str) -> None:
    cfg = preset(name)
    samples = cfg.samples if name == "demo" else 10_000
    x = torch.randn(3, samples, generator=torch.Generator().manual_seed(2)) * 0.1
    m = Cochleagram(cfg)
    with torch.no_grad():
        batch = m(x)
        single = torch.cat([m(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-6)


def test_strided_envelopes_are_exact_samples_of_the_full_rate_envelopes() -> None:
    x = torch.randn(2, DEMO.samples, generator=torch.Generator().manual_seed(3)) * 0.1
    fast = Cochleagram(DEMO)
    full = Cochleagram(replace(DEMO, envelope_stride=1))
    with torch.no_grad():
        torch.testing.assert_close(fast.envelopes(x), full.envelopes(x)[..., :: DEMO.envelope_stride], rtol=1e-4, atol=1e-6)
        a, b = fast(x), full(x)
    assert float((a - b).norm() / b.norm()) < 0.01


def test_settings_round_trip_through_json_for_the_bank_manifest() -> None:
    record = json.loads(json.dumps(PAPER.to_dict()))
    assert record["channels"] == 211 and record["bins"] == 390 and record["kind"] == "cochleagram"
    assert CochleagramConfig.from_dict(record) == PAPER


@pytest.mark.parametrize("bad", [{"env_rate": 300}, {"high_hz": 12_000.0}, {"oversample": 0}, {"envelope_stride": 3}, {"power": 0.0}])
def test_impossible_settings_are_refused_with_a_reason(bad: dict) -> None:
    with pytest.raises(ValueError, match="invalid cochleagram settings"):
        replace(PAPER, **bad)


def test_an_input_shorter_than_the_envelope_filter_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than"):
        Cochleagram(DEMO)(torch.zeros(1, 1000))
