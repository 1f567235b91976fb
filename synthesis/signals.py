"""Natural signals in and out of bank files: loading, quantizing, checking against a model's input.

Every signal synthesis touches goes through the bank's own encoders (8-bit PNG, 16-bit WAV) and is
decoded again, so targets, metrics and decisions are computed on exactly the values a participant
sees or hears. Images are ``[C, H, W]`` float tensors in [0, 1]; waveforms are ``[T]`` in [-1, 1].

Signals come from a folder laid out as ``FOLDER/<category id>/<name>.png`` (or ``.wav``) or from a
factory ``package.module:function`` returning ``(id, category id, array)`` triples.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthesis.bank import InputSpec
from synthesis.media import MediaError, decode_png, decode_wav, encode_png, encode_wav, sniff

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,99}$")


class SignalError(ValueError):
    """A natural signal is unreadable or does not fit the model; the message names the file."""


@dataclass
class Signal:
    """A natural signal as saved: ``data`` is the file's bytes, ``x`` the decoded tensor."""

    id: str
    label: str
    data: bytes
    ext: str  # ".png" or ".wav"
    x: torch.Tensor
    origin: str  # file path or factory, for error messages


def encode(x: torch.Tensor | np.ndarray, kind: str, sample_rate: int | None = None) -> tuple[bytes, torch.Tensor]:
    """Quantize a signal exactly as the bank stores it; returns (file bytes, decoded tensor)."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if kind == "image":
        data = encode_png(arr)
        return data, _image_tensor(decode_png(data))
    if sample_rate is None:
        raise ValueError("audio needs a sample rate")
    data = encode_wav(arr.reshape(-1), sample_rate)
    wave, _ = decode_wav(data)
    return data, torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))


def _image_tensor(img: np.ndarray) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    return torch.from_numpy(np.ascontiguousarray(arr))


def decode(data: bytes, ext: str, origin: str) -> torch.Tensor:
    """Decode file bytes to a tensor, with a clear error naming ``origin`` when unreadable."""
    try:
        sniff(data, ext)
        if ext == ".png":
            return _image_tensor(decode_png(data))
        wave, _ = decode_wav(data)
        return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    except MediaError as exc:
        raise SignalError(f"{origin}: unreadable {ext[1:].upper()} file: {exc}") from exc
    except Exception as exc:  # decoders raise many types on corrupt data
        raise SignalError(f"{origin}: unreadable file: {exc}") from exc


def load_folder(folder: Path, modality: str, id_prefix: str = "") -> list[Signal]:
    """Signals from ``folder/<category id>/<name>.<ext>``, sorted by id."""
    if not folder.is_dir():
        raise SignalError(f"sources folder {folder} does not exist")
    ext = ".png" if modality == "image" else ".wav"
    out: list[Signal] = []
    for label_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(label_dir.iterdir()):
            if f.suffix.lower() != ext:
                continue
            data = f.read_bytes()
            out.append(Signal(id_prefix + f.stem, label_dir.name, data, ext, decode(data, ext, str(f)), str(f)))
    if not out:
        raise SignalError(f"{folder} holds no {ext} files under <category id>/ subfolders")
    return out


def import_factory(ref: str) -> Callable[..., Any]:
    mod, _, attr = ref.partition(":")
    if not attr:
        raise SignalError(f"factory {ref!r} must look like package.module:function")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise SignalError(f"cannot import factory {ref!r}: {exc}") from exc


def from_arrays(items: Iterable[tuple[str, str, Any]], modality: str, sample_rate: int | None, origin: str, id_prefix: str = "") -> list[Signal]:
    """Quantize ``(id, label, array)`` triples through the bank's encoders."""
    ext = ".png" if modality == "image" else ".wav"
    out = []
    for sid, label, arr in items:
        data, x = encode(torch.as_tensor(np.asarray(arr, dtype=np.float32)), modality, sample_rate)
        out.append(Signal(id_prefix + str(sid), str(label), data, ext, x, f"{origin} ({sid})"))
    return sorted(out, key=lambda s: s.id)


def check_ids(signals: list[Signal], what: str) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    for s in signals:
        if not ID_PATTERN.match(s.id):
            problems.append(f"{what} {s.origin}: id {s.id!r} must be letters, digits and _ . : + - (start with a letter or digit)")
        if s.id in seen:
            problems.append(f"{what} {s.origin}: id {s.id!r} is also used by {seen[s.id]}")
        seen[s.id] = s.origin
    return problems


def check_fits(signal: Signal, spec: InputSpec, model: str) -> str | None:
    """Why ``signal`` cannot go into a model with input ``spec``, or None if it fits."""
    x = signal.x
    if spec.kind == "image":
        want = tuple(spec.shape or ())
        if tuple(x.shape) != want:
            return f"{signal.origin}: image is {_describe(x)} but model {model!r} takes [C, H, W] = {list(want)}"
    else:
        if x.dim() != 1:
            return f"{signal.origin}: audio must be mono, got shape {list(x.shape)}"
        if spec.samples is not None and x.shape[0] != spec.samples:
            return f"{signal.origin}: audio has {x.shape[0]} samples but model {model!r} takes {spec.samples} ({spec.sample_rate} Hz)"
    lo, hi = spec.range
    if float(x.min()) < lo - 1e-6 or float(x.max()) > hi + 1e-6:
        return f"{signal.origin}: values outside the model's range [{lo}, {hi}]"
    return None


def wav_rate_problem(signal: Signal, spec: InputSpec) -> str | None:
    if signal.ext != ".wav" or spec.sample_rate is None:
        return None
    _, sr = decode_wav(signal.data)
    if sr != spec.sample_rate:
        return f"{signal.origin}: sample rate {sr} Hz, but the model takes {spec.sample_rate} Hz"
    return None


def _describe(x: torch.Tensor) -> str:
    if x.dim() == 3:
        c, h, w = x.shape
        kind = {1: "grey", 3: "RGB", 4: "RGBA"}.get(int(c), f"{c}-channel")
        return f"{w}×{h} {kind} ([C, H, W] = {list(x.shape)})"
    return str(list(x.shape))
