"""Measurements of the generated headphone-check stimuli (docs/science.md §5), on the WAV files themselves.

Every test decodes the 16-bit file a participant would download and measures it: frequency,
level, interaural correlation, cross-spectrum phase, silence. Positions are found by measuring,
then compared with the stimulus' name, so a mislabelled file fails as well as a wrong signal.
"""

from __future__ import annotations

import itertools
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from app.core.media_store import MediaStore
from app.participation.headphone import screening, signals
from synthesis.media import decode_wav, sniff

SR = 44_100
ANTIPHASE = sorted(n for n in signals.STIMULI if n.startswith("antiphase/"))
HUGGINS = sorted(n for n in signals.STIMULI if n.startswith("huggins/"))


@cache
def decoded(name: str) -> np.ndarray:
    wave, sr = decode_wav(signals.encode(name))
    assert sr == SR
    return wave.astype(np.float64)


def sections(wave: np.ndarray, sound_s: float, gap_s: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split a trial into its three sounds and two gaps (stereo arrays), by the published timing."""
    n, g = round(sound_s * SR), round(gap_s * SR)
    assert wave.shape == (3 * n + 2 * g, 2), "three sounds and two gaps, nothing else"
    starts = [k * (n + g) for k in range(3)]
    return [wave[s : s + n] for s in starts], [wave[s + n : s + n + g] for s in starts[:2]]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def peak_hz(x: np.ndarray) -> float:
    """Frequency of the spectral peak, zero-padded to a 0.17 Hz grid."""
    n = 1 << 18
    return float(np.argmax(np.abs(np.fft.rfft(x, n))) * SR / n)


def correlation(seg: np.ndarray) -> float:
    return float(np.corrcoef(seg[:, 0], seg[:, 1])[0, 1])


def cross_spectrum(left: np.ndarray, right: np.ndarray, nper: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Welch estimate of the left/right cross-spectrum (Hann windows, 50 % overlap): (Hz, complex)."""
    w = np.hanning(nper)
    acc = np.zeros(nper // 2 + 1, complex)
    for s in range(0, left.size - nper + 1, nper // 2):
        acc += np.fft.rfft(left[s : s + nper] * w) * np.conj(np.fft.rfft(right[s : s + nper] * w))
    return np.fft.rfftfreq(nper, 1 / SR), acc


# ------------------------------------------------------------------------------- antiphase


def test_antiphase_stimuli_cover_all_six_orders_of_soft_and_antiphase_tone() -> None:
    orders = {(signals.STIMULI[n].correct, signals.STIMULI[n].lure) for n in ANTIPHASE}
    assert orders == set(itertools.permutations((1, 2, 3), 2))


@pytest.mark.parametrize("name", ANTIPHASE)
def test_every_antiphase_tone_is_200_hz_within_1_hz(name: str) -> None:
    tones, _ = sections(decoded(name), 1.0, 0.5)
    for tone in tones:
        for ch in (0, 1):
            assert abs(peak_hz(tone[:, ch]) - 200.0) <= 1.0


@pytest.mark.parametrize("name", ANTIPHASE)
def test_the_soft_tone_is_6_db_below_the_others_and_where_the_name_says(name: str) -> None:
    tones, _ = sections(decoded(name), 1.0, 0.5)
    levels = [rms(t) for t in tones]
    soft = int(np.argmin(levels))
    assert soft + 1 == signals.STIMULI[name].correct
    for k in range(3):
        if k != soft:
            assert abs(20 * np.log10(levels[soft] / levels[k]) - (-6.0)) <= 0.2
    # The two louder tones (normal and antiphase) have the same level.
    loud = [lv for k, lv in enumerate(levels) if k != soft]
    assert abs(20 * np.log10(loud[0] / loud[1])) < 0.01


@pytest.mark.parametrize("name", ANTIPHASE)
def test_the_antiphase_tone_has_lr_correlation_minus_one_and_the_others_plus_one(name: str) -> None:
    tones, _ = sections(decoded(name), 1.0, 0.5)
    corr = [correlation(t) for t in tones]
    anti = int(np.argmin(corr))
    assert anti + 1 == signals.STIMULI[name].lure
    assert corr[anti] < -0.9999
    assert all(c > 0.9999 for k, c in enumerate(corr) if k != anti)


def test_antiphase_tones_have_raised_cosine_ramps_and_gaps_of_digital_silence() -> None:
    tones, gaps = sections(decoded("antiphase/soft3-anti1"), 1.0, 0.5)
    for gap in gaps:
        assert np.count_nonzero(gap) == 0
    for tone in tones:
        assert np.all(tone[0] == 0) and np.all(tone[-1] == 0), "tones start and end at zero"
        ramp = round(signals.TONE_RAMP_S * SR)
        steady = np.max(np.abs(tone[ramp : -ramp, 0]))
        assert np.max(np.abs(tone[: ramp // 4, 0])) < 0.2 * steady, "the onset rises gradually"


# --------------------------------------------------------------------------------- huggins


def test_huggins_stimuli_are_six_sets_times_three_target_positions() -> None:
    assert {signals.STIMULI[n].correct for n in HUGGINS} == {1, 2, 3}
    assert len(HUGGINS) == 18 and len({n.split("-")[0] for n in HUGGINS}) == 6


@pytest.mark.parametrize("name", HUGGINS)
def test_huggins_non_targets_are_identical_in_both_channels_and_the_target_is_not(name: str) -> None:
    bursts, _ = sections(decoded(name), 1.0, 1.0)
    target = signals.STIMULI[name].correct
    for k, burst in enumerate(bursts, start=1):
        same = np.array_equal(burst[:, 0], burst[:, 1])
        assert same == (k != target), f"burst {k}"


@pytest.mark.parametrize("name", HUGGINS)
def test_huggins_target_cross_spectrum_phase_is_pi_inside_564_636_hz_and_zero_outside(name: str) -> None:
    bursts, _ = sections(decoded(name), 1.0, 1.0)
    target = bursts[signals.STIMULI[name].correct - 1]
    f, cs = cross_spectrum(target[:, 0], target[:, 1])
    phase = np.angle(cs)
    df = f[1]
    # Two estimator bins (±11 Hz) at each band edge are a transition region of the measurement.
    inside = (f >= 564 + 2 * df) & (f <= 636 - 2 * df)
    outside = ((f >= 20) & (f <= 564 - 2 * df)) | ((f >= 636 + 2 * df) & (f <= 20_000))
    assert inside.sum() >= 8
    assert np.max(np.abs(np.abs(phase[inside]) - np.pi)) < 0.05
    assert np.max(np.abs(phase[outside])) < 0.05
    # The inversion leaves the level alone: both ears get the same spectrum magnitude.
    assert abs(20 * np.log10(rms(target[:, 0]) / rms(target[:, 1]))) < 0.05


@pytest.mark.parametrize("name", HUGGINS)
def test_huggins_band_edges_lie_at_564_and_636_hz_to_within_2_hz(name: str) -> None:
    """At 1 Hz resolution (one FFT of the whole 1 s burst), summed over 9 Hz just inside and just
    outside each edge: π inside, 0 outside. This pins the edges that the Welch test leaves open."""
    bursts, _ = sections(decoded(name), 1.0, 1.0)
    target = bursts[signals.STIMULI[name].correct - 1]
    cs = np.fft.rfft(target[:, 0]) * np.conj(np.fft.rfft(target[:, 1]))  # bin k is k Hz
    for lo, hi in ((566, 574), (626, 634)):
        assert abs(abs(np.angle(cs[lo : hi + 1].sum())) - np.pi) < 0.3
    for lo, hi in ((553, 561), (639, 647)):
        assert abs(np.angle(cs[lo : hi + 1].sum())) < 0.3


@pytest.mark.parametrize("name", HUGGINS[:3])
def test_huggins_bursts_last_1_s_with_1_s_gaps_of_digital_silence(name: str) -> None:
    bursts, gaps = sections(decoded(name), 1.0, 1.0)
    for gap in gaps:
        assert np.count_nonzero(gap) == 0
    for burst in bursts:
        assert rms(burst) > 0.05, "each burst is noise at the check level"
        assert np.all(burst[0] == 0) and np.all(burst[-1] == 0)


def test_every_huggins_burst_is_its_own_noise() -> None:
    seen = set()
    for name in HUGGINS:
        for burst in sections(decoded(name), 1.0, 1.0)[0]:
            seen.add(burst[:, 0].tobytes())
    assert len(seen) == 3 * len(HUGGINS)


# ----------------------------------------------------------------------- calibration, files


def test_calibration_noise_is_diotic_and_at_the_level_of_the_loud_tones() -> None:
    noise = decoded(signals.CALIBRATION)
    assert noise.shape[0] >= 2 * SR
    assert np.array_equal(noise[:, 0], noise[:, 1])
    loud = sections(decoded("antiphase/soft1-anti2"), 1.0, 0.5)[0][2]  # the normal tone
    ramp = round(signals.TONE_RAMP_S * SR)
    assert abs(20 * np.log10(rms(noise[SR // 2 : -SR // 2]) / rms(loud[ramp:-ramp]))) < 0.5


def test_files_are_16_bit_stereo_44k1_wavs_and_generation_is_deterministic() -> None:
    for name in ("antiphase/soft2-anti1", "huggins/set4-target3", signals.CALIBRATION):
        data = signals.encode(name)
        info = sniff(data, ".wav")
        assert (info.channels, info.sample_rate) == (2, SR)
        assert data == signals.encode(name), "the same bytes every time, so every app process agrees"


def test_media_catalogue_stores_each_file_once_and_rewrites_a_missing_one(tmp_path: Path) -> None:
    store = MediaStore(tmp_path / "media")
    cat = signals.MediaCatalogue()
    names = ["antiphase/soft1-anti3", "huggins/set2-target1"]
    first = cat.sha_for(store, names)
    assert all(store.exists(sha, ".wav") for sha in first.values())
    assert store.path_for(first[names[0]], ".wav").read_bytes() == signals.encode(names[0])
    store.remove(first[names[1]], ".wav")
    assert cat.sha_for(store, names) == first
    assert store.exists(first[names[1]], ".wav")


# -------------------------------------------------------------------------------- trial sets


def test_six_antiphase_trials_use_each_order_once_and_are_fixed_by_the_seed() -> None:
    plan = screening.plan_attempt("antiphase", 1234, 1, 6)
    assert len({t.stimulus for t in plan}) == 6
    assert plan == screening.plan_attempt("antiphase", 1234, 1, 6)
    assert [t.stimulus for t in plan] != [t.stimulus for t in screening.plan_attempt("antiphase", 99, 1, 6)]
    assert all(t.correct == signals.STIMULI[t.stimulus].correct for t in plan)


def test_six_huggins_trials_use_every_set_once_with_balanced_targets_and_a_retry_hears_others() -> None:
    first = screening.plan_attempt("huggins", 77, 1, 6)
    sets = sorted(t.stimulus.split("-")[0] for t in first)
    assert sets == [f"huggins/set{k}" for k in range(1, 7)]
    assert sorted(t.correct for t in first) == [1, 1, 2, 2, 3, 3]
    retry = screening.plan_attempt("huggins", 77, 2, 6)
    assert not {t.stimulus for t in first} & {t.stimulus for t in retry}
    assert len({t.stimulus for t in screening.plan_attempt("huggins", 77, 1, 18)}) == 18
