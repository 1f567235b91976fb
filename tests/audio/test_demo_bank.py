"""The committed demo audio bank: valid, real 16-bit WAVs a browser plays, and the promised content."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from synthesis.bank import open_bank
from synthesis.media import decode_wav
from synthesis.models.words import WORDS

BANK = Path(__file__).resolve().parents[2] / "demo" / "banks" / "words"


@pytest.fixture(scope="module")
def bank():  # type: ignore[no-untyped-def]
    with open_bank(BANK) as b:
        yield b


def test_the_bank_passes_the_reader_and_is_small(bank) -> None:  # type: ignore[no-untyped-def]
    assert bank.manifest.modality == "audio"
    assert sum(f.size for f in bank.files.values()) < 15_000_000


def test_every_file_is_a_16_bit_mono_wav_of_1_s_at_16_khz(bank) -> None:  # type: ignore[no-untyped-def]
    for s in bank.manifest.stimuli:
        data = (bank.root / s.file).read_bytes()
        assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", s.file
        info = sf.info(str(bank.root / s.file))
        assert (info.format, info.subtype, info.channels, info.samplerate, info.frames) == ("WAV", "PCM_16", 1, 16_000, 16_000), s.file
        wave, rate = decode_wav(data)
        assert rate == 16_000 and wave.shape == (16_000,) and float(abs(wave).max()) <= 1.0


def test_categories_are_the_vocabulary_words(bank) -> None:  # type: ignore[no-untyped-def]
    assert [(c.id, c.label) for c in bank.manifest.categories] == [(w, w) for w in WORDS]


def test_three_sources_per_word_and_metamers_from_the_cochleagram_to_the_final_layer(bank) -> None:  # type: ignore[no-untyped-def]
    m = bank.manifest
    naturals = [s for s in m.stimuli if s.kind == "natural"]
    assert Counter(s.label for s in naturals) == {w: 3 for w in WORDS}
    layers = {s.layer for s in m.stimuli if s.kind == "metamer"}
    assert len(layers) >= 4 and {"cochleagram", "final"} <= layers
    for layer in layers:
        assert {s.source for s in m.stimuli if s.layer == layer} == {s.id for s in naturals}
    (model,) = m.models
    assert model.front_end is not None and model.front_end["kind"] == "cochleagram"


def test_practice_and_catch_clips_cover_every_word_without_source_voices(bank) -> None:  # type: ignore[no-untyped-def]
    m = bank.manifest
    practice = [s for s in m.stimuli if s.kind == "practice"]
    catch = [s for s in m.stimuli if s.kind == "catch"]
    assert all(n >= 2 for n in Counter(s.label for s in practice).values()) and len({s.label for s in practice}) == len(WORDS)
    assert {s.label for s in catch} == set(WORDS)
    source_voices = {s.id.split("-", 1)[1] for s in m.stimuli if s.kind == "natural"}
    practice_voices = {s.id.removeprefix("practice-").split("-", 1)[1] for s in practice}
    assert not {v.split("-")[0] for v in source_voices} & {v.split("-")[0] for v in practice_voices}
