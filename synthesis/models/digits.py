"""The demo image model: a small CNN that reads 32×32 grey digits (dark ink on a light background).

It downsamples early (stride-2 convolutions) because on a CPU the cost of synthesis is dominated by
the full-resolution layers (docs/science.md §8). Input values are pixels in [0, 1]; the normalization to
[-1, 1] is the model's first layer, so metamers are optimized directly in pixel space.

Layers used for the demo bank, shallow to final: ``relu1`` (16×16×16), ``relu2`` (32×8×8),
``relu3`` (64×8×8), ``relufc`` (128) and ``final`` (the 10 logits).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from synthesis.bank import InputSpec
from synthesis.models.registry import LoadedModel, Normalize, checkpoint_sha256, load_state, register_model

DIGIT_CLASSES = [str(d) for d in range(10)]
IMAGE_SIZE = 32
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "demo" / "models" / "digits.pt"


class DigitNet(nn.Module):
    """conv(5×5, /2) → conv(3×3, /2) → conv(3×3) → pool → fc → fc. About 160 k parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.normalize = Normalize([0.5], [0.5])
        self.conv1 = nn.Conv2d(1, 16, 5, stride=2, padding=2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.relufc = nn.ReLU()
        self.dropout = nn.Dropout(0.3)
        self.final = nn.Linear(128, len(DIGIT_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        x = self.flatten(self.pool(x))
        x = self.relufc(self.fc1(x))
        return self.final(self.dropout(x))


@register_model("digits")
def load_digits(checkpoint: str | Path | None = None) -> LoadedModel:
    """The committed demo digit model (``demo/models/digits.pt`` unless ``checkpoint`` says otherwise)."""
    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    net = DigitNet()
    load_state(net, path)
    return LoadedModel(
        name="digits",
        module=net.eval(),
        input=InputSpec(kind="image", shape=[1, IMAGE_SIZE, IMAGE_SIZE], range=(0.0, 1.0)),
        classes=list(DIGIT_CLASSES),
        checkpoint_sha256=checkpoint_sha256(path),
        description="demo digit CNN (32×32 grey), trained by python -m synthesis.train.digits",
        natural_sampler="synthesis.train.digit_images:natural_digits",  # by name: no training-data code imported here
    )
