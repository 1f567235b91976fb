"""Model modules (synthesis/models/) define models and never import the code that makes training
data (synthesis/train/): a demo model names its null sampler instead, and the registry imports it
only when the null is drawn."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from synthesis.models import load_model

MODELS = Path(__file__).resolve().parents[2] / "synthesis" / "models"


def imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return out


def test_no_model_module_imports_training_data_code() -> None:
    found = {p.name: sorted(m for m in imports(p) if m.startswith("synthesis.train")) for p in sorted(MODELS.glob("*.py"))}
    assert {name: mods for name, mods in found.items() if mods} == {}


def test_a_demo_model_names_its_null_sampler_and_draws_from_it() -> None:
    model = load_model("digits")
    assert isinstance(model.natural_sampler, str)
    a, b = model.sample_naturals(3, seed=1), model.sample_naturals(3, seed=1)
    assert tuple(a.shape) == (3, *model.input.shape) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert not torch.equal(a, model.sample_naturals(3, seed=2))
