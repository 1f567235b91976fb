"""The demo word model: a cochleagram front end and a small CNN that recognizes 20 spoken words.

The cochleagram (:mod:`synthesis.cochleagram`, preset ``demo``) is the model's first module, so
the model takes **waveforms** ``[B, 16000]`` (1 s at 16 kHz, values in [-1, 1], natural clips at
RMS 0.1) and metamers are optimized as waveforms. The CNN downsamples early (stride-2
convolutions), because on a CPU synthesis cost is dominated by full-resolution layers.

Layers used for the demo bank, shallow to final: ``cochleagram`` (53 × 90), ``relu0``
(24 × 27 × 45), ``relu1`` (48 × 14 × 23), ``relu3`` (96 × 7 × 12), ``relufc`` (256) and ``final``
(the 20 logits).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from synthesis.bank import InputSpec
from synthesis.cochleagram import Cochleagram, CochleagramConfig
from synthesis.models.registry import LoadedModel, checkpoint_sha256, load_state, register_model
from synthesis.word_task import FRONT_END, SAMPLE_RATE, SAMPLES, WORDS

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "demo" / "models" / "words.pt"


class WordNet(nn.Module):
    """cochleagram → norm → 4 conv (5×5 /2, 3×3 /2, 3×3 /2, 3×3) → avgpool (2×3) → fc → fc.

    About 250 k parameters (1 MB). ``norm0`` (a 1-channel batch norm) puts the compressed envelopes on a
    unit scale; in eval mode it is a fixed affine map.
    """

    def __init__(self, front_end: CochleagramConfig = FRONT_END, n_classes: int = len(WORDS)) -> None:
        super().__init__()
        self.cochleagram = Cochleagram(front_end)
        self.norm0 = nn.BatchNorm2d(1)
        self.conv0 = nn.Conv2d(1, 24, 5, stride=2, padding=2)
        self.bn0 = nn.BatchNorm2d(24)
        self.relu0 = nn.ReLU()
        self.conv1 = nn.Conv2d(24, 48, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(48)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(48, 64, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(64, 96, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(96)
        self.relu3 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d((2, 3))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(96 * 2 * 3, 256)
        self.relufc = nn.ReLU()
        self.dropout = nn.Dropout(0.3)
        self.final = nn.Linear(256, n_classes)

    def body(self, coch: torch.Tensor) -> torch.Tensor:
        """Everything after the front end: cochleagrams ``[B, C, T]`` → logits (training uses
        this on precomputed cochleagrams)."""
        x = self.norm0(coch.unsqueeze(1))
        x = self.relu0(self.bn0(self.conv0(x)))
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.flatten(self.avgpool(x))
        x = self.relufc(self.fc(x))
        return self.final(self.dropout(x))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.body(self.cochleagram(wave))


@register_model("words")
def load_words(checkpoint: str | Path | None = None) -> LoadedModel:
    """The committed demo word model (``demo/models/words.pt`` unless ``checkpoint`` says otherwise)."""
    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    net = WordNet()
    load_state(net, path)
    return LoadedModel(
        name="words",
        module=net.eval(),
        input=InputSpec(kind="audio", sample_rate=SAMPLE_RATE, samples=SAMPLES, range=(-1.0, 1.0)),
        classes=list(WORDS),
        checkpoint_sha256=checkpoint_sha256(path),
        description="demo word CNN on a cochleagram (1 s at 16 kHz, RMS 0.1), trained by python -m synthesis.train.words",
        front_end=FRONT_END.to_dict(),
        natural_sampler="synthesis.train.word_clips:natural_words",  # by name: no training-data code imported here
    )
