"""Which models synthesis can use, loaded the same way for the CLI, plans, tests and benchmarks.

A model reference is one of:

* a registered name (``digits``; modules under ``synthesis/models/`` register themselves with
  :func:`register_model`, so a new built-in model is one new file);
* ``torchvision:NAME`` (e.g. ``torchvision:resnet50``) when the optional torchvision extra is
  installed; weights are read from a local checkpoint file, never downloaded, and ImageNet
  normalization is added in front so that metamers stay in pixel range [0, 1];
* ``package.module:factory`` for a researcher's own model: ``factory(**options)`` returns an
  ``nn.Module`` (then the plan gives its input spec and classes) or a ready :class:`LoadedModel`.

Predictions go through :attr:`LoadedModel.predict`, the hook that maps a model's classes to the
experiment's categories (for example ImageNet's 1000 classes to the paper's 16 with
:class:`CategoryMap`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthesis.bank import InputSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModelError(ValueError):
    """A model reference, checkpoint or option is wrong; the message says what to fix."""


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, so the model takes raw pixels in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Normalized(nn.Module):
    """Wraps a network that expects normalized input; its layers are named ``net.<name>``."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> Any:
        return self.net(self.normalize(x))


class CategoryMap:
    """Maps class scores to experiment categories: the highest-ranked class that belongs to a category.

    This is the paper's 16-way decision for ImageNet models (docs/science.md §2): ``mapping`` gives, for
    each category id, the class indices that count as it; classes outside every category are ignored.
    """

    def __init__(self, mapping: dict[str, Sequence[int]]) -> None:
        if not mapping:
            raise ModelError("a category map needs at least one category")
        owner: dict[int, str] = {}
        for cat, classes in mapping.items():
            for c in classes:
                if int(c) in owner:
                    raise ModelError(f"class {c} is mapped to both {owner[int(c)]!r} and {cat!r}")
                owner[int(c)] = str(cat)
        self.mapping = {str(k): [int(c) for c in v] for k, v in mapping.items()}
        self._classes = torch.tensor(sorted(owner), dtype=torch.long)
        self._names = [owner[int(c)] for c in self._classes]

    @classmethod
    def from_json(cls, path: str | Path) -> CategoryMap:
        """Read ``{"category id": [class index, ...], ...}`` from a JSON file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read category map {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelError(f"category map {path} must be a JSON object of category -> class indices")
        return cls(data)

    def __call__(self, logits: torch.Tensor) -> list[str]:
        if int(self._classes.max()) >= logits.shape[-1]:
            raise ModelError(f"category map names class {int(self._classes.max())} but the model has {logits.shape[-1]} outputs")
        picked = logits.detach().float().cpu()[:, self._classes].argmax(dim=1)
        return [self._names[int(i)] for i in picked]


def argmax_predict(classes: Sequence[str]) -> Callable[[torch.Tensor], list[str]]:
    """The default decision: the name of the top-scoring class."""

    names = list(classes)

    def predict(logits: torch.Tensor) -> list[str]:
        return [names[int(i)] for i in logits.detach().float().cpu().argmax(dim=1)]

    return predict


@dataclass
class LoadedModel:
    """A model ready for synthesis: eval mode, normalization inside, raw signals in ``input.range``.

    ``module(x)`` takes ``[B, *input_shape]`` (images ``[B, C, H, W]``, waveforms ``[B, T]``) and
    returns class scores ``[B, len(classes)]`` (or anything :attr:`logits` turns into them).
    ``natural_sampler`` draws ``n`` natural signals from the training distribution for the null
    (:meth:`sample_naturals`): a function ``(n, seed) -> [n, *input_shape]`` (tensor or array), or
    its ``"package.module:function"`` name, so that a model module need not import the code that
    makes its training data.
    """

    name: str
    module: nn.Module
    input: InputSpec
    classes: list[str]
    checkpoint_sha256: str
    predict: Callable[[torch.Tensor], list[str]] | None = None
    description: str = ""
    front_end: dict[str, Any] | None = None
    natural_sampler: Callable[[int, int], Any] | str | None = None
    logits: Callable[[Any], torch.Tensor] = field(default=lambda out: out)
    # Layer names may be given without this prefix (``layer1`` for ``net.layer1``).
    layer_prefix: str = ""

    def __post_init__(self) -> None:
        if self.predict is None:
            self.predict = argmax_predict(self.classes)

    def sample_naturals(self, n: int, seed: int) -> torch.Tensor:
        """``n`` natural signals ``[n, *input_shape]`` from :attr:`natural_sampler` (seeded)."""
        sampler = self.natural_sampler
        if sampler is None:
            raise ModelError(f"model {self.name} has no sampler of its training distribution")
        if isinstance(sampler, str):
            module, _, attr = sampler.partition(":")
            sampler = getattr(importlib.import_module(module), attr)
        return torch.as_tensor(sampler(n, seed))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input without the batch dimension."""
        if self.input.kind == "image":
            assert self.input.shape is not None
            return tuple(self.input.shape)
        assert self.input.samples is not None
        return (self.input.samples,)

    @torch.no_grad()
    def decide(self, x: torch.Tensor) -> list[str]:
        """The model's category decision for a batch of raw signals."""
        out = self.logits(self.module(x))
        assert self.predict is not None
        return self.predict(out)


Loader = Callable[..., LoadedModel]
_REGISTRY: dict[str, Loader] = {}
_DISCOVERED = False
_BROKEN: dict[str, str] = {}  # model modules that failed to import, with the error


def register_model(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make ``loader(checkpoint=None, **options) -> LoadedModel`` loadable as ``name``."""

    def deco(loader: Loader) -> Loader:
        _REGISTRY[name] = loader
        return loader

    return deco


def _discover() -> None:
    """Import every module of ``synthesis.models`` once so that they register themselves."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import synthesis.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name != "registry":
            # One broken model module must not make every other model unusable; its error is
            # reported when a model that is not registered is asked for.
            try:
                importlib.import_module(f"synthesis.models.{info.name}")
            except Exception as exc:  # any import-time failure of a third module
                _BROKEN[f"synthesis.models.{info.name}"] = f"{type(exc).__name__}: {exc}"


def registered_models() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def checkpoint_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def state_sha256(module: nn.Module) -> str:
    """A stable hash of a module's parameters and buffers, for models built without a checkpoint file."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_state(module: nn.Module, path: str | Path) -> None:
    """Load a checkpoint (a state dict, or a dict holding one under ``state_dict``/``model``) strictly."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint {p} does not exist")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or pickled files
        raise ModelError(f"cannot read checkpoint {p}: {exc}") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {p} does not hold a state dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {p} does not fit the model: {exc}") from exc


def _torchvision(name: str, checkpoint: str | Path | None, category_map: str | Path | None = None, image_size: int = 224, **options: Any) -> LoadedModel:
    try:
        import torchvision  # noqa: F401
        from torchvision import models as tvm
    except ImportError as exc:
        raise ModelError("torchvision models need the optional extra: pip install 'metamer-lab[torchvision]'") from exc
    if checkpoint is None:
        raise ModelError(f"torchvision:{name} needs a local checkpoint file (weights are never downloaded)")
    try:
        net = tvm.get_model(name, weights=None, **options)
    except (ValueError, KeyError) as exc:
        raise ModelError(f"torchvision has no model {name!r}: {exc}") from exc
    load_state(net, checkpoint)
    n_out = _n_outputs(net, (3, image_size, image_size))
    classes = [str(i) for i in range(n_out)]
    return LoadedModel(
        name=name,
        module=Normalized(net, IMAGENET_MEAN, IMAGENET_STD).eval(),
        input=InputSpec(kind="image", shape=[3, image_size, image_size], range=(0.0, 1.0)),
        classes=classes,
        checkpoint_sha256=checkpoint_sha256(checkpoint),
        predict=CategoryMap.from_json(category_map) if category_map else None,
        description=f"torchvision {name} with ImageNet normalization inside",
        layer_prefix="net.",
    )


@torch.no_grad()
def _n_outputs(net: nn.Module, shape: tuple[int, ...]) -> int:
    was = net.training
    net.eval()
    out = net(torch.zeros(1, *shape))
    net.train(was)
    return int(out.shape[-1])


def _user_factory(ref: str, checkpoint: str | Path | None, *, input: dict[str, Any] | None = None, classes: list[str] | None = None,
                  normalize: dict[str, list[float]] | None = None, category_map: str | Path | None = None, options: dict[str, Any] | None = None) -> LoadedModel:
    mod_name, _, attr = ref.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"cannot import model factory {ref!r}: {exc}") from exc
    made = factory(**(options or {}))
    if isinstance(made, LoadedModel):
        if checkpoint is not None:
            load_state(made.module, checkpoint)
            made.checkpoint_sha256 = checkpoint_sha256(checkpoint)
        return made
    if not isinstance(made, nn.Module):
        raise ModelError(f"{ref} returned {type(made).__name__}, not an nn.Module or LoadedModel")
    if input is None:
        raise ModelError(f"{ref}: give the model's input spec, e.g. input: {{kind: image, shape: [3, 224, 224], range: [0, 1]}}")
    spec = InputSpec.model_validate(input)
    if checkpoint is not None:
        load_state(made, checkpoint)
    module: nn.Module = Normalized(made, normalize["mean"], normalize["std"]) if normalize else made
    module.eval()
    shape = tuple(spec.shape) if spec.kind == "image" and spec.shape else (int(spec.samples or 1),)
    if classes is None:
        classes = [str(i) for i in range(_n_outputs(module, shape))]
    return LoadedModel(
        name=attr,
        module=module,
        input=spec,
        classes=list(classes),
        checkpoint_sha256=checkpoint_sha256(checkpoint) if checkpoint else state_sha256(made),
        predict=CategoryMap.from_json(category_map) if category_map else None,
        description=f"user model {ref}",
        layer_prefix="net." if normalize else "",
    )


def load_model(ref: str, checkpoint: str | Path | None = None, **options: Any) -> LoadedModel:
    """Load a model by reference (see the module docstring). Raises :class:`ModelError` with a fix."""
    _discover()
    if ref in _REGISTRY:
        model = _REGISTRY[ref](checkpoint=checkpoint, **options)
    elif ref.startswith("torchvision:"):
        model = _torchvision(ref.split(":", 1)[1], checkpoint, **options)
    elif ":" in ref:
        model = _user_factory(ref, checkpoint, **options)
    else:
        broken = "".join(f"; {mod} failed to import ({err})" for mod, err in _BROKEN.items())
        raise ModelError(f"unknown model {ref!r}; registered: {', '.join(registered_models())}; "
                         f"or use torchvision:NAME or package.module:factory{broken}")
    model.module.eval()
    return model
