"""Model registry: the demo digit model, user factories, torchvision by name (with a stand-in module)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from synthesis.features import list_layers
from synthesis.models.digits import DEFAULT_CHECKPOINT
from synthesis.models.registry import IMAGENET_MEAN, IMAGENET_STD, CategoryMap, ModelError, load_model, registered_models
from synthesis.train.digit_images import CLEAN, HELDOUT_FONTS, render


def test_demo_digit_model_reads_held_out_fonts() -> None:
    m = load_model("digits")
    x = torch.stack([torch.from_numpy(render(d, f, CLEAN)) for f in HELDOUT_FONTS for d in range(10)]).unsqueeze(1)
    labels = [str(d) for _ in HELDOUT_FONTS for d in range(10)]
    decided = m.decide(x)
    accuracy = sum(a == b for a, b in zip(decided, labels, strict=True)) / len(labels)
    assert accuracy >= 0.97
    assert DEFAULT_CHECKPOINT.stat().st_size < 5_000_000


def test_demo_digit_model_has_the_demo_layers() -> None:
    m = load_model("digits")
    shapes = {la.name: la.shape for la in list_layers(m.module, torch.zeros(1, 1, 32, 32))}
    assert shapes["relu1"] == (16, 16, 16) and shapes["relu2"] == (32, 8, 8) and shapes["relufc"] == (128,) and shapes["final"] == (10,)
    assert "digits" in registered_models()


class Small(nn.Module):
    def __init__(self, n_out: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


def small_factory(n_out: int = 4) -> nn.Module:
    return Small(n_out)


def test_user_factory_with_checkpoint_and_normalization(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = Small(5)
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "w.pt")
    m = load_model(f"{__name__}:small_factory", tmp_path / "w.pt", options={"n_out": 5},
                   input={"kind": "image", "shape": [3, 6, 6], "range": [0, 1]}, normalize={"mean": [0.5] * 3, "std": [0.25] * 3})
    assert m.classes == ["0", "1", "2", "3", "4"]
    x = torch.rand(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(m.module(x), ref((x - 0.5) / 0.25))
    assert [la.name for la in list_layers(m.module, x[:1], prefix=m.layer_prefix)][-1] == "fc"


def test_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path: Path) -> None:
    torch.save(Small(3).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ModelError, match="does not fit"):
        load_model(f"{__name__}:small_factory", tmp_path / "w.pt", input={"kind": "image", "shape": [3, 6, 6], "range": [0, 1]})


def test_unknown_model_lists_the_ways_to_name_one() -> None:
    with pytest.raises(ModelError, match="registered: .*digits.*torchvision:NAME"):
        load_model("resnet9000")


def test_torchvision_model_by_name_uses_local_weights_and_imagenet_normalization(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for torchvision.models.get_model: the registry's code path, without the extra installed.
    fake = types.ModuleType("torchvision")
    fake_models = types.ModuleType("torchvision.models")
    fake_models.get_model = lambda name, weights=None: Small(1000)  # type: ignore[attr-defined]
    fake.models = fake_models  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.models", fake_models)
    torch.manual_seed(1)
    ref = Small(1000)
    torch.save(ref.state_dict(), tmp_path / "resnet.pt")
    (tmp_path / "map.json").write_text('{"dog": [3, 7], "cat": [999]}')
    m = load_model("torchvision:resnet50", tmp_path / "resnet.pt", category_map=tmp_path / "map.json", image_size=8)
    x = torch.rand(1, 3, 8, 8)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = ref((x - mean) / std)
        assert torch.allclose(m.module(x), logits, atol=1e-6)
    assert m.decide(x) == CategoryMap({"dog": [3, 7], "cat": [999]})(logits)
    names = [la.name for la in list_layers(m.module, x, prefix=m.layer_prefix)]
    assert "conv" in names and "fc" in names  # layer names without the wrapper's "net." prefix


def test_torchvision_needs_a_local_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("torchvision")
    fake.models = types.ModuleType("torchvision.models")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    monkeypatch.setitem(sys.modules, "torchvision.models", fake.models)  # type: ignore[attr-defined]
    with pytest.raises(ModelError, match="local checkpoint"):
        load_model("torchvision:resnet50")
