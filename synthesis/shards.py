"""Which shards of a Slurm array have finished, read from the shard banks themselves.

``metamers synth slurm`` records the array it wrote in ``OUT/slurm.json`` (plan, shard count,
script). Task i writes the bank ``OUT/shard-i``, and a job counts as finished when every metamer
it makes is in that bank's manifest, which is rewritten atomically after each job. So progress
needs neither Slurm accounting (``sacct`` needs slurmdbd) nor ``squeue``, which forgets finished
tasks after ``MinJobAge`` (300 s by default), and it stays right across cancellations and
resubmissions. A shard whose writer lock is held is being written right now.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from synthesis.bank import MANIFEST, BankError, lock_holder, read_manifest
from synthesis.plan import PlanError, shard_jobs

LAYOUT = "slurm.json"


class ArrayLayout(BaseModel):
    """``OUT/slurm.json``: what ``metamers synth slurm`` wrote (absolute paths)."""

    model_config = ConfigDict(extra="forbid")

    plan: str
    shards: int = Field(ge=1)
    script: str


@dataclass(frozen=True)
class ShardProgress:
    """One array task's bank. ``writer``: who is writing it now (pid, host, Slurm job), or None."""

    index: int
    folder: Path
    jobs_done: int
    jobs: int
    started: bool
    writer: str | None

    @property
    def finished(self) -> bool:
        return self.jobs_done == self.jobs

    @property
    def state(self) -> str:
        if self.finished:
            return "finished"
        if self.writer:
            return "running"
        return "stopped" if self.started else "not started"


def shard_folder(out: str | Path, index: int) -> Path:
    return Path(out) / f"shard-{index}"


def write_layout(out: str | Path, layout: ArrayLayout) -> Path:
    path = Path(out) / LAYOUT
    path.write_text(layout.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return path


def read_layout(out: str | Path) -> ArrayLayout:
    path = Path(out) / LAYOUT
    if not path.is_file():
        raise PlanError([f"{path} is missing: {out} is not the --out folder of `metamers synth slurm`"])
    try:
        return ArrayLayout.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise PlanError([f"{path} cannot be read: {exc}"]) from exc


def shard_progress(out: str | Path) -> tuple[ArrayLayout, list[ShardProgress]]:
    """The array recorded in ``out`` and each shard's finished jobs. Checks the plan like
    ``synth check`` (so it loads the models); raises PlanError if a shard holds another plan's bank."""
    from synthesis.run import prepare  # torch

    layout = read_layout(out)
    p = prepare(layout.plan)
    rows: list[ShardProgress] = []
    problems: list[str] = []
    for i in range(layout.shards):
        folder = shard_folder(out, i)
        jobs = shard_jobs(p.jobs, (i, layout.shards))
        done: set[str] = set()
        started = (folder / MANIFEST).is_file()
        if started:
            try:
                m = read_manifest(folder)
            except BankError as exc:
                problems.append(f"{folder}: {exc}")
                continue
            if m.generator.settings.get("fingerprint") != p.fingerprint:
                problems.append(f"{folder} holds the bank of another plan, model or source set than {layout.plan}")
                continue
            done = {s.id for s in m.stimuli}
        finished = sum(all(mid in done for mid in job.metamer_ids()) for job in jobs)
        rows.append(ShardProgress(i, folder, finished, len(jobs), started, lock_holder(folder)))
    if problems:
        raise PlanError(problems, str(Path(out) / LAYOUT))
    return layout, rows


def resubmit_command(layout: ArrayLayout, shards: list[int]) -> str:
    """``sbatch --array=...`` for only these tasks: options on the command line override the
    script's ``#SBATCH --array`` line, and every other line stays as it is."""
    return f"sbatch --array={','.join(str(i) for i in shards)} {shlex.quote(layout.script)}"
