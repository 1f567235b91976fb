"""The training script runs end to end (tiny sizes) and refuses to save a model below the bar."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from synthesis.models.words import WordNet
from synthesis.train.words import main

TINY = ["--train-size", "20", "--test-size", "10", "--epochs", "1", "--batch-size", "10", "--threads", "1", "--workers", "1"]


def test_a_tiny_run_writes_loadable_weights_and_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "words.pt"
    assert main([*TINY, "--out", str(out), "--min-accuracy", "0"]) == 0
    WordNet().load_state_dict(torch.load(out, weights_only=True))
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["train_clips"] == 20 and 0.0 <= report["heldout_accuracy_clean"] <= 1.0
    assert set(report["heldout_accuracy_noisy_by_snr"]) == {"-10..-5 dB", "-5..+0 dB", "+0..+5 dB", "+5..+10 dB"}


def test_a_model_below_the_required_held_out_accuracy_is_not_saved(tmp_path: Path) -> None:
    out = tmp_path / "words.pt"
    assert main([*TINY, "--out", str(out), "--min-accuracy", "1.01"]) == 1
    assert not out.exists()
