"""eSpeak NG through ctypes: real speech, reproducible whatever the order or company."""

from __future__ import annotations

import numpy as np
import pytest

from synthesis.speech import SAMPLE_RATE, SpeechError, Utterance, accents, resample, synthesize, variants


def test_a_word_comes_out_as_speech_at_22050_hz() -> None:
    (wave,) = synthesize([Utterance("seven", "en-us")])
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert 0.2 < len(wave) / SAMPLE_RATE < 1.5
    assert 0.01 < float(np.sqrt(np.mean(wave**2))) and float(np.abs(wave).max()) <= 1.0


def test_each_utterance_is_the_same_whatever_else_is_synthesized_around_it() -> None:
    # f2 has breath noise (eSpeak seeds it from the clock unless told otherwise); m3 has none.
    target = [Utterance("left", "en-029+f2", rate=160, pitch=40, seed=7), Utterance("stop", "en+m3")]
    others = [Utterance("go", "en-us+klatt4"), Utterance("yes", "en-gb-scotland"), Utterance("nine", "en+f5")]
    alone = synthesize(target, workers=1)
    mixed = synthesize(others + target[::-1] + others, workers=2)
    np.testing.assert_array_equal(alone[0], mixed[4])
    np.testing.assert_array_equal(alone[1], mixed[3])


def test_voice_rate_and_breath_seed_change_the_sound() -> None:
    base = Utterance("seven", "en-us+f2", seed=1)
    waves = synthesize([base, Utterance("seven", "en-us+m3", seed=1), Utterance("seven", "en-us+f2", rate=120, seed=1),
                        Utterance("seven", "en-us+f2", seed=2)])
    assert len(waves[2]) > len(waves[0]) * 1.2  # slower speech is longer
    for other in waves[1:]:
        assert len(other) != len(waves[0]) or not np.array_equal(other, waves[0])


def test_an_unknown_voice_is_refused_by_name() -> None:
    with pytest.raises(SpeechError, match="en-gb"):
        synthesize([Utterance("one", "en-gb")])


@pytest.mark.parametrize("bad", [{"text": "  "}, {"rate": 40}, {"pitch": 101}, {"seed": -1}])
def test_impossible_utterances_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Utterance(**({"text": "one"} | bad))


def test_the_package_ships_english_accents_and_many_variants() -> None:
    assert {"en", "en-us", "en-029"} <= set(accents())
    assert len(variants()) >= 80 and "klatt4" in variants()


def test_resampling_keeps_a_tone_at_its_frequency() -> None:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    y = resample(np.sin(2 * np.pi * 1000 * t), SAMPLE_RATE, 16_000)
    assert len(y) == 16_000
    np.testing.assert_allclose(y, np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000), atol=1e-5)
