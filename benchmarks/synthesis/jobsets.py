"""Job sets for the synthesis benchmark: the same metamer problems for every method.

A job set is a model, some layers, natural sources and an optimizer schedule. Register one with
``@register_jobset("name")`` in a module named ``benchmarks/synthesis/jobset_<name>.py`` (found
automatically), for example an audio job set with waveforms ``[N, T]`` and the audio word model.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

import torch

from synthesis.models.registry import LoadedModel, load_model
from synthesis.optimize import Settings, preset
from synthesis.signals import encode


@dataclass
class JobSet:
    name: str
    model: LoadedModel
    layers: list[str]
    sources: torch.Tensor  # [N, *input_shape], quantized as a bank stores them
    source_ids: list[str]
    settings: Settings  # the step budget; the engine may stop examples earlier
    seed: int = 0

    @property
    def n_metamers(self) -> int:
        return len(self.layers) * len(self.source_ids)


JOBSETS: dict[str, Callable[[], JobSet]] = {}


def register_jobset(name: str) -> Callable[[Callable[[], JobSet]], Callable[[], JobSet]]:
    def deco(fn: Callable[[], JobSet]) -> Callable[[], JobSet]:
        JOBSETS[name] = fn
        return fn

    return deco


def quick(js: JobSet) -> JobSet:
    """A seconds-long version of a job set (3 sources, short rounds) to smoke-test the benchmark."""
    return JobSet(js.name, js.model, js.layers, js.sources[:3], js.source_ids[:3],
                  dataclasses.replace(js.settings, rounds=2, round_steps=10, patience=5), js.seed)


def discover() -> dict[str, Callable[[], JobSet]]:
    import benchmarks.synthesis as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("jobset_"):
            importlib.import_module(f"benchmarks.synthesis.{info.name}")
    return JOBSETS


@register_jobset("digits")
def digits() -> JobSet:
    """The demo digit CNN: one held-out-font source per digit, four layers from shallow to final."""
    from synthesis.train.digit_images import bank_sources

    model = load_model("digits")
    items = bank_sources(per_digit=1, seed=1)
    sources = torch.stack([encode(torch.as_tensor(arr), "image")[1] for _, _, arr in items])
    return JobSet(
        name="digits",
        model=model,
        layers=["relu1", "relu2", "relu3", "relufc", "final"],
        sources=sources,
        source_ids=[sid for sid, _, _ in items],
        # 8 rounds as in the paper, shorter rounds so that the slow methods finish in minutes.
        settings=preset("paper", rounds=8, round_steps=150, patience=100, fake_relu=False),
    )
