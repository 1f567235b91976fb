"""Headphone-check stimuli (docs/science.md §5): generated with numpy from fixed seeds, never downloaded.

Two published checks, both three-alternative tasks whose answer is an interval position 1..3:

* **antiphase** (Woods et al. 2017), "which tone is quietest?". Three 200 Hz tones; one is 6 dB
  softer, one of the louder ones has its channels in antiphase. Over loudspeakers the antiphase
  tone partly cancels and sounds quietest, so loudspeaker listeners pick it instead of the soft one.
* **huggins** (Milne et al. 2021), "which noise contains a faint tone?". Three Gaussian-noise
  bursts; in the target the 600 Hz ±6 % band is phase-inverted in one ear, which produces a faint
  pitch only when each ear gets its own channel, i.e. over headphones.

The files are written to the content-addressed media store lazily (only the files a participant
needs, once per app process; a file that disappeared from the store is written again), so every
process of one installation produces byte-identical files and the same URLs. Trial sets, scoring
and the decision are in :mod:`app.participation.headphone.screening`.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.core.media_store import MediaStore
from synthesis.media import encode_wav

Check = Literal["antiphase", "huggins"]
CHECK_ORDER: tuple[Check, ...] = ("antiphase", "huggins")  # the order of the two under "both"

SAMPLE_RATE = 44_100  # Hz; Milne et al. generate the Huggins stimuli at 44.1 kHz
LEVEL_RMS = 0.1  # RMS of the louder tones and of every noise (−20 dBFS), so volumes match

# Antiphase (Woods et al. 2017)
TONE_HZ = 200.0
TONE_S = 1.0
TONE_RAMP_S = 0.06  # raised-cosine onset and offset ramps
TONE_GAP_S = 0.5
SOFT_DB = -6.0  # level of the soft tone relative to the others (dB)

# Huggins pitch (Milne et al. 2021)
BURST_S = 1.0
BURST_GAP_S = 1.0
BURST_RAMP_S = 0.02  # raised-cosine ramps, so the bursts start and end without clicks
HUGGINS_CENTER_HZ = 600.0
HUGGINS_HALF_WIDTH = 0.06  # the inverted band is centre × (1 ± 6 %) = 564–636 Hz
HUGGINS_SETS = 6

CALIBRATION_S = 4.0
CALIBRATION_RAMP_S = 0.05
NOISE_SEED = 5_2021  # root of every noise; changing it changes every Huggins/calibration file

CALIBRATION = "calibration/noise"


# ---------------------------------------------------------------------------------- signals


def raised_cosine_ramps(n: int, ramp_s: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Envelope of ``n`` samples rising from 0 and falling back to 0 over ``ramp_s`` seconds each."""
    k = int(round(ramp_s * sample_rate))
    env = np.ones(n)
    if k > 0:
        rise = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
        env[:k] = rise
        env[n - k :] = rise[::-1]
    return env


def _samples(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


def _concat_with_gaps(intervals: list[np.ndarray], gap_s: float) -> np.ndarray:
    """Stereo intervals ``(n, 2)`` joined by digital silence of ``gap_s`` seconds."""
    gap = np.zeros((_samples(gap_s), 2))
    parts: list[np.ndarray] = []
    for i, x in enumerate(intervals):
        if i:
            parts.append(gap)
        parts.append(x)
    return np.concatenate(parts)


def tone_interval(kind: Literal["normal", "soft", "antiphase"]) -> np.ndarray:
    """One ramped 200 Hz tone, stereo ``(n, 2)``: in phase, 6 dB softer, or right = −left."""
    n = _samples(TONE_S)
    t = np.arange(n) / SAMPLE_RATE
    # Steady-state RMS of a sine is peak/√2, so this puts the loud tones at LEVEL_RMS.
    tone = np.sqrt(2.0) * LEVEL_RMS * np.sin(2 * np.pi * TONE_HZ * t) * raised_cosine_ramps(n, TONE_RAMP_S)
    if kind == "soft":
        tone = tone * 10 ** (SOFT_DB / 20)
    right = -tone if kind == "antiphase" else tone
    return np.stack([tone, right], axis=1)


def antiphase_wave(soft: int, anti: int) -> np.ndarray:
    """An antiphase trial: the soft tone at position ``soft``, the antiphase tone at ``anti`` (1..3)."""
    if soft == anti or not {soft, anti} <= {1, 2, 3}:
        raise ValueError(f"soft ({soft}) and antiphase ({anti}) must be two different positions 1..3")
    kinds: list[Literal["normal", "soft", "antiphase"]] = [
        "soft" if pos == soft else "antiphase" if pos == anti else "normal" for pos in (1, 2, 3)
    ]
    return _concat_with_gaps([tone_interval(k) for k in kinds], TONE_GAP_S)


def _noise(*key: int, seconds: float) -> np.ndarray:
    """Gaussian noise at LEVEL_RMS (exactly, over its length) from a seed derived from ``key``."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([NOISE_SEED, *key])))
    x = rng.standard_normal(_samples(seconds))
    return x * (LEVEL_RMS / np.sqrt(np.mean(x**2)))


def huggins_band() -> tuple[float, float]:
    """The phase-inverted band in Hz: 600 Hz ± 6 % → (564, 636)."""
    return HUGGINS_CENTER_HZ * (1 - HUGGINS_HALF_WIDTH), HUGGINS_CENTER_HZ * (1 + HUGGINS_HALF_WIDTH)


def invert_band(x: np.ndarray, lo_hz: float, hi_hz: float) -> np.ndarray:
    """``x`` with the phase of every frequency component in [lo_hz, hi_hz] inverted (× −1).

    Done on the whole burst's spectrum, so the result is exact: the channels' cross-spectrum has
    phase π inside the band and 0 outside, and the magnitude spectrum (hence the level) is unchanged.
    """
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(x.size, 1.0 / SAMPLE_RATE)
    spec[(f >= lo_hz) & (f <= hi_hz)] *= -1
    return np.fft.irfft(spec, n=x.size)


def huggins_wave(set_index: int, target: int) -> np.ndarray:
    """A Huggins trial of set ``set_index`` (1..6) with the target burst at position ``target`` (1..3).

    Each burst is its own noise. Non-targets are diotic (identical channels); in the target the
    right channel has the 564–636 Hz band inverted. The ramps are applied after the inversion,
    to both channels alike, so they do not disturb the interaural relation.
    """
    if not 1 <= set_index <= HUGGINS_SETS or target not in (1, 2, 3):
        raise ValueError(f"no Huggins stimulus for set {set_index}, target {target}")
    env = raised_cosine_ramps(_samples(BURST_S), BURST_RAMP_S)
    lo, hi = huggins_band()
    bursts = []
    for pos in (1, 2, 3):
        # The seed names (set, target, position): every stimulus has its own noises.
        left = _noise(1, set_index, target, pos, seconds=BURST_S)
        right = invert_band(left, lo, hi) if pos == target else left
        bursts.append(np.stack([left * env, right * env], axis=1))
    return _concat_with_gaps(bursts, BURST_GAP_S)


def calibration_wave() -> np.ndarray:
    """Diotic Gaussian noise at the level of the check stimuli, for setting a comfortable volume."""
    x = _noise(0, seconds=CALIBRATION_S) * raised_cosine_ramps(_samples(CALIBRATION_S), CALIBRATION_RAMP_S)
    return np.stack([x, x], axis=1)


def intervals(check: Check) -> list[tuple[float, float]]:
    """Where the three sounds of a trial are: (start, end) in ms from the start of the file."""
    dur, gap = (TONE_S, TONE_GAP_S) if check == "antiphase" else (BURST_S, BURST_GAP_S)
    return [(1000 * k * (dur + gap), 1000 * (k * (dur + gap) + dur)) for k in range(3)]


# --------------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class ScreeningStimulus:
    """One generated file. ``correct`` is the answer position (None for the calibration noise);
    ``lure`` is the position a loudspeaker listener tends to pick (the antiphase tone)."""

    name: str
    check: Check | Literal["calibration"]
    correct: int | None
    lure: int | None
    make: Callable[[], np.ndarray]


def _catalogue() -> dict[str, ScreeningStimulus]:
    out: dict[str, ScreeningStimulus] = {CALIBRATION: ScreeningStimulus(CALIBRATION, "calibration", None, None, calibration_wave)}
    for soft, anti in itertools.permutations((1, 2, 3), 2):
        name = f"antiphase/soft{soft}-anti{anti}"
        out[name] = ScreeningStimulus(name, "antiphase", soft, anti, lambda s=soft, a=anti: antiphase_wave(s, a))
    for k in range(1, HUGGINS_SETS + 1):
        for target in (1, 2, 3):
            name = f"huggins/set{k}-target{target}"
            out[name] = ScreeningStimulus(name, "huggins", target, None, lambda k=k, t=target: huggins_wave(k, t))
    return out


STIMULI: dict[str, ScreeningStimulus] = _catalogue()


def encode(name: str) -> bytes:
    """The WAV file (16-bit stereo, 44.1 kHz) of stimulus ``name``."""
    return encode_wav(STIMULI[name].make(), SAMPLE_RATE)


class MediaCatalogue:
    """Stimulus name → sha256 of its WAV in the store, generated on first need.

    One instance per process (:data:`MEDIA`). The name → hash map is kept in memory; the files
    are checked with one ``stat`` each when asked for, and written again if missing.
    """

    def __init__(self) -> None:
        self._sha: dict[str, str] = {}
        self._lock = threading.Lock()

    def sha_for(self, store: MediaStore, names: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in names:
            sha = self._sha.get(name)
            if sha is None or not store.exists(sha, ".wav"):
                with self._lock:
                    sha = self._sha.get(name)
                    if sha is None or not store.exists(sha, ".wav"):
                        sha, _ = store.put_bytes(encode(name), ".wav")
                        self._sha[name] = sha
            out[name] = sha
        return out

    def url_for(self, store: MediaStore, names: Iterable[str]) -> dict[str, str]:
        return {name: f"/media/{sha}.wav" for name, sha in self.sha_for(store, names).items()}


MEDIA = MediaCatalogue()
