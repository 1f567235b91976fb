"""Model-ready clips: placement, level, SNR and the noise floor are what the docs promise."""

from __future__ import annotations

import numpy as np
import pytest

from synthesis.clips import CLIP_RMS, NOISE_KINDS, background, make_clip, rms, trim

SR = 16_000


def burst(seconds: float = 0.4, hz: float = 500.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t) * np.hanning(len(t))).astype(np.float32)


def centre_of_energy(x: np.ndarray) -> float:
    e = x.astype(np.float64) ** 2
    return float((e * np.arange(len(x))).sum() / e.sum()) / SR


@pytest.mark.parametrize("shift", [0.0, 0.08, -0.05])
def test_the_word_is_centred_at_the_midpoint_plus_the_shift(shift: float) -> None:
    clip = make_clip(burst(), samples=SR, sample_rate=SR, rng=np.random.default_rng(0), shift_s=shift)
    assert clip.shape == (SR,) and clip.dtype == np.float32
    assert centre_of_energy(clip) == pytest.approx(0.5 + shift, abs=0.005)


def test_clips_are_de_meaned_at_rms_0_1() -> None:
    clip = make_clip(burst() + 0.2, samples=SR, sample_rate=SR, rng=np.random.default_rng(0))
    assert abs(float(clip.mean())) < 1e-6
    assert rms(clip) == pytest.approx(CLIP_RMS, rel=1e-4)


def test_a_peaky_word_is_scaled_down_rather_than_clipped() -> None:
    spike = np.zeros(4000, dtype=np.float32)
    spike[2000] = 1.0
    clip = make_clip(spike, samples=SR, sample_rate=SR, rng=np.random.default_rng(0))
    assert float(np.abs(clip).max()) == pytest.approx(0.99, abs=1e-6)


def test_silence_around_the_word_is_a_faint_noise_floor_not_digital_zeros() -> None:
    clip = make_clip(burst(0.3), samples=SR, sample_rate=SR, rng=np.random.default_rng(0))
    quiet = np.concatenate([clip[:4000], clip[-4000:]])
    assert np.count_nonzero(quiet == 0) < 10
    word = clip[SR // 2 - 1000 : SR // 2 + 1000]
    assert 20 * np.log10(rms(quiet) / rms(word)) < -45


@pytest.mark.parametrize("snr", [-10.0, 0.0, 10.0])
def test_background_noise_is_mixed_at_the_requested_snr_re_the_word(snr: float) -> None:
    rng = np.random.default_rng(1)
    word = burst(0.5)
    noise = background("white", SR, SR, rng)
    clip = make_clip(word, samples=SR, sample_rate=SR, rng=rng, noise=noise, snr_db=snr, floor_db=-200)
    placed = np.zeros(SR)
    placed[SR // 4 : 3 * SR // 4] = word
    # clip = k·(word + a·noise) − mean: recover the two gains by least squares.
    design = np.stack([placed, noise, np.ones(SR)], axis=1)
    (k_word, k_noise, _), *_ = np.linalg.lstsq(design, clip.astype(np.float64), rcond=None)
    measured = 20 * np.log10(k_word * rms(word) / (k_noise * rms(noise)))
    assert measured == pytest.approx(snr, abs=0.01)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_every_background_has_unit_rms_and_depends_only_on_its_seed(kind: str) -> None:
    babble = [burst(0.3, 300.0), burst(0.5, 700.0)]
    a = background(kind, SR, SR, np.random.default_rng(5), babble)
    b = background(kind, SR, SR, np.random.default_rng(5), babble)
    c = background(kind, SR, SR, np.random.default_rng(6), babble)
    assert rms(a) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_an_unknown_noise_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown noise"):
        background("traffic", SR, SR, np.random.default_rng(0))


def test_trim_cuts_leading_and_trailing_silence_only() -> None:
    word = burst(0.3)
    padded = np.concatenate([np.zeros(3200), word, np.zeros(4800)]).astype(np.float32)
    cut = trim(padded, SR)
    assert 0.25 < len(cut) / SR < 0.33
    assert rms(cut) > rms(padded)
