"""A tiny waveform model for audio synthesis tests: a small cochleagram and a few hundred weights."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from synthesis.bank import InputSpec
from synthesis.cochleagram import Cochleagram, CochleagramConfig
from synthesis.models.registry import LoadedModel, state_sha256

RATE = 8_000
SAMPLES = 4_000  # 0.5 s
CLASSES = ["low", "mid", "high"]
FRONT_END = CochleagramConfig(name="tiny", sample_rate=RATE, samples=SAMPLES, n_filters=8, oversample=1,
                              low_hz=100.0, high_hz=4_000.0, env_rate=100, envelope_stride=4)


class TinyAudioNet(nn.Module):
    """cochleagram (10 × 40) → conv → relu → conv(/2) → relu → fc (3 classes)."""

    def __init__(self) -> None:
        super().__init__()
        self.cochleagram = Cochleagram(FRONT_END)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(4 * 5 * 20, len(CLASSES))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.conv1(self.cochleagram(wave).unsqueeze(1)))
        h = self.relu2(self.conv2(h))
        return self.fc(h.flatten(1))


def glides(n: int, seed: int) -> torch.Tensor:
    """Harmonic tone glides with random pitch and timing at RMS 0.1: the tiny model's 'speech'."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / RATE
    out = np.empty((n, SAMPLES), dtype=np.float32)
    for i in range(n):
        f0 = rng.uniform(120, 900) * (1 + rng.uniform(-0.3, 0.3) * t)
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        x = sum(np.sin(k * phase) / k for k in range(1, 4)) * np.exp(-((t - rng.uniform(0.15, 0.35)) / 0.08) ** 2)
        x = x + 1e-3 * rng.standard_normal(SAMPLES)
        out[i] = 0.1 * x / np.sqrt(np.mean(x**2))
    return torch.from_numpy(out)


def tiny_audio_model(seed: int = 0) -> LoadedModel:
    """Factory for plans: ``model: tests.audio.tiny_audio:tiny_audio_model``."""
    torch.manual_seed(seed)
    net = TinyAudioNet().eval()
    return LoadedModel(
        name="tiny-audio",
        module=net,
        input=InputSpec(kind="audio", sample_rate=RATE, samples=SAMPLES, range=(-1.0, 1.0)),
        classes=list(CLASSES),
        checkpoint_sha256=state_sha256(net),
        front_end=FRONT_END.to_dict(),
        natural_sampler=glides,
    )


def glide_sources(per_class: int = 1, seed: int = 1) -> list[tuple[str, str, np.ndarray]]:
    """Factory for plans' sources: ``(id, class, waveform)`` triples."""
    x = glides(per_class * len(CLASSES), seed).numpy()
    return [(f"g{i}", CLASSES[i % len(CLASSES)], x[i]) for i in range(len(x))]
