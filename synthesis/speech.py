"""Speech from eSpeak NG, the project's own source of spoken words (no recordings, no downloads).

The ``espeakng-loader`` wheel ships ``libespeak-ng.so`` and its voice data but no command-line
program, so the library is driven through ctypes (docs/science.md §8): ``espeak_Initialize`` in
synchronous mode, a synth callback that collects the 16-bit samples, ``espeak_SetVoiceByName``,
``espeak_SetParameter`` for rate, pitch and pitch range, then ``espeak_Synth``.

**Reproducibility.** eSpeak NG keeps state between utterances, so the second utterance of a
process differs slightly from the same utterance synthesized first. Only the first utterance
of a fresh process is reproducible. :func:`synthesize` therefore runs every utterance in its own
child process (forked from small helper processes that never load the library), which makes each
result depend only on its own :class:`Utterance`, not on the order or company it is synthesized in.

Output: float32 waveforms in [-1, 1] at :data:`SAMPLE_RATE` (22 050 Hz), mono. This module needs
only numpy; it never imports torch.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

__all__ = [
    "SAMPLE_RATE",
    "SpeechError",
    "Utterance",
    "accents",
    "data_path",
    "resample",
    "synthesize",
    "synthesize_here",
    "variants",
]

SAMPLE_RATE = 22_050  # Hz; eSpeak NG's fixed output rate
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER values

# English accents whose names espeak_SetVoiceByName accepts (``en-gb`` does not, see docs/science.md §8).
ENGLISH_ACCENTS = (
    "en",  # British (default)
    "en-us",
    "en-us-nyc",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",  # Caribbean
)


class SpeechError(RuntimeError):
    """eSpeak NG could not be loaded, or refused a voice, parameter or text."""


@dataclass(frozen=True)
class Utterance:
    """One thing to say and how: everything that determines the waveform.

    ``voice`` is an accent optionally followed by ``+variant`` (``en-us+klatt4``). ``rate`` is in
    words per minute (80–450, eSpeak's default 175); ``pitch`` and ``pitch_range`` are eSpeak's
    0–100 scales (default 50); ``seed`` (0 to 2³²−1) seeds the breath noise of the variants that
    have one.
    """

    text: str
    voice: str = "en"
    rate: int = 175
    pitch: int = 50
    pitch_range: int = 50
    seed: int = 0  # of the breath noise that some variants add

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("an utterance needs some text")
        if not 80 <= self.rate <= 450:
            raise ValueError(f"rate {self.rate} wpm is outside eSpeak's 80–450")
        if not (0 <= self.pitch <= 100 and 0 <= self.pitch_range <= 100):
            raise ValueError("pitch and pitch_range are on eSpeak's 0–100 scale")
        if not 0 <= self.seed < 2**32:
            raise ValueError("seed must fit in 32 bits")


def data_path() -> Path:
    """The ``espeak-ng-data`` folder that ships with ``espeakng-loader``."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise SpeechError("speech synthesis needs the speech extra: pip install 'metamer-lab[speech]'") from exc
    return Path(espeakng_loader.get_data_path())


def accents() -> list[str]:
    """The English accents available (all of :data:`ENGLISH_ACCENTS` whose data ships)."""
    lang = data_path() / "lang" / "gmw"
    have = {p.name.lower() for p in lang.iterdir()} if lang.is_dir() else set()
    return [a for a in ENGLISH_ACCENTS if a in have]


def variants() -> list[str]:
    """Every voice variant (timbre: formants, breathiness, pitch contour) in the data, sorted."""
    folder = data_path() / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file())


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None)  # the process's own symbols, which include libc's srand/rand


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@cache
def _engine() -> tuple[ctypes.CDLL, list[np.ndarray], object]:
    """Load and initialize the library once per process; returns (lib, sample buffer, callback)."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise SpeechError("speech synthesis needs the speech extra: pip install 'metamer-lab[speech]'") from exc
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
    except OSError as exc:
        raise SpeechError(f"cannot load libespeak-ng: {exc}") from exc
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.c_void_p, ctypes.c_void_p,
    ]
    home = str(Path(espeakng_loader.get_data_path()).parent).encode()
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, home, 0)
    if rate != SAMPLE_RATE:
        raise SpeechError(f"espeak_Initialize returned {rate} (expected a {SAMPLE_RATE} Hz sample rate)")
    chunks: list[np.ndarray] = []

    def collect(wav: ctypes.Array, n: int, _events: int) -> int:  # type: ignore[type-arg]
        if n > 0 and wav:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = keep going

    callback = _CALLBACK(collect)
    lib.espeak_SetSynthCallback(callback)
    return lib, chunks, callback  # the callback object must outlive every synthesis


def synthesize_here(u: Utterance) -> np.ndarray:
    """Synthesize ``u`` in this process: float32 samples in [-1, 1] at 22 050 Hz.

    Only the first call in a process is reproducible (see the module docstring); use
    :func:`synthesize` for datasets.
    """
    lib, chunks, _ = _engine()
    if lib.espeak_SetVoiceByName(u.voice.encode()) != 0:
        raise SpeechError(f"eSpeak NG has no voice {u.voice!r} (use an accent like 'en-us', optionally '+variant')")
    for param, value in ((_RATE, u.rate), (_PITCH, u.pitch), (_RANGE, u.pitch_range)):
        if lib.espeak_SetParameter(param, int(value), 0) != 0:
            raise SpeechError(f"eSpeak NG refused parameter {param}={value}")
    # Voices with breath or roughness draw noise from eSpeak's generator, which it seeds from the
    # clock at start-up, and from libc's rand(); seed both from the utterance so that those voices
    # are reproducible too.
    lib.espeak_ng_SetRandSeed(ctypes.c_long(u.seed))
    _libc().srand(ctypes.c_uint(u.seed))
    chunks.clear()
    text = u.text.encode("utf-8") + b"\0"
    if lib.espeak_Synth(text, len(text), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
        raise SpeechError(f"eSpeak NG failed to synthesize {u.text!r}")
    if not chunks:
        raise SpeechError(f"eSpeak NG produced no audio for {u.text!r} with voice {u.voice!r}")
    wave = np.concatenate(chunks).astype(np.float32) / 32768.0
    chunks.clear()
    return wave


def synthesize(utterances: Sequence[Utterance], workers: int = 2) -> list[np.ndarray]:
    """Synthesize each utterance as the first and only one of a fresh process; results in order.

    ``workers`` helper processes (plain ``python``, importing only numpy and this module) each
    fork one short-lived child per utterance, which synthesizes it, saves it and exits. Forking
    from these helpers rather than from the caller means neither torch's threads nor an
    initialized eSpeak state is ever inherited, and the caller's main module is never re-imported.
    Costs about 3–5 ms of CPU per short word, mostly the fork, plus ~0.1 s to start the helpers.
    """
    items = list(utterances)
    if not items:
        return []
    workers = max(1, min(int(workers), len(items)))
    with tempfile.TemporaryDirectory(prefix="metamer-speech-") as tmp:
        folder = Path(tmp)
        procs = []
        for w in range(workers):
            tasks = folder / f"tasks-{w}.pkl"
            tasks.write_bytes(pickle.dumps([(i, items[i]) for i in range(w, len(items), workers)]))
            cmd = [sys.executable, "-c", "import synthesis.speech as s; s._serve()", str(tasks), str(folder)]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        errors = [p.communicate()[1].decode(errors="replace").strip() for p in procs]
        failed = [e for p, e in zip(procs, errors) if p.returncode != 0]
        if failed:
            raise SpeechError("speech synthesis failed: " + " | ".join(failed))
        return [np.load(folder / f"{i}.npy") for i in range(len(items))]


def _serve() -> None:
    """Helper-process loop: ``argv = [tasks.pkl, out_dir]``; one forked child per utterance."""
    tasks: list[tuple[int, Utterance]] = pickle.loads(Path(sys.argv[1]).read_bytes())
    out = Path(sys.argv[2])
    # Load and initialize once here: the state after initialization is the same in every process,
    # and only synthesis changes it, so each forked child still makes its process's first utterance.
    _engine()
    for index, utterance in tasks:
        pid = os.fork()
        if pid == 0:  # child: the first and only synthesis of this process
            code = 0
            try:
                np.save(out / f"{index}.tmp.npy", synthesize_here(utterance))
                os.replace(out / f"{index}.tmp.npy", out / f"{index}.npy")
            except BaseException as exc:  # report, never fall through into the parent's loop
                sys.stderr.write(f"{utterance}: {exc}\n")
                sys.stderr.flush()
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            sys.exit(1)


def resample(wave: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Band-limited resampling by the FFT (e.g. 22 050 → 16 000 Hz): the spectrum is cut (or
    zero-padded) at the new Nyquist frequency. It treats the signal as periodic, which is harmless
    for utterances that start and end in silence."""
    x = np.asarray(wave, dtype=np.float64)
    if from_hz == to_hz or len(x) == 0:
        return x.astype(np.float32)
    n_out = max(1, int(round(len(x) * to_hz / from_hz)))
    spec = np.fft.rfft(x)
    keep = min(len(spec), n_out // 2 + 1)
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    out[:keep] = spec[:keep]
    return (np.fft.irfft(out, n=n_out) * (n_out / len(x))).astype(np.float32)
