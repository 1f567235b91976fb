"""Spoken-word clips for the demo word model, generated with eSpeak NG (:mod:`synthesis.speech`).

A **voice** is an eSpeak accent (8 English ones) with an optional variant (formant set, pitch
contour, breathiness; about 100 ship). Variants are split once, by name: :data:`HELDOUT_VARIANTS`
are never used in training, so "held-out voices" are timbres the model has never heard (in any
accent). Within a split, every utterance draws its accent, variant, rate (130–220 wpm), pitch
(25–75) and pitch range (20–80) at random.

Training clips (:func:`training_clips`) add a time shift of the word's centre (±80 ms) and, for
two clips in three, a background noise (:data:`synthesis.clips.NOISE_KINDS`, babble made from
sentences without any vocabulary word) at −10 to +10 dB SNR. Clip format: 1 s at 16 kHz, word
centred at the midpoint, RMS 0.1, faint noise floor (:mod:`synthesis.clips`).

Everything is a deterministic function of its seed: utterance parameters come from a seeded
generator and each utterance is synthesized in a fresh process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from synthesis.clips import NOISE_KINDS, background, make_clip, trim
from synthesis.speech import ENGLISH_ACCENTS, Utterance, resample, synthesize, variants
from synthesis.speech import SAMPLE_RATE as SPEECH_RATE

# The vocabulary and clip format are the task's (the model's classes and input).
from synthesis.word_task import SAMPLE_RATE, SAMPLES, WORDS

# Variants left out altogether: unclear (whisper, travis, Annie; docs/science.md §8) or a name with a space.
EXCLUDED_VARIANTS = ("Annie", "Mr serious", "travis", "whisper", "whisperf")
# Never heard in training. Chosen by hand to span male, female, child-like, robotic and breathy.
HELDOUT_VARIANTS = (
    "Alicia", "Andy", "Gene2", "anika", "belinda", "david", "edward2", "f4", "f5", "grandma",
    "iven3", "klatt3", "linda", "m2", "m6", "marcelo", "norbert", "quincy", "robosoft3", "steph2",
)
# Held-out variants that give the clearest speech: the bank's natural sources and practice clips.
SOURCE_VARIANTS = ("klatt3", "m6", "f5", "david", "linda", "norbert", "m2", "f4", "edward2")
PRACTICE_VARIANTS = ("belinda", "marcelo", "quincy", "Andy", "Alicia", "grandma")
SOURCE_ACCENTS = ("en-us", "en", "en-gb-x-rp")
CATCH_VOICE = "en-us"

BABBLE_SENTENCES = (
    "she sells sea shells by the sea shore",
    "the quick brown fox jumps over the lazy dog",
    "a large crowd gathered near the old market square",
    "the rain in spain stays mainly in the plain",
    "my mother made a warm bowl of soup",
    "they walked slowly along the quiet river bank",
    "the children played happily in the garden",
    "we watched the birds fly across the valley",
    "the teacher asked a simple question",
    "a gentle breeze moved the tall grass",
    "his brother bought a small black car",
    "the library closes early this evening",
    "coffee and bread were served with the meal",
    "the painter finished the picture last week",
    "several ships sailed past the harbour",
    "the kitten slept beside the warm fire",
)

SHIFT_S = 0.08  # maximal shift of the word's centre from the midpoint in training clips (s)
SNR_DB = (-10.0, 10.0)
NOISY_FRACTION = 2 / 3


def train_variants() -> list[str]:
    """Variants used in training: all shipped ones except the held-out and excluded ones, plus ''
    (the accent's own default voice)."""
    skip = set(HELDOUT_VARIANTS) | set(EXCLUDED_VARIANTS)
    return [""] + [v for v in variants() if v not in skip]


def voice(accent: str, variant: str) -> str:
    return f"{accent}+{variant}" if variant else accent


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one clip."""

    label: int  # index into WORDS
    utterance: Utterance
    shift_s: float = 0.0
    noise: str | None = None
    snr_db: float | None = None
    seed: int = 0  # of the clip's noise floor and background noise


def random_utterance(text: str, rng: np.random.Generator, voice_variants: Sequence[str], accents: Sequence[str] = ENGLISH_ACCENTS) -> Utterance:
    return Utterance(
        text=text,
        voice=voice(str(rng.choice(list(accents))), str(rng.choice(list(voice_variants)))),
        rate=int(rng.integers(130, 221)),
        pitch=int(rng.integers(25, 76)),
        pitch_range=int(rng.integers(20, 81)),
        seed=int(rng.integers(2**31)),
    )


def random_specs(n: int, voice_variants: Sequence[str], *, seed: int, augment: bool = True,
                 clips_per_utterance: int = 1, noisy_fraction: float = NOISY_FRACTION) -> list[ClipSpec]:
    """``n`` clip specs with words drawn uniformly; ``augment`` adds shifts and, to
    ``noisy_fraction`` of the clips, background noise."""
    rng = np.random.default_rng(seed)
    specs: list[ClipSpec] = []
    while len(specs) < n:
        label = int(rng.integers(len(WORDS)))
        utt = random_utterance(WORDS[label], rng, voice_variants)
        for _ in range(clips_per_utterance):
            if len(specs) == n:
                break
            noisy = augment and rng.random() < noisy_fraction
            specs.append(ClipSpec(
                label=label,
                utterance=utt,
                shift_s=float(rng.uniform(-SHIFT_S, SHIFT_S)) if augment else 0.0,
                noise=str(rng.choice(NOISE_KINDS)) if noisy else None,
                snr_db=float(rng.uniform(*SNR_DB)) if noisy else None,
                seed=int(rng.integers(2**31)),
            ))
    return specs


def speak(utterances: Sequence[Utterance], workers: int = 2) -> dict[Utterance, np.ndarray]:
    """Synthesize (each once), resample to the clip rate and trim silence."""
    unique = list(dict.fromkeys(utterances))
    waves = synthesize(unique, workers=workers)
    return {u: trim(resample(w, SPEECH_RATE, SAMPLE_RATE), SAMPLE_RATE) for u, w in zip(unique, waves, strict=True)}


def babble_utterances(voice_variants: Sequence[str], *, seed: int, n: int = 32) -> list[Utterance]:
    """Sentences without any vocabulary word, in random voices: material for babble noise."""
    rng = np.random.default_rng(seed)
    return [random_utterance(BABBLE_SENTENCES[i % len(BABBLE_SENTENCES)], rng, voice_variants) for i in range(n)]


def babble_pool(voice_variants: Sequence[str], *, seed: int, n: int = 32, workers: int = 2) -> list[np.ndarray]:
    """The babble sentences of :func:`babble_utterances`, spoken."""
    utts = babble_utterances(voice_variants, seed=seed, n=n)
    spoken = speak(utts, workers)
    return [spoken[u] for u in utts]


def render(specs: Sequence[ClipSpec], babble: Sequence[np.ndarray] = (), *, workers: int = 2,
           spoken: dict[Utterance, np.ndarray] | None = None) -> np.ndarray:
    """The clips of ``specs``: float32 ``[len(specs), SAMPLES]``."""
    if spoken is None:
        spoken = speak([s.utterance for s in specs], workers)
    out = np.empty((len(specs), SAMPLES), dtype=np.float32)
    for i, s in enumerate(specs):
        rng = np.random.default_rng(s.seed)
        noise = background(s.noise, SAMPLES, SAMPLE_RATE, rng, babble) if s.noise else None
        out[i] = make_clip(spoken[s.utterance], samples=SAMPLES, sample_rate=SAMPLE_RATE, rng=rng,
                           shift_s=s.shift_s, noise=noise, snr_db=s.snr_db)
    return out


def training_clips(n: int, *, seed: int, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``n`` augmented clips from the training voices: (clips ``[n, 16000]``, labels ``[n]``)."""
    tv = train_variants()
    specs = random_specs(n, tv, seed=seed)
    n_babble = min(32, max(4, n // 10))  # sentences mixed into babble noise: 32 for a null of ≥ 320 clips
    babble_utts = babble_utterances(tv, seed=seed + 1, n=n_babble) if any(s.noise == "babble" for s in specs) else []
    spoken = speak(babble_utts + [s.utterance for s in specs], workers)  # one batch of processes
    babble = [spoken[u] for u in babble_utts]
    return render(specs, babble, spoken=spoken), np.array([s.label for s in specs], dtype=np.int64)



def natural_words(n: int, seed: int) -> np.ndarray:
    """The word model's null signals (``natural_sampler``): ``n`` augmented clips from the
    *training* voices, ``[n, 16000]``."""
    clips, _ = training_clips(n, seed=seed)
    return clips

# ----------------------------------------------------------------------------------------------
# Factories for the demo bank's plan (demo/plans/words.yaml): (id, category id, waveform) triples.
# The plan runner writes them as 16-bit WAVs and works on the decoded samples from then on.


def _fixed(text: str, variant: str, accent: str, rate: int, pitch: int, seed: int) -> Utterance:
    return Utterance(text, voice(accent, variant), rate=rate, pitch=pitch, pitch_range=50, seed=seed)


def _clean_clips(utts: list[tuple[str, str, Utterance]], workers: int) -> list[tuple[str, str, np.ndarray]]:
    spoken = speak([u for _, _, u in utts], workers)
    out = []
    for k, (sid, word, u) in enumerate(utts):
        clip = make_clip(spoken[u], samples=SAMPLES, sample_rate=SAMPLE_RATE, rng=np.random.default_rng(k))
        out.append((sid, word, clip))
    return out


def bank_sources(per_word: int = 3, seed: int = 1, workers: int = 2) -> list[tuple[str, str, np.ndarray]]:
    """Natural sources: ``per_word`` clean clips per word, each from a different HELD-OUT voice.

    Voices rotate through :data:`SOURCE_VARIANTS` × :data:`SOURCE_ACCENTS`, so words do not share
    a single speaker; rates 150–190 wpm, pitch 40–60.
    """
    if per_word > len(SOURCE_VARIANTS):
        raise ValueError(f"only {len(SOURCE_VARIANTS)} source voices")
    rng = np.random.default_rng(seed)
    utts = []
    for w, word in enumerate(WORDS):
        for k in range(per_word):
            variant = SOURCE_VARIANTS[(w + k * 3) % len(SOURCE_VARIANTS)]
            accent = SOURCE_ACCENTS[(w + k) % len(SOURCE_ACCENTS)]
            u = _fixed(word, variant, accent, int(rng.integers(150, 191)), int(rng.integers(40, 61)), int(rng.integers(2**31)))
            utts.append((f"{word}-{variant}-{accent}", word, u))
    return _clean_clips(utts, workers)


def practice(per_word: int = 2, seed: int = 2, workers: int = 2) -> list[tuple[str, str, np.ndarray]]:
    """Practice clips: clean, from held-out voices never used as sources (:data:`PRACTICE_VARIANTS`)."""
    rng = np.random.default_rng(seed)
    utts = []
    for w, word in enumerate(WORDS):
        for k in range(per_word):
            variant = PRACTICE_VARIANTS[(w + k * 2) % len(PRACTICE_VARIANTS)]
            accent = SOURCE_ACCENTS[(w + k + 1) % len(SOURCE_ACCENTS)]
            u = _fixed(word, variant, accent, int(rng.integers(150, 191)), int(rng.integers(40, 61)), int(rng.integers(2**31)))
            utts.append((f"{word}-{variant}-{accent}", word, u))
    return _clean_clips(utts, workers)


def catch(workers: int = 2) -> list[tuple[str, str, np.ndarray]]:
    """Catch clips: each word once, clear and noise-free, in the default American voice at 150 wpm."""
    utts = [(f"{word}-clear", word, _fixed(word, "", CATCH_VOICE, 150, 50, 0)) for word in WORDS]
    return _clean_clips(utts, workers)
