"""A differentiable cochleagram: the auditory front end of the word models (docs/science.md §3).

The cochleagram models the cochlea's frequency analysis so that the network downstream sees
roughly what the auditory nerve conveys: energy per frequency band over time, on a perceptual
frequency scale, with the ear's compressive loudness growth. It is written in plain torch (no
torchaudio) and is differentiable end to end, so metamers are optimized directly as waveforms.

Stages, each configurable through :class:`CochleagramConfig`:

1. **Filterbank.** Half-cosine band-pass filters evenly spaced on the ERB-number scale of
   Glasberg & Moore, applied by multiplication in the rFFT domain. ``n_filters`` filters tile the
   band ``low_hz``..``high_hz`` with 50 % overlap; ``oversample`` × as many filters with the same
   bandwidth tile it more densely. ``oversample`` low-pass and ``oversample`` high-pass filters
   cover the two ends so that the squared responses of all channels sum to 1 at every frequency
   (the bank is a tight frame: filtering twice and summing the channels returns the signal).
   n = 50 with 4× oversampling gives 203 band-pass + 4 + 4 = 211 channels, as in the paper.
2. **Envelopes.** The Hilbert envelope |analytic signal| of each channel, computed in the same
   FFT pass (the analytic signal is the inverse FFT of the one-sided spectrum).
3. **Downsampling** to ``env_rate`` Hz with a Kaiser-windowed sinc low-pass (cut-off at the new
   Nyquist frequency), evaluated only at the output instants ("valid" convolution, no padding).
   2 s at 20 kHz to 200 Hz with a 1001-tap kernel gives 390 time bins.
4. **Compression.** ``(max(env, 0) + offset) ** 0.3``. The derivative of the power law diverges
   at zero, which would make silent stretches dominate every gradient step, so its backward pass
   clips the local derivative to ``grad_clip``.

The module takes waveforms ``[B, T]`` (or ``[T]``) in [-1, 1] and returns ``[B, channels, bins]``.
It holds no learnable parameters; the filters are rebuilt from the config for each new signal
length and cached, so they never bloat a checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "PRESETS",
    "Cochleagram",
    "CochleagramConfig",
    "erb_number",
    "erb_to_hz",
    "filterbank",
    "preset",
]


def erb_number(hz: np.ndarray | float) -> np.ndarray | float:
    """Frequency (Hz) → ERB number (Cams), Glasberg & Moore (1990): ≈ 21.4·log10(1 + 0.00437 f)."""
    return 9.265 * np.log1p(np.asarray(hz, dtype=np.float64) / (24.7 * 9.265))


def erb_to_hz(erb: np.ndarray | float) -> np.ndarray | float:
    """ERB number (Cams) → frequency (Hz); the inverse of :func:`erb_number`."""
    return 24.7 * 9.265 * np.expm1(np.asarray(erb, dtype=np.float64) / 9.265)


@dataclass(frozen=True)
class CochleagramConfig:
    """Every setting of the front end; :meth:`to_dict` is what a bank manifest records.

    Frequencies are in Hz, rates in Hz, lengths in samples (of the input unless stated).
    """

    sample_rate: int = 20_000
    samples: int = 40_000  # nominal input length (the model's input spec); other lengths also work
    n_filters: int = 50  # band-pass filters at 1× (50 % overlap); the paper's n
    oversample: int = 4  # density multiplier at the same bandwidth
    low_hz: float = 50.0
    high_hz: float = 10_000.0
    env_rate: int = 200  # envelope sample rate after downsampling
    # Evaluate the Hilbert envelopes at every ``envelope_stride``-th input sample only. The values
    # there are exact (the band's spectrum is folded before a shorter inverse FFT); only the
    # low-pass then runs at sample_rate / envelope_stride, which aliases envelope fluctuations
    # faster than that rate minus env_rate/2. 1 = the paper's full-rate computation.
    envelope_stride: int = 1
    sinc_zero_crossings: int = 5  # per side of the Kaiser-windowed sinc
    kaiser_beta: float = 8.6  # about 85 dB stop-band attenuation
    power: float = 0.3
    offset: float = 1e-8
    grad_clip: float = 5.0  # the compression's local derivative never exceeds this
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate <= 0 or self.samples <= 0:
            problems.append("sample_rate and samples must be positive")
        if self.n_filters < 1 or self.oversample < 1:
            problems.append("n_filters and oversample must be at least 1")
        if not 0 < self.low_hz < self.high_hz <= self.sample_rate / 2:
            problems.append(f"need 0 < low_hz < high_hz <= sample_rate/2 ({self.sample_rate / 2:g} Hz)")
        if self.env_rate <= 0 or self.sample_rate % self.env_rate:
            problems.append("env_rate must divide sample_rate (integer downsampling factor)")
        elif self.envelope_stride < 1 or (self.sample_rate // self.env_rate) % self.envelope_stride:
            problems.append("envelope_stride must divide sample_rate / env_rate")
        if self.sinc_zero_crossings < 1:
            problems.append("sinc_zero_crossings must be at least 1")
        if not 0 < self.power <= 1 or self.offset <= 0 or self.grad_clip <= 0:
            problems.append("need 0 < power <= 1, offset > 0 and grad_clip > 0")
        if problems:
            raise ValueError("invalid cochleagram settings: " + "; ".join(problems))

    @property
    def factor(self) -> int:
        """Downsampling factor from the envelope evaluation rate to ``env_rate``."""
        return self.sample_rate // self.env_rate // self.envelope_stride

    @property
    def taps(self) -> int:
        """Length of the downsampling kernel, in envelope samples (odd, so it has a centre)."""
        return 2 * self.sinc_zero_crossings * self.factor + 1

    @property
    def channels(self) -> int:
        """Band-pass channels ``oversample·(n+1) − 1`` plus ``oversample`` low- and high-pass ones."""
        return self.oversample * (self.n_filters + 1) - 1 + 2 * self.oversample

    def bins(self, samples: int | None = None) -> int:
        """Envelope time bins for an input of ``samples`` samples (default: the nominal length).

        Bin i low-passes the input samples [i·F, i·F + W) with F = sample_rate / env_rate and W the
        kernel's span; only windows that fit inside the signal are kept (no padding).
        """
        n = self.samples if samples is None else samples
        m = -(-n // self.envelope_stride)
        if m < self.taps:
            raise ValueError(
                f"a {n}-sample input is shorter than the {self.taps * self.envelope_stride}-sample envelope filter"
            )
        return (m - self.taps) // self.factor + 1

    def output_shape(self, samples: int | None = None) -> tuple[int, int]:
        """(channels, time bins) of the cochleagram of one input."""
        return self.channels, self.bins(samples)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, including the derived shape, for ``ModelInfo.front_end``."""
        d = asdict(self)
        d.update(kind="cochleagram", channels=self.channels, bins=self.bins(), taps=self.taps)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CochleagramConfig:
        derived = {"kind", "channels", "bins", "taps"}
        return cls(**{k: v for k, v in d.items() if k not in derived})


#: Named settings. ``paper``: Feather et al. 2023 (2 s at 20 kHz → 211 × 390).
#: ``demo``: the demo word model's, small enough for CPU synthesis (1 s at 16 kHz → 53 × 90;
#: envelopes evaluated at 4 kHz, twice the widest channel's bandwidth).
PRESETS: dict[str, CochleagramConfig] = {
    "paper": CochleagramConfig(name="paper"),
    "demo": CochleagramConfig(
        name="demo",
        sample_rate=16_000,
        samples=16_000,
        n_filters=24,
        oversample=2,
        low_hz=50.0,
        high_hz=8_000.0,
        env_rate=100,
        envelope_stride=4,
    ),
}


def preset(name: str, **overrides: Any) -> CochleagramConfig:
    """A named preset, optionally with some settings changed (the name is then ``NAME+custom``)."""
    try:
        cfg = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown cochleagram preset {name!r}; known: {', '.join(PRESETS)}") from None
    if overrides:
        cfg = replace(cfg, name=f"{name}+custom", **overrides)
    return cfg


def filterbank(cfg: CochleagramConfig, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """The channels' gains on the rFFT frequency grid of a ``samples``-long signal.

    Returns ``(gains [channels, samples//2 + 1], nominal_hz [channels])`` in ascending frequency:
    low-pass channels (nominal = where they start to fall), band-pass (nominal = centre),
    high-pass (nominal = where they reach full gain, at most the Nyquist frequency). Squared gains
    sum to 1 at every frequency.

    On the ERB axis every filter is a half cosine of half-width ``D = (E_hi − E_lo)/(n + 1)``;
    centres step by ``d = D / oversample``. A dense, endless row of such filters has squared
    responses summing to ``oversample`` everywhere (cos² + sin² in pairs ``D`` apart); the edge
    filters stand in for the missing ones past each end (each is flat where its chain of missing
    filters would be), so the sum stays ``oversample``, and dividing by √oversample makes it 1.
    """
    s = cfg.oversample
    e_lo, e_hi = float(erb_number(cfg.low_hz)), float(erb_number(cfg.high_hz))
    half = (e_hi - e_lo) / (cfg.n_filters + 1)
    step = half / s
    freqs = np.fft.rfftfreq(samples, d=1.0 / cfg.sample_rate)
    e = np.asarray(erb_number(freqs))

    def bump(centre: float) -> np.ndarray:
        x = (e - centre) / half
        return np.where(np.abs(x) < 1.0, np.cos(0.5 * np.pi * x), 0.0)

    rows: list[np.ndarray] = []
    nominal: list[float] = []
    for j in reversed(range(s)):  # low-pass, lowest first
        c = e_lo - j * step
        rows.append(np.where(e <= c, 1.0, bump(c)))
        nominal.append(float(erb_to_hz(max(c, 0.0))))
    for k in range(1, s * (cfg.n_filters + 1)):  # band-pass
        c = e_lo + k * step
        rows.append(bump(c))
        nominal.append(float(erb_to_hz(c)))
    for j in range(s):  # high-pass
        c = e_hi + j * step
        rows.append(np.where(e >= c, 1.0, bump(c)))
        nominal.append(min(float(erb_to_hz(c)), cfg.sample_rate / 2))
    gains = np.stack(rows) / math.sqrt(s)
    return gains, np.asarray(nominal)


def kaiser_sinc(cfg: CochleagramConfig) -> np.ndarray:
    """The downsampling low-pass: a sinc with its cut-off at ``env_rate / 2``, Kaiser-windowed,
    normalized to unit DC gain so that a steady envelope keeps its level."""
    n = np.arange(cfg.taps) - (cfg.taps - 1) / 2
    h = np.sinc(n / cfg.factor) * np.kaiser(cfg.taps, cfg.kaiser_beta)
    return h / h.sum()


class _ClippedPower(torch.autograd.Function):
    """``(x + offset) ** power`` whose backward clips the local derivative at ``clip``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, power: float, offset: float, clip: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.consts = (power, offset, clip)
        return (x + offset).pow(power)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (x,) = ctx.saved_tensors
        power, offset, clip = ctx.consts
        local = (power * (x + offset).pow(power - 1.0)).clamp(max=clip)
        return grad * local, None, None, None


class Cochleagram(nn.Module):
    """Waveforms ``[B, T]`` (values in [-1, 1]) → compressed envelopes ``[B, channels, bins]``.

    Inputs should be de-meaned and RMS-normalized as the model was trained (the demo models use
    RMS 0.1); the module itself does not normalize, so that metamer optimization from near-silent
    noise sees the true gradient of level.
    """

    def __init__(self, config: CochleagramConfig | str = "demo") -> None:
        super().__init__()
        self.config = preset(config) if isinstance(config, str) else config
        self._cache: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # per input length
        cfg = self.config
        # The kernel cut into blocks of ``factor`` taps: tap j·factor + r is weight [r, j]
        # (zero-padded past the last tap); see :meth:`forward`.
        blocks = 2 * cfg.sinc_zero_crossings + 1
        padded = np.zeros(blocks * cfg.factor)
        padded[: cfg.taps] = kaiser_sinc(cfg)
        weight = padded.reshape(blocks, cfg.factor).T  # [factor, blocks]
        self.register_buffer("kernel", torch.tensor(weight, dtype=torch.float32), persistent=False)
        _, hz = filterbank(cfg, cfg.samples)
        self.channel_hz: np.ndarray = hz

    def extra_repr(self) -> str:
        c = self.config
        return f"preset={c.name!r}, {c.sample_rate} Hz, {c.channels} channels, {c.env_rate} Hz envelopes"

    def gains(self, samples: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The filterbank for a ``samples``-long input as a sparse map, laid out for :meth:`envelopes`.

        Each channel passes only a narrow range of rFFT bins (under 8 % of channels × bins are
        nonzero for the presets), so the bank is stored as its nonzero entries: ``bins`` (rFFT bin
        k), ``slots`` (where the entry lands: channel·M + k mod M, M = samples / envelope_stride)
        and ``values`` (the gain, times the one-sided-spectrum weight — 1 at DC and Nyquist,
        2 elsewhere — that makes the analytic signal, and the 1/stride of the shorter inverse FFT).
        """
        key = (samples, device)
        cached = self._cache.get(key)
        if cached is None:
            gains, _ = filterbank(self.config, samples)
            weights = np.full(gains.shape[1], 2.0)
            weights[0] = 1.0
            if samples % 2 == 0:
                weights[-1] = 1.0
            m = samples // self.config.envelope_stride
            channel, k = np.nonzero(gains)
            values = gains[channel, k] * weights[k] / self.config.envelope_stride
            cached = (
                torch.tensor(k, dtype=torch.long, device=device),
                torch.tensor(channel * m + k % m, dtype=torch.long, device=device),
                torch.tensor(values, dtype=torch.float32, device=device),
            )
            if len(self._cache) >= 8:  # lengths rarely vary; keep the cache from growing without bound
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def envelopes(self, wave: torch.Tensor) -> torch.Tensor:
        """Hilbert envelopes ``[B, channels, ceil(T / envelope_stride)]`` at every
        ``envelope_stride``-th sample, before downsampling and compression.

        The analytic signal of a channel is the inverse DFT of its one-sided spectrum A_k. At the
        instants t = m·s (s = stride, M = T/s of them) the DFT kernel e^{2πi·k·m/M} repeats every M
        bins, so summing A_k over k mod M and taking an M-point inverse FFT gives the analytic
        signal there exactly, at 1/s of the cost. With s = 1 this is the plain full-rate envelope.
        """
        x = wave if wave.dim() == 2 else wave.reshape(1, -1)
        stride = self.config.envelope_stride
        if x.shape[-1] % stride:
            x = torch.nn.functional.pad(x, (0, stride - x.shape[-1] % stride))
        n = x.shape[-1]
        m = n // stride
        bins, slots, values = self.gains(n, x.device)
        spec = torch.view_as_real(torch.fft.rfft(x.float(), n=n))  # [B, F, 2]
        picked = spec[:, bins] * values[:, None]  # the nonzero filter outputs, [B, nonzero, 2]
        band = spec.new_zeros(x.shape[0], self.config.channels * m, 2).index_add(1, slots, picked)
        band = torch.view_as_complex(band).reshape(x.shape[0], self.config.channels, m)  # filtered, folded
        return torch.fft.ifft(band, n=m).abs()

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() == 1:
            wave = wave.unsqueeze(0)
        elif wave.dim() == 3 and wave.shape[1] == 1:
            wave = wave[:, 0]
        if wave.dim() != 2:
            raise ValueError(f"cochleagram input must be [batch, samples], got shape {tuple(wave.shape)}")
        cfg = self.config
        bins = cfg.bins(wave.shape[-1])  # raises a clear error for too-short inputs
        env = self.envelopes(wave)
        n = env.shape[-1]
        weight = self.kernel.to(env.dtype)  # [factor, blocks]
        blocks = weight.shape[-1]
        need = (bins + blocks - 1) * cfg.factor  # the last window's zero taps may reach past the end
        env = torch.nn.functional.pad(env, (0, need - n)) if need > n else env[..., :need]
        # Bin i = Σ_j Σ_r env[(i + j)·factor + r] · kernel[j·factor + r]: one matrix product over r,
        # then a sum along the diagonals over j (far faster to differentiate than a strided conv).
        partial = env.reshape(*env.shape[:2], bins + blocks - 1, cfg.factor) @ weight
        low = partial[:, :, 0:bins, 0]
        for j in range(1, blocks):
            low = low + partial[:, :, j : j + bins, j]
        low = low.clamp(min=0.0)  # the sinc's ripple can dip below zero
        return _ClippedPower.apply(low, cfg.power, cfg.offset, cfg.grad_clip)


def display(wave: np.ndarray | torch.Tensor, sample_rate: int) -> tuple[np.ndarray, np.ndarray, float]:
    """A cochleagram for figures (diagnostics), from a waveform at any rate.

    Uses the ``demo`` preset's filter density (n = 24, 2× oversampling, 50 Hz up to
    min(8 kHz, Nyquist)) with envelopes near 100 Hz. Returns ``(image [channels, bins],
    nominal channel frequencies in Hz, envelope rate in Hz)``.
    """
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32)).reshape(1, -1)
    sr = int(sample_rate)
    factor = min((d for d in range(1, sr + 1) if sr % d == 0), key=lambda d: abs(d - sr / 100))
    demo = PRESETS["demo"]
    cfg = replace(demo, name="display", sample_rate=sr, samples=x.shape[-1], high_hz=min(demo.high_hz, sr / 2),
                  env_rate=sr // factor, envelope_stride=1)
    with torch.no_grad():
        image = Cochleagram(cfg)(x)[0].numpy()
    _, hz = filterbank(cfg, x.shape[-1])
    return image, hz, float(cfg.env_rate)
