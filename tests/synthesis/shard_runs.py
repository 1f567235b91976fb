"""Sharded runs in separate processes: a tiny plan whose jobs take about a second each (long
enough to stop or cancel a run between two jobs), the ``metamers`` command as a user runs it, and
the comparison of two banks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from synthesis.bank import LOCK, MANIFEST, open_bank
from tests.synthesis.tiny import write_sources

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
METAMERS = str(BIN / "metamers") if (BIN / "metamers").exists() else "metamers"


def slow_plan(folder: Path, round_steps: int = 300) -> Path:
    """6 sources × 2 layers in batches of 2: 6 jobs of 2 metamers, 2 × ``round_steps`` steps each
    (300: about a second a job on one thread)."""
    write_sources(folder / "sources", per_class=2)
    plan = folder / "plan.yaml"
    plan.write_text(
        """\
name: tiny-shards
modality: image
seed: 5
categories: [{id: a, label: A}, {id: b, label: B}, {id: c, label: C}]
sources: {folder: sources}
models:
  - {name: tiny, model: "tests.synthesis.tiny:tiny_model", layers: [relu1, relu2]}
synthesis: {preset: paper, rounds: 2, round_steps: ROUND_STEPS, batch_size: 2}
null: {pairs: 40, signals: 12}
""".replace("ROUND_STEPS", str(round_steps)),
        encoding="utf-8",
    )
    return plan


def user_env() -> dict[str, str]:
    """A researcher's shell: this environment's ``metamers`` on PATH, and the tiny test model
    importable (as a lab's own model package would be)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def metamers(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([METAMERS, *map(str, argv)], cwd=cwd, env=env or user_env(), capture_output=True, text=True, timeout=timeout)


def start(*argv: str | Path, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([METAMERS, *map(str, argv)], cwd=cwd, env=user_env(), stdout=out, stderr=subprocess.STDOUT)


def metamers_in(bank: Path) -> int:
    """Metamers in the bank's manifest now (it is replaced atomically, so any read is whole)."""
    try:
        return sum(1 for s in json.loads((bank / MANIFEST).read_text())["stimuli"] if s["kind"] == "metamer")
    except FileNotFoundError:
        return 0


def wait_until(ok: Any, timeout_s: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first (exit {proc.returncode})")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.05)


def files(bank: Path) -> dict[str, bytes]:
    """Every file in a bank folder but its writer lock, with its bytes."""
    return {str(p.relative_to(bank)): p.read_bytes() for p in sorted(bank.rglob("*")) if p.is_file() and p.name != LOCK}


def content(bank: Path) -> dict[str, Any]:
    """A bank as a comparable value: the validated manifest (every file's sha256 checked) with
    stimuli in id order, less its creation time."""
    with open_bank(bank) as b:
        m = b.manifest.model_dump(mode="json")
    del m["created"]
    m["stimuli"] = sorted(m["stimuli"], key=lambda s: s["id"])
    return m
