"""The package map of ``app/`` (docs/architecture.md) holds: every import of every module, read from
its source with ``ast`` (nothing is imported), stays within what its package may import, and
nothing under ``app/`` imports torch or torchvision. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"

# package -> the app packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "stimuli": {"core"},
    "experiments": {"core"},
    "participation": {"core", "experiments"},
    "results": {"core", "experiments"},
    "admin": {"core", "stimuli", "experiments", "participation", "results"},
}
# The top-level modules wire the packages together and may import anything.
WIRING = {"__init__", "main", "asgi", "cli", "demo"}
FORBIDDEN_LIBRARIES = {"torch", "torchvision"}
# The torch-free modules of synthesis/ (the bank format and media codecs): the app's only contract
# with synthesis. Any other synthesis module imports torch.
TORCH_FREE_SYNTHESIS = {"synthesis.bank", "synthesis.media"}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) for every absolute import in ``source``. ``from a import b`` gives
    ``a.b``, so that ``from app import admin`` names the package it imports."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"line {node.lineno}: relative import; the project uses absolute imports")
            assert node.module is not None
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def package_of(module: str) -> str | None:
    """The app package a dotted module belongs to (``app.results.stats`` → ``results``), or None
    for a top-level module of ``app`` and for anything outside ``app``."""
    parts = module.split(".")
    if parts[0] != "app" or len(parts) < 2 or parts[1] not in ALLOWED:
        return None
    return parts[1]


def violations(path: Path, root: Path = APP) -> list[str]:
    """What ``path`` (a module under ``root``, the app/ folder) imports that it must not."""
    rel = path.relative_to(root)
    own = rel.parts[0] if len(rel.parts) > 1 else None
    found: list[str] = []
    for line, module in imported_modules(path.read_text()):
        if module.split(".")[0] in FORBIDDEN_LIBRARIES:
            found.append(f"app/{rel}:{line} imports {module}: the web app never imports torch")
            continue
        # (The CLI registers synthesis' commands, which import torch only when they run.)
        if own is not None and module.split(".")[0] == "synthesis" and not any(module == m or module.startswith(m + ".") for m in TORCH_FREE_SYNTHESIS):
            found.append(f"app/{rel}:{line} imports {module}: of synthesis/, the app uses only the torch-free {sorted(TORCH_FREE_SYNTHESIS)}")
            continue
        if own is None:
            if rel.stem not in WIRING:
                found.append(f"app/{rel}: a top-level module that is not wiring belongs in a package")
            continue
        target = package_of(module)
        if module.split(".")[0] == "app" and target is None:
            found.append(f"app/{rel}:{line} imports {module}: packages do not import the top-level wiring modules")
        elif target is not None and target != own and target not in ALLOWED[own]:
            found.append(f"app/{rel}:{line} imports {module}: {own} may import only {sorted(ALLOWED[own]) or 'nothing in app'}")
    return found


MODULES = sorted(APP.rglob("*.py"))


def test_every_package_is_on_the_map() -> None:
    packages = {p.name for p in APP.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(APP)))
def test_module_imports_only_what_its_package_may(path: Path) -> None:
    assert violations(path) == []


def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    """The check itself: participation importing admin, core importing experiments, a lazy torch
    import, a package importing the app factory and a torch-needing synthesis module are each
    reported."""
    fake = tmp_path / "app"
    for pkg, body in {
        "participation": "from app.admin.auth import audit\n",
        "core": "def f():\n    from app.experiments import spec\n",
        "results": "def g():\n    import torch.nn\n",
        "stimuli": "from app.main import create_app\n",
        "experiments": "from synthesis.models.registry import load_model\n",
    }.items():
        (fake / pkg).mkdir(parents=True)
        (fake / pkg / "m.py").write_text(body)
    found = {pkg: violations(fake / pkg / "m.py", fake) for pkg in ("participation", "core", "results", "stimuli", "experiments")}
    assert all(len(v) == 1 for v in found.values()), found
    assert "participation may import only ['core', 'experiments']" in found["participation"][0]
    assert "torch" in found["results"][0]
    assert "top-level wiring" in found["stimuli"][0]
    assert "torch-free" in found["experiments"][0]
