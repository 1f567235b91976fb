"""Plans: schema errors, job expansion, sharding, Slurm script."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthesis.plan import Job, PlanError, expand_jobs, load_plan, parse_shard, shard_jobs, slurm_script
from tests.synthesis.tiny import write_plan


def test_plan_lists_every_schema_problem(tmp_path: Path) -> None:
    p = tmp_path / "plan.yaml"
    p.write_text("name: x\nmodality: smell\nsources: {folder: s}\nmodels: []\nbatch: 3\n", encoding="utf-8")
    with pytest.raises(PlanError) as err:
        load_plan(p)
    msg = str(err.value)
    assert "modality" in msg and "models" in msg and "batch: unknown field" in msg


def test_unquoted_null_key_is_the_null_section(tmp_path: Path) -> None:
    lp = load_plan(write_plan(tmp_path / "plan.yaml"))
    assert lp.plan.null.pairs == 40 and lp.plan.null.signals == 12


def test_jobs_cover_model_layers_and_source_batches(tmp_path: Path) -> None:
    plan = load_plan(write_plan(tmp_path / "plan.yaml", batch_size=2)).plan
    jobs = expand_jobs(plan, ["s3", "s1", "s2"])
    assert [j.id for j in jobs] == ["tiny/relu1/0000", "tiny/relu1/0001", "tiny/relu2/0000", "tiny/relu2/0001", "tiny/fc/0000", "tiny/fc/0001"]
    assert jobs[0].sources == ("s1", "s2") and jobs[1].sources == ("s3",)
    assert jobs[0].metamer_ids() == ["s1/tiny/relu1", "s2/tiny/relu1"]


def test_layers_per_job_all_puts_every_layer_in_one_batch(tmp_path: Path) -> None:
    lp = load_plan(write_plan(tmp_path / "plan.yaml", batch_size=5))
    plan = lp.plan.model_copy(update={"synthesis": lp.plan.synthesis.model_copy(update={"layers_per_job": "all"})})
    (job,) = expand_jobs(plan, ["s1", "s2"])
    assert job.layers == ("relu1", "relu2", "fc") and len(job.metamer_ids()) == 6


def test_shards_partition_the_jobs() -> None:
    jobs = [Job(f"j{i}", "m", ("l",), (f"s{i}",)) for i in range(7)]
    parts = [shard_jobs(jobs, (i, 3)) for i in range(3)]
    assert sorted(j.id for p in parts for j in p) == sorted(j.id for j in jobs)
    assert [len(p) for p in parts] == [3, 2, 2]


@pytest.mark.parametrize("bad", ["3/3", "1/0", "a/b", "2"])
def test_bad_shard_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        parse_shard(bad)


def test_slurm_script_is_a_job_array_with_one_gpu_per_shard() -> None:
    text = slurm_script("/p/plan.yaml", "/scratch/out", 4, partition="gpu", time="02:00:00")
    assert text.startswith("#!/bin/bash")
    assert "#SBATCH --array=0-3" in text
    assert "#SBATCH --gres=gpu:1" in text
    assert "#SBATCH --partition=gpu" in text
    assert "synth run /p/plan.yaml --out /scratch/out/shard-$SLURM_ARRAY_TASK_ID --shard $SLURM_ARRAY_TASK_ID/4 --device cuda" in text
    assert "metamers synth merge /scratch/out/bank /scratch/out/shard-*" in text


def test_slurm_script_runs_each_setup_line_then_gives_torch_the_tasks_cpus() -> None:
    text = slurm_script("/p/plan.yaml", "/scratch/out", 2, gpus=0, cpus=3, setup=["module load cuda", "source /env/bin/activate"])
    lines = text.splitlines()
    run = next(i for i, line in enumerate(lines) if " synth run " in line)
    assert lines.index("set -euo pipefail") < lines.index("module load cuda") < lines.index("source /env/bin/activate") < run
    assert lines[run].endswith("--device cpu --threads ${SLURM_CPUS_PER_TASK:-3} --no-progress")
    assert "--gres" not in text


def test_slurm_script_refuses_an_output_folder_with_spaces() -> None:
    with pytest.raises(ValueError, match="cannot hold a path with spaces"):
        slurm_script("/p/plan.yaml", "/scratch/my runs", 2)
