"""Waveform metamers with the shared optimizer and criteria: they converge, stay in range, make banks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from synthesis.bank import open_bank
from synthesis.features import FeatureExtractor
from synthesis.media import decode_wav
from synthesis.optimize import Problem, initial_signal, preset, synthesize
from synthesis.run import run_plan
from tests.audio.tiny_audio import RATE, SAMPLES, glides, tiny_audio_model

LAYERS = ["cochleagram", "relu1", "fc"]


def test_waveform_metamers_decrease_the_loss_and_stay_within_plus_minus_one() -> None:
    model = tiny_audio_model()
    fe = FeatureExtractor(model.module, LAYERS, torch.zeros(1, SAMPLES), fake_relu=True)
    settings = preset("paper", rounds=3, round_steps=40)
    naturals = glides(2, seed=5)
    with torch.no_grad():
        targets = fe(naturals)
    problems = [Problem(f"g{i}/{la}", la, targets[la][i], initial_signal((SAMPLES,), 0, f"g{i}", "audio", settings, (-1.0, 1.0)))
                for la in LAYERS for i in range(2)]
    assert float(problems[0].init.std()) < 1e-6  # the paper's near-silent start (SD 1e-7)
    for r in synthesize(fe, problems, settings, (-1.0, 1.0)):
        assert r.losses[-1] < 0.5 * r.losses[0], r.key
        assert float(r.x.abs().max()) <= 1.0
        if r.layer == "cochleagram":
            assert r.loss < 0.3, r.key


def write_plan(tmp_path: Path) -> Path:
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"""
name: tiny-audio-test
modality: audio
seed: 4
categories: [{{id: low, label: low}}, {{id: mid, label: mid}}, {{id: high, label: high}}]
sources: {{factory: "tests.audio.tiny_audio:glide_sources", kwargs: {{per_class: 1}}}}
practice: {{factory: "tests.audio.tiny_audio:glide_sources", kwargs: {{per_class: 1, seed: 9}}}}
models:
  - {{name: tiny-audio, model: "tests.audio.tiny_audio:tiny_audio_model", layers: [{", ".join(LAYERS)}]}}
synthesis: {{preset: paper, rounds: 2, round_steps: 25, patience: 10, batch_size: 3, layers_per_job: all}}
null: {{pairs: 40, signals: 12}}
""", encoding="utf-8")
    return plan


def test_an_audio_plan_writes_a_bank_of_16_bit_wavs_that_the_reader_accepts(tmp_path: Path) -> None:
    summary = run_plan(write_plan(tmp_path), tmp_path / "bank", show_progress=False, log=lambda _: None)
    assert summary.metamers == 9
    with open_bank(tmp_path / "bank") as bank:
        m = bank.manifest
        assert m.modality == "audio"
        assert m.models[0].front_end is not None and m.models[0].front_end["channels"] == 10
        assert m.models[0].input.sample_rate == RATE
        metamers = [s for s in m.stimuli if s.kind == "metamer"]
        assert {s.layer for s in metamers} == set(LAYERS)
        for s in m.stimuli:
            info = sf.info(str(bank.root / s.file))
            assert (info.samplerate, info.frames, info.channels, info.subtype) == (RATE, SAMPLES, 1, "PCM_16")
        for s in metamers:
            wave, _ = decode_wav((bank.root / s.file).read_bytes())
            assert np.abs(wave).max() <= 1.0
            assert s.metrics is not None and s.metrics.loss is not None and s.metrics.loss < 1.0


def test_the_diagnostic_shows_natural_and_metamer_cochleagrams_side_by_side(tmp_path: Path) -> None:
    from PIL import Image

    from synthesis.cochleagram import display
    from synthesis.diagnostics import save_diagnostic

    natural, noise = glides(1, seed=2)[0], torch.randn(SAMPLES, generator=torch.Generator().manual_seed(0)) * 0.1
    path = save_diagnostic(tmp_path / "d.png", natural=natural, metamer=noise, losses=[1.0, 0.5, 0.2], title="t",
                           kind="audio", sample_rate=RATE)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > im.height
    image, hz, env_rate = display(natural.numpy(), RATE)
    assert image.shape == (len(hz), image.shape[1]) and env_rate == pytest.approx(100.0)
    assert hz[-1] <= RATE / 2 and np.all(np.diff(hz) >= 0)
