"""Builders of small *real* banks for tests: PNGs through Pillow, WAVs through soundfile, no torch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from synthesis.bank import (
    BankWriter,
    Category,
    Generator,
    InputSpec,
    Metrics,
    ModelInfo,
    NullSummary,
    Quantiles,
    Stimulus,
)
from synthesis.media import encode_png, encode_wav

DIGITS = [str(i) for i in range(10)]
WORDS = ["apple", "banana", "cherry", "delta", "echo"]


def _image(seed: int, size: int = 16) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(rng.random((size, size)))


def _wave(seed: int, sr: int = 8000, seconds: float = 0.25) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * (seed % 7)) * t) + 0.01 * rng.standard_normal(t.size)
    return encode_wav(tone, sr)


def _quantiles(top: float) -> Quantiles:
    return Quantiles(max=top, p50=top / 3, p95=top * 0.8, p99=top * 0.9)


def make_bank(
    root: Path,
    *,
    modality: str = "image",
    labels: list[str] | None = None,
    sources_per_label: int = 2,
    model: str = "tiny",
    extra_models: tuple[str, ...] = (),
    layers: tuple[str, ...] = ("conv1", "conv2", "fc"),
    failed: set[tuple[int, str]] | frozenset = frozenset(),
    practice_per_label: int = 1,
    catch_per_label: int = 1,
    icons: bool = True,
    name: str = "test-bank",
    seed: int = 0,
) -> Path:
    """Write a complete bank folder and return it.

    ``failed`` names (source index, layer) pairs whose metamer fails its validity check.
    ``seed`` offsets the media content, so two banks with different seeds share no files.
    ``extra_models`` are further models with the same layers (say, a robust version of ``model``),
    each with its own metamers of every source.
    Sources are ``src-000``, ``src-001``… with labels cycling through ``labels``.
    """
    labels = labels or (DIGITS[:4] if modality == "image" else WORDS)
    media = _image if modality == "image" else _wave
    ext = ".png" if modality == "image" else ".wav"
    root.mkdir(parents=True, exist_ok=True)
    writer = BankWriter(
        root,
        name=name,
        modality=modality,  # type: ignore[arg-type]
        categories=[],
        generator=Generator(package="tests", version="0", settings={"steps": 10}, seed=1),
        models=[
            ModelInfo(
                name=m,
                checkpoint_sha256=hashlib.sha256(m.encode()).hexdigest(),
                layers=list(layers),
                input=InputSpec(kind="image", shape=[1, 16, 16], range=(0.0, 1.0))
                if modality == "image"
                else InputSpec(kind="audio", sample_rate=8000, samples=2000, range=(-1.0, 1.0)),
            )
            for m in (model, *extra_models)
        ],
    )
    cats = []
    for i, lab in enumerate(labels):
        if icons and modality == "image":
            data = _image(10_000 + seed + i)
            sha = writer.write_file(f"icons/{lab}.png", data)
            cats.append(Category(id=lab, label=f"Label {lab}", icon=f"icons/{lab}.png", icon_sha256=sha))
        else:
            cats.append(Category(id=lab, label=lab.capitalize()))
    writer.categories = cats
    for m in (model, *extra_models):
        for layer in layers:
            writer.set_null(m, layer, NullSummary(n_pairs=100, spearman=_quantiles(0.5), pearson=_quantiles(0.5), snr_db=_quantiles(3.0)))
    n_sources = sources_per_label * len(labels)
    for s in range(n_sources):
        lab = labels[s % len(labels)]
        sid = f"src-{s:03d}"
        seed += 1
        writer.add_stimulus(
            Stimulus(id=sid, kind="natural", label=lab, file=f"natural/{sid}{ext}", sha256="0" * 64), media(seed)
        )
        for m in (model, *extra_models):
            for li, layer in enumerate(layers):
                seed += 1
                ok = (s, layer) not in failed
                writer.add_stimulus(
                    Stimulus(
                        id=f"{sid}/{m}/{layer}",
                        kind="metamer",
                        source=sid,
                        label=lab,
                        file=f"metamers/{m}/{layer}/{sid}{ext}",
                        sha256="0" * 64,
                        model=m,
                        layer=layer,
                        layer_index=li,
                        metrics=Metrics(
                            loss=0.01 * (li + 1),
                            spearman=0.9 if ok else 0.1,
                            pearson=0.9,
                            snr_db=20.0,
                            pred_metamer=lab if ok else labels[(s + 1) % len(labels)],
                            pred_natural=lab,
                            steps=10,
                            seed=s,
                        ),
                        passed=ok,
                        fail_reasons=[] if ok else ["prediction differs from the natural signal's"],
                    ),
                    media(seed),
                )
    for kind, per in (("practice", practice_per_label), ("catch", catch_per_label)):
        for r in range(per):
            for lab in labels:
                seed += 1
                sid = f"{kind}-{lab}-{r}"
                writer.add_stimulus(Stimulus(id=sid, kind=kind, label=lab, file=f"{kind}/{sid}{ext}", sha256="0" * 64), media(seed))  # type: ignore[arg-type]
    writer.save()
    return root
