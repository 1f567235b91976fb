"""The demo word model: waveforms in, the cochleagram inside, registered, and it hears held-out voices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synthesis.bank import ModelInfo
from synthesis.features import FeatureExtractor
from synthesis.models import load_model, registered_models
from synthesis.models.words import DEFAULT_CHECKPOINT, FRONT_END, SAMPLES, WORDS, WordNet
from synthesis.train.word_clips import HELDOUT_VARIANTS, random_specs, render, train_variants

BANK_LAYERS = ["cochleagram", "relu1", "relu3", "relufc", "final"]


def test_the_model_takes_waveforms_and_holds_its_cochleagram() -> None:
    net = WordNet().eval()
    with torch.no_grad():
        out = net(torch.randn(2, SAMPLES) * 0.1)
    assert tuple(out.shape) == (2, len(WORDS))
    assert next(iter(net.named_children()))[0] == "cochleagram"


def test_the_engine_reads_every_bank_layer_from_the_cochleagram_to_the_logits() -> None:
    fe = FeatureExtractor(WordNet(), BANK_LAYERS, torch.zeros(1, SAMPLES), fake_relu=True)
    assert list(fe.layers) == BANK_LAYERS
    assert fe.shape("cochleagram") == FRONT_END.output_shape()
    assert fe.shape("final") == (len(WORDS),)
    assert {"relu1", "relu3", "relufc"} <= set(fe.fake_relu_layers)


def test_the_vocabulary_is_at_least_20_lowercase_ascii_words() -> None:
    assert len(WORDS) >= 20 and len(set(WORDS)) == len(WORDS)
    assert all(w.isascii() and w.isalpha() and w == w.lower() for w in WORDS)


def test_training_and_held_out_voices_never_overlap() -> None:
    assert not set(HELDOUT_VARIANTS) & set(train_variants())


def test_the_registry_loads_the_committed_model_with_its_front_end_recorded() -> None:
    assert "words" in registered_models()
    model = load_model("words")
    assert DEFAULT_CHECKPOINT.stat().st_size < 5_000_000
    assert model.input.kind == "audio" and model.input.sample_rate == 16_000 and model.input.samples == SAMPLES
    assert model.classes == WORDS
    info = ModelInfo(name="words", checkpoint_sha256=model.checkpoint_sha256, layers=BANK_LAYERS, input=model.input,
                     front_end=model.front_end)
    assert info.front_end is not None and info.front_end["channels"] == 53 and info.front_end["sample_rate"] == 16_000


def test_the_committed_model_recognizes_words_from_voices_it_never_heard() -> None:
    specs = random_specs(60, HELDOUT_VARIANTS, seed=123, augment=False)
    clips = torch.from_numpy(render(specs))
    decided = load_model("words").decide(clips)
    accuracy = np.mean([d == WORDS[s.label] for d, s in zip(decided, specs, strict=True)])
    assert accuracy >= 0.85


def test_the_null_sampler_draws_reproducible_training_clips_at_rms_0_1() -> None:
    model = load_model("words")
    a, b = model.sample_naturals(4, seed=3), model.sample_naturals(4, seed=3)
    assert tuple(a.shape) == (4, SAMPLES)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    np.testing.assert_allclose(a.square().mean(dim=1).sqrt().numpy(), 0.1, rtol=0.02)
