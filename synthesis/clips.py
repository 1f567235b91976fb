"""Model-ready audio clips: a spoken word placed in a fixed-length clip, with background noise.

Every clip the word models see, and every natural clip of the audio bank, is made here the same
way (numbers are the demo defaults):

1. the utterance is resampled to the clip rate and its leading/trailing silence trimmed
   (frames quieter than −40 dB re the loudest 10 ms frame);
2. the word is placed so that its centre sits at the clip's midpoint plus a time shift, in a clip
   of ``samples`` samples (a word longer than the clip is cut symmetrically);
3. optionally a background noise is added at an SNR in dB, measured against the power of the
   *word* (its trimmed extent), not of the mostly-silent clip;
4. a faint white noise floor at −50 dB re the word's level fills what would otherwise be digital
   silence (exact zeros make level statistics and the compression's gradients degenerate);
5. the clip is de-meaned and scaled to RMS 0.1 (−20 dBFS, the paper's level), and scaled down
   further only if a sample would exceed ±0.99 (no clipping ever happens).

Torch-free: numpy and scipy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "CLIP_RMS",
    "NOISE_KINDS",
    "background",
    "make_clip",
    "normalize",
    "rms",
    "trim",
]

CLIP_RMS = 0.1  # linear full scale: −20 dBFS
PEAK_LIMIT = 0.99
FLOOR_DB = -50.0  # noise floor re the word's RMS
NOISE_KINDS = ("white", "pink", "brown", "babble", "hum", "modulated")


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def trim(wave: np.ndarray, sample_rate: int, threshold_db: float = -40.0, frame_ms: float = 10.0) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``threshold_db`` re the loudest frame."""
    x = np.asarray(wave, dtype=np.float32)
    frame = max(1, int(sample_rate * frame_ms / 1000))
    n = len(x) // frame
    if n == 0:
        return x
    energy = np.sqrt(np.mean(np.square(x[: n * frame].reshape(n, frame), dtype=np.float64), axis=1))
    loud = np.flatnonzero(energy > energy.max() * 10 ** (threshold_db / 20))
    if len(loud) == 0:
        return x
    return x[loud[0] * frame : min(len(x), (loud[-1] + 1) * frame)]


def normalize(x: np.ndarray, level: float = CLIP_RMS) -> np.ndarray:
    """De-mean and scale to RMS ``level``; scale down further if a sample would pass ±0.99."""
    y = np.asarray(x, dtype=np.float64)
    y = y - y.mean()
    r = rms(y)
    if r > 0:
        y = y * (level / r)
    peak = float(np.abs(y).max()) if len(y) else 0.0
    if peak > PEAK_LIMIT:
        y = y * (PEAK_LIMIT / peak)
    return y.astype(np.float32)


def _coloured(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ∝ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    spec = spec / f ** (exponent / 2)
    spec[0] = 0.0
    y = np.fft.irfft(spec, n=n)
    return y / max(rms(y), 1e-12)


def background(kind: str, samples: int, sample_rate: int, rng: np.random.Generator,
               babble: Sequence[np.ndarray] = ()) -> np.ndarray:
    """A background noise of unit RMS.

    ``white``, ``pink`` and ``brown`` are stationary Gaussian noises; ``modulated`` is pink noise
    with a 2–12 Hz amplitude modulation (speech-like fluctuation); ``hum`` is a harmonic complex on
    a 50–250 Hz fundamental over faint pink noise; ``babble`` sums 3–6 of the given utterances
    (other words, other voices) at random offsets, looping each to fill the clip.
    """
    t = np.arange(samples) / sample_rate
    if kind == "white":
        y = rng.standard_normal(samples)
    elif kind == "pink":
        y = _coloured(samples, 1.0, rng)
    elif kind == "brown":
        y = _coloured(samples, 2.0, rng)
    elif kind == "modulated":
        rate_hz, depth = rng.uniform(2.0, 12.0), rng.uniform(0.5, 1.0)
        y = _coloured(samples, 1.0, rng) * (1 + depth * np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 2 * np.pi)))
    elif kind == "hum":
        f0 = rng.uniform(50.0, 250.0)
        harmonics = np.arange(1, int(min(20, (sample_rate / 2 - 1) // f0)) + 1)
        amps = rng.uniform(0.2, 1.0, len(harmonics)) / harmonics ** rng.uniform(0.5, 1.5)
        phases = rng.uniform(0, 2 * np.pi, len(harmonics))
        y = (amps[:, None] * np.sin(2 * np.pi * f0 * harmonics[:, None] * t + phases[:, None])).sum(0)
        y = y / max(rms(y), 1e-12) + 0.1 * _coloured(samples, 1.0, rng)
    elif kind == "babble":
        if not babble:
            raise ValueError("babble noise needs some utterances to mix")
        y = np.zeros(samples)
        for _ in range(int(rng.integers(3, 7))):
            voice = np.asarray(babble[int(rng.integers(len(babble)))], dtype=np.float64)
            looped = np.tile(voice, samples // max(len(voice), 1) + 2)
            start = int(rng.integers(len(voice)))
            y += looped[start : start + samples] / max(rms(voice), 1e-12) * rng.uniform(0.5, 1.0)
    else:
        raise ValueError(f"unknown noise {kind!r}; known: {', '.join(NOISE_KINDS)}")
    return (y / max(rms(y), 1e-12)).astype(np.float32)


def make_clip(word: np.ndarray, *, samples: int, sample_rate: int, rng: np.random.Generator,
              shift_s: float = 0.0, noise: np.ndarray | None = None, snr_db: float | None = None,
              floor_db: float = FLOOR_DB, level: float = CLIP_RMS) -> np.ndarray:
    """Place a trimmed word (already at ``sample_rate``) in a clip; see the module docstring.

    ``shift_s`` moves the word's centre from the midpoint (seconds, positive = later). ``noise``
    (unit RMS, ≥ ``samples`` long) is mixed at ``snr_db`` dB re the word. Returns float32 [samples].
    """
    w = np.asarray(word, dtype=np.float64)
    if len(w) > samples:  # cut a too-long word symmetrically
        cut = (len(w) - samples) // 2
        w = w[cut : cut + samples]
    clip = np.zeros(samples)
    start = int(round(samples / 2 + shift_s * sample_rate - len(w) / 2))
    start = min(max(start, 0), samples - len(w))
    clip[start : start + len(w)] = w
    word_rms = max(rms(w), 1e-9)
    if noise is not None:
        if snr_db is None:
            raise ValueError("mixing a noise needs snr_db")
        clip += np.asarray(noise[:samples], dtype=np.float64) * word_rms * 10 ** (-snr_db / 20)
    clip += rng.standard_normal(samples) * word_rms * 10 ** (floor_db / 20)
    return normalize(clip, level)
