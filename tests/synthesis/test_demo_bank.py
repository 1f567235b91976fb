"""The committed demo image bank (demo/banks/digits) is valid and holds what the web experiment needs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from synthesis.bank import open_bank

ROOT = Path(__file__).resolve().parents[2]
BANK = ROOT / "demo" / "banks" / "digits"
DIGITS = [str(d) for d in range(10)]


def test_demo_bank_is_valid_and_complete() -> None:
    with open_bank(BANK) as bank:
        m = bank.manifest
    assert m.modality == "image"
    assert [c.id for c in m.categories] == DIGITS and [c.label for c in m.categories] == DIGITS
    assert all(c.icon for c in m.categories)
    kinds = Counter((s.kind, s.label) for s in m.stimuli)
    for d in DIGITS:
        assert kinds[("natural", d)] >= 5
        assert kinds[("practice", d)] >= 3
        assert kinds[("catch", d)] >= 1
    (model,) = m.models
    assert len(model.layers) >= 4 and model.layers[0] == "relu1" and model.layers[-1] == "final"
    naturals = {s.id for s in m.stimuli if s.kind == "natural"}
    for layer in model.layers:
        assert {s.source for s in m.stimuli if s.kind == "metamer" and s.layer == layer} == naturals
        assert layer in m.null[model.name]


def test_demo_sources_and_practice_come_from_different_fonts() -> None:
    from synthesis.train.digit_images import HELDOUT_FONTS, PRACTICE_FONTS, TRAIN_FONTS

    with open_bank(BANK) as bank:
        m = bank.manifest
    heldout = {f.name for f in HELDOUT_FONTS}
    # Source ids are d<digit>-<font>; practice ids are practice-d<digit>-<font>-<k>.
    source_fonts = {s.id.split("-", 1)[1] for s in m.stimuli if s.kind == "natural"}
    practice_fonts = {s.id.removeprefix("practice-").split("-", 1)[1].rsplit("-", 1)[0] for s in m.stimuli if s.kind == "practice"}
    assert source_fonts <= heldout  # never seen by the model in training
    assert practice_fonts <= {f.name for f in PRACTICE_FONTS} <= {f.name for f in TRAIN_FONTS}
    assert not source_fonts & practice_fonts


def test_demo_folder_stays_small() -> None:
    total = sum(p.stat().st_size for p in (ROOT / "demo").rglob("*") if p.is_file() and "digits" in p.parts)
    assert total < 10_000_000
