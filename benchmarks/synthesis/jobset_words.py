"""The audio job set: waveform metamers of the demo word model (cochleagram front end + CNN).

Six held-out-voice sources (one per word, first six words) × four layers from the cochleagram to
the final logits. Signals are waveforms ``[N, 16000]`` (1 s at 16 kHz) in [-1, 1], quantized as a
bank stores them (16-bit PCM), and synthesis starts from the paper's near-silent noise (SD 1e-7).
"""

from __future__ import annotations

import torch

from benchmarks.synthesis.jobsets import JobSet, register_jobset
from synthesis.models.registry import load_model
from synthesis.optimize import preset
from synthesis.signals import encode


@register_jobset("words")
def words() -> JobSet:
    from synthesis.train.word_clips import bank_sources

    model = load_model("words")
    items = bank_sources(per_word=1, seed=1)[:6]
    sources = torch.stack([encode(torch.as_tensor(arr), "audio", model.input.sample_rate)[1] for _, _, arr in items])
    return JobSet(
        name="words",
        model=model,
        layers=["cochleagram", "relu1", "relu3", "final"],
        sources=sources,
        source_ids=[sid for sid, _, _ in items],
        # 8 rounds as in the paper, short rounds so that one-at-a-time and plenoptic finish in minutes.
        settings=preset("paper", rounds=8, round_steps=60, patience=15, fake_relu=False),
    )
