"""Tiny models and signals for synthesis tests: a few hundred parameters, 8×8 grey images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from synthesis.bank import InputSpec
from synthesis.media import encode_png
from synthesis.models.registry import LoadedModel, state_sha256

SIZE = 8
CLASSES = ["a", "b", "c"]


class TinyNet(nn.Module):
    """conv → relu → conv(/2) → relu → flatten → fc (3 classes), with a residual add for fx nodes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(6 * 4 * 4, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.conv1(x))
        h = h + x  # a traced node ("add") that is not a module
        h = self.relu2(self.conv2(h))
        return self.fc(torch.flatten(h, 1))


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so layers are read with hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(4 * 4 * 4, len(CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(x)
        if float(h.sum()) > -1.0:  # always true, but fx cannot know
            h = self.relu2(self.conv2(h))
        return self.fc(h.flatten(1))


def make_net(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().eval()


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """Blurry random 8×8 images in [0, 1]: the tiny model's 'natural' signals."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False).clamp(0, 1)


def tiny_model(seed: int = 0) -> LoadedModel:
    """Factory for plans: ``model: tests.synthesis.tiny:tiny_model``."""
    net = make_net(seed)
    return LoadedModel(
        name="tiny",
        module=net,
        input=InputSpec(kind="image", shape=[1, SIZE, SIZE], range=(0.0, 1.0)),
        classes=list(CLASSES),
        checkpoint_sha256=state_sha256(net),
        natural_sampler=smooth_images,
    )


def write_sources(folder: Path, per_class: int = 2, seed: int = 1) -> Path:
    """Write ``folder/<class>/<name>.png`` natural sources."""
    imgs = smooth_images(per_class * len(CLASSES), seed)
    for i, img in enumerate(imgs):
        label = CLASSES[i % len(CLASSES)]
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"s{i:02d}.png").write_bytes(encode_png(img.numpy()))
    return folder


def write_plan(path: Path, *, layers: tuple[str, ...] = ("relu1", "relu2", "fc"), round_steps: int = 15, batch_size: int = 3,
               extra: str = "") -> Path:
    path.write_text(
        f"""
name: tiny-test
modality: image
seed: 3
categories: [{{id: a, label: A}}, {{id: b, label: B}}, {{id: c, label: C}}]
sources: {{folder: sources}}
models:
  - {{name: tiny, model: "tests.synthesis.tiny:tiny_model", layers: [{", ".join(layers)}]}}
synthesis: {{preset: paper, rounds: 2, round_steps: {round_steps}, patience: 8, batch_size: {batch_size}}}
null: {{pairs: 40, signals: 12}}
{extra}
""",
        encoding="utf-8",
    )
    return path


def numpy_image(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
