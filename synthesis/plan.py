"""Synthesis plans: a YAML file that says what to synthesize, expanded into independent jobs.

A plan names the bank, its categories, the natural sources (plus practice, catch and icon images
for the experiment), the models and layers, the optimizer and the null distribution. It expands
into **jobs**: model × group of layers × batch of sources. Jobs are independent, so a plan can be
cut into shards (``--shard i/N``, job k goes to shard k mod N) and run as a Slurm job array, one
GPU per task; the shard banks are merged afterwards.

Relative paths in a plan are relative to the plan file's folder. Example::

    name: digits-demo
    modality: image
    seed: 0
    categories: [{id: "0", label: "0"}, {id: "1", label: "1"}]
    sources: {folder: sources}               # sources/<category id>/<name>.png
    practice: {factory: "mypkg.stimuli:practice", kwargs: {per_digit: 3}}
    models:
      - {name: digits, model: digits, checkpoint: ../models/digits.pt, layers: [relu1, final]}
    synthesis: {preset: paper, round_steps: 300, patience: 40, batch_size: 30}
    null: {pairs: 1000, signals: 200, source: model}
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synthesis.bank import Ident


class PlanError(ValueError):
    """The plan is invalid or does not fit the bank it would extend; lists every problem."""

    def __init__(self, problems: list[str], source: str = "plan") -> None:
        self.problems = problems
        super().__init__("\n  - ".join([f"{source} cannot be run ({len(problems)} problem{'s' if len(problems) != 1 else ''}):", *problems]))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignalSource(_Strict):
    """Where signals come from: a folder ``<category id>/<name>.<ext>`` or a factory function."""

    folder: str | None = None
    factory: str | None = None
    kwargs: dict[str, Any] = {}

    @model_validator(mode="after")
    def _one(self) -> SignalSource:
        if (self.folder is None) == (self.factory is None):
            raise ValueError("give exactly one of folder or factory")
        if self.factory is not None and ":" not in self.factory:
            raise ValueError("factory must look like package.module:function")
        return self


class CategorySpec(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.'-]{1,64}$")]
    label: str


class ModelSpec(_Strict):
    name: Ident  # the model's name in the bank
    model: str  # registry reference: a registered name, torchvision:NAME or package.module:factory
    checkpoint: str | None = None
    layers: Annotated[list[str], Field(min_length=1)]
    options: dict[str, Any] = {}


class SynthesisSpec(_Strict):
    preset: Literal["paper", "adam"] = "paper"
    lr: float | None = None
    rounds: Annotated[int, Field(ge=1)] | None = None
    round_steps: Annotated[int, Field(ge=1)] | None = None
    lr_decay: float | None = None
    patience: Annotated[int, Field(ge=1)] | None = None
    rtol: float | None = None
    atol: float | None = None
    target_loss: float | None = None
    init_mean: float | None = None
    init_std: float | None = None
    fake_relu: bool = True
    batch_size: Annotated[int, Field(ge=1)] = 16  # sources per job
    layers_per_job: Annotated[int, Field(ge=1)] | Literal["all"] = 1
    compile: bool = False  # torch.compile the truncated model (GPU runs)

    def optimizer_overrides(self) -> dict[str, Any]:
        keys = ("lr", "rounds", "round_steps", "lr_decay", "patience", "rtol", "atol", "target_loss", "init_mean", "init_std")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None} | {"fake_relu": self.fake_relu}


class NullSpec(_Strict):
    pairs: Annotated[int, Field(ge=1)] = 1000
    signals: Annotated[int, Field(ge=2)] = 200  # natural signals drawn for the null (source: model)
    # "model": the model's own sampler of its training distribution; "sources": the plan's sources.
    source: Literal["model", "sources"] | SignalSource = "model"
    seed: int | None = None  # default: the plan's seed
    # Another bank whose null distributions to reuse (same model checkpoint, layer and pair count).
    reuse: str | None = None


class Plan(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    modality: Literal["image", "audio"]
    seed: int = 0
    categories: list[CategorySpec] | None = None  # default: the first model's classes
    sources: SignalSource
    practice: SignalSource | None = None
    catch: SignalSource | None = None
    icons: SignalSource | None = None  # folder of <category id>.png, or factory returning {id: array}
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    synthesis: SynthesisSpec = SynthesisSpec()
    null: NullSpec = NullSpec()
    device: str = "auto"
    diagnostics: bool = False

    @model_validator(mode="after")
    def _unique(self) -> Plan:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError("model names must be unique")
        for m in self.models:
            if len(set(m.layers)) != len(m.layers):
                raise ValueError(f"model {m.name}: layers must be unique")
        return self

    def core(self) -> dict[str, Any]:
        """The settings that determine results (not device, diagnostics or compilation)."""
        d = self.model_dump(mode="json")
        for k in ("device", "diagnostics"):
            d.pop(k)
        d["synthesis"].pop("compile")
        d["synthesis"].pop("batch_size")  # batching does not change a metamer (up to float rounding)
        d["synthesis"].pop("layers_per_job")
        return d


@dataclass(frozen=True)
class LoadedPlan:
    plan: Plan
    path: Path

    @property
    def base(self) -> Path:
        return self.path.parent

    def resolve(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else (self.base / p).resolve()


def load_plan(path: str | Path) -> LoadedPlan:
    """Read and check a plan file. Raises :class:`PlanError` listing every problem."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError([f"cannot read {p}: {exc}"], str(p)) from exc
    except yaml.YAMLError as exc:
        raise PlanError([f"not valid YAML: {exc}"], str(p)) from exc
    if not isinstance(raw, dict):
        raise PlanError(["the plan must be a YAML mapping"], str(p))
    if None in raw:
        # YAML reads an unquoted `null:` key as None; the plan's null section is meant.
        raw["null"] = raw.pop(None)
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "plan"
            problems.append(f"{loc}: {'unknown field' if err['type'] == 'extra_forbidden' else err['msg']}")
        raise PlanError(problems, str(p)) from exc
    return LoadedPlan(plan, p.resolve())


def fingerprint(core: dict[str, Any], extra: dict[str, Any]) -> str:
    """A hash of everything that determines a bank's results (plan core, checkpoints, source files)."""
    text = json.dumps({"plan": core, **extra}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Job:
    """One unit of work: metamers of ``sources`` at ``layers`` of ``model``, solved in one batch."""

    id: str
    model: str
    layers: tuple[str, ...]
    sources: tuple[str, ...]

    def metamer_ids(self) -> list[str]:
        return [metamer_id(s, self.model, la) for la in self.layers for s in self.sources]


def metamer_id(source: str, model: str, layer: str) -> str:
    return f"{source}/{model}/{layer}"


def expand_jobs(plan: Plan, source_ids: list[str], layer_order: dict[str, list[str]] | None = None) -> list[Job]:
    """All jobs of a plan, in a stable order (the order shards are cut from).

    ``layer_order`` gives each model's layers in depth order (default: as written in the plan).
    """
    jobs = []
    ids = sorted(source_ids)
    bs = plan.synthesis.batch_size
    for m in plan.models:
        layers = (layer_order or {}).get(m.name, m.layers)
        per = len(layers) if plan.synthesis.layers_per_job == "all" else int(plan.synthesis.layers_per_job)
        for g in range(0, len(layers), per):
            group = tuple(layers[g : g + per])
            for b in range(0, len(ids), bs):
                jobs.append(Job(f"{m.name}/{'+'.join(group)}/{b // bs:04d}", m.name, group, tuple(ids[b : b + bs])))
    return jobs


_SHARD = re.compile(r"^(\d+)/(\d+)$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` → (i, N) with 0 ≤ i < N (shards are numbered from 0, like Slurm array tasks)."""
    m = _SHARD.match(text.strip())
    if not m:
        raise ValueError(f"--shard must look like i/N (e.g. 0/4), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < N (shards are numbered from 0)")
    return i, n


def shard_jobs(jobs: list[Job], shard: tuple[int, int] | None) -> list[Job]:
    if shard is None:
        return jobs
    i, n = shard
    return jobs[i::n]


def slurm_script(
    plan_path: str | Path,
    out_dir: str | Path,
    shards: int,
    *,
    time: str = "24:00:00",
    partition: str | None = None,
    gpus: int = 1,
    cpus: int = 4,
    mem: str = "32G",
    python: str = "metamers",
    setup: str | Sequence[str] = (),
) -> str:
    """A Slurm job-array script: task i runs shard i/N into ``out_dir/shard-i``; then merge them.

    ``setup``: shell lines run first in each task (module load, activating an environment).
    Torch gets the task's CPUs as threads: without CPU binding on the cluster it would start one
    thread per core of the node, which tasks sharing a node fight over.
    """
    if shards < 1:
        raise ValueError("shards must be at least 1")
    if any(c.isspace() for c in str(out_dir)):
        raise ValueError(f"{out_dir!r}: #SBATCH lines cannot hold a path with spaces; choose another --out")
    plan_q = shlex.quote(str(plan_path))
    out_q = str(out_dir)
    lines = [
        "#!/bin/bash",
        "# Metamer Lab synthesis: one array task per shard.",
        f"# Generated by `metamers synth slurm {plan_path}`. Submit with: sbatch {{this file}}",
        f"# Watch: squeue --me, and `metamers synth progress {out_q}` (which shards finished; how to resubmit the rest).",
        "# When every task has finished, merge the shards into one bank:",
        f"#   metamers synth merge {out_q}/bank {out_q}/shard-*",
        "#SBATCH --job-name=metamers",
        f"#SBATCH --array=0-{shards - 1}",
        f"#SBATCH --gres=gpu:{gpus}" if gpus > 0 else "# (no GPU requested)",
        f"#SBATCH --cpus-per-task={cpus}",
        f"#SBATCH --mem={mem}",
        f"#SBATCH --time={time}",
        f"#SBATCH --output={out_q}/logs/%A_%a.out",
    ]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += [
        "set -euo pipefail",
        *([setup] if isinstance(setup, str) else setup),
        f'echo "shard $SLURM_ARRAY_TASK_ID/{shards}: Slurm job ${{SLURM_ARRAY_JOB_ID}}_$SLURM_ARRAY_TASK_ID on $(hostname) at $(date -Is)"',
        # Resumable: a requeued or re-submitted task skips the jobs it already finished.
        f"{python} synth run {plan_q} --out {out_q}/shard-$SLURM_ARRAY_TASK_ID "
        f"--shard $SLURM_ARRAY_TASK_ID/{shards} --device {'cuda' if gpus > 0 else 'cpu'} "
        f"--threads ${{SLURM_CPUS_PER_TASK:-{cpus}}} --no-progress",
    ]
    return "\n".join(line for line in lines if line) + "\n"
