"""`metamers synth slurm` on a real scheduler: a private single-node Slurm (``tests/slurm.py``)
runs the generated job array, submitted as a user would from a fresh login shell, so that the
script's own set-up lines must find ``metamers``. Its two tasks run at the same time into one
output tree; one is cancelled in the middle of its jobs and only it is resubmitted, with the line
``metamers synth progress`` prints; the merged bank is the bank of one unsharded run.

The README's "Many GPUs" section shows these commands.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm import PARTITION, SlurmCluster, unavailable
from tests.synthesis.shard_runs import BIN, REPO, content, metamers, metamers_in, slow_plan, start, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(420)]

# The set-up lines a lab would give: its environment, and where its own model code lives.
SETUP = [f"source {BIN / 'activate'}" if (BIN / "activate").exists() else f"export PATH={BIN}:$PATH", f"export PYTHONPATH={REPO}"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    why = unavailable()
    if why:
        if os.environ.get("METAMERS_REQUIRE_SLURM"):
            pytest.fail(f"METAMERS_REQUIRE_SLURM is set, but {why}")
        pytest.skip(why)
    c = SlurmCluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


def login_shell(cluster: SlurmCluster) -> dict[str, str]:
    """sbatch's environment, which Slurm passes on to the tasks: a fresh login, none of this Python."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    if "OMP_WAIT_POLICY" in os.environ:  # the Makefile's: idle OpenMP threads must not spin on shared cores
        env["OMP_WAIT_POLICY"] = os.environ["OMP_WAIT_POLICY"]
    return cluster.env(env)


def submitted(result: object) -> str:
    match = re.fullmatch(r"Submitted batch job (\d+)\n", result.stdout)  # type: ignore[attr-defined]
    assert match, result
    return match.group(1)


def test_the_array_runs_on_slurm_survives_a_cancelled_task_and_merges_into_the_bank_of_one_run(cluster: SlurmCluster, tmp_path: Path) -> None:
    slow_plan(tmp_path)
    whole = start("synth", "run", "plan.yaml", "--out", "whole", "--threads", "1", "--no-progress", cwd=tmp_path, log=tmp_path / "whole.log")
    try:
        made = metamers("synth", "slurm", "plan.yaml", "--out", "runs/tiny", "--shards", "2", "--gpus", "0", "--cpus", "1", "--mem", "1G",
                        "--time", "00:10:00", "--partition", PARTITION, *(a for line in SETUP for a in ("--setup", line)), cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        out = tmp_path / "runs" / "tiny"
        job = submitted(cluster.run("sbatch", "runs/tiny/synth.sbatch", env=login_shell(cluster), cwd=tmp_path))

        # Cancel task 1 once its first job is in its bank and two are still to do.
        wait_until(lambda: metamers_in(out / "shard-1") > 0, 240, "shard 1's first job")
        cluster.run("scancel", f"{job}_1")
        assert cluster.wait(job, 2) == {f"{job}_0": "COMPLETED", f"{job}_1": "CANCELLED"}, cluster.logs()
        done = metamers_in(out / "shard-1") // 2  # jobs of 2 metamers
        assert 0 < done < 3
        # (Slurm names the task by its own job id there, not by the array's.)
        assert re.search(rf"\*\*\* JOB \d+ ON {cluster.node} CANCELLED AT ", (out / "logs" / f"{job}_1.out").read_text())
        # The two tasks ran at the same time, into one output tree.
        (start0, end0), (start1, end1) = (cluster.tasks(job, "%S %e")[f"{job}_{i}"].split() for i in (0, 1))
        assert start0 < end1 and start1 < end0  # ISO 8601 times order as strings

        progress = metamers("synth", "progress", "runs/tiny", cwd=tmp_path)
        assert progress.returncode == 1, progress.stderr
        assert f"    1        {done}/3  stopped" in progress.stdout.splitlines()
        resubmit = progress.stdout.splitlines()[-1].strip()
        assert resubmit == f"sbatch --array=1 {out / 'synth.sbatch'}"
        again = submitted(cluster.run(*shlex.split(resubmit), env=login_shell(cluster), cwd=tmp_path))
        assert cluster.wait(again, 1) == {f"{again}_1": "COMPLETED"}, cluster.logs()
        log = (out / "logs" / f"{again}_1.out").read_text()
        assert f"resuming: {done} of 3 jobs already finished in {out / 'shard-1'}" in log
        assert f"{out / 'shard-1'}: {3 - done} jobs run, {done} skipped (finished before)" in log
        assert len(re.findall(r"^finished tiny/relu\d/000\d \(\d+/\d+ metamers, \d+ s\)$", log, re.M)) == 3 - done  # a line per job
        assert sorted(p.name for p in (out / "logs").iterdir()) == sorted([f"{job}_0.out", f"{job}_1.out", f"{again}_1.out"])

        finished = metamers("synth", "progress", "runs/tiny", cwd=tmp_path)
        assert finished.returncode == 0, finished.stdout + finished.stderr
        merged = metamers("synth", "merge", "runs/tiny/bank", *sorted(str(p.relative_to(tmp_path)) for p in out.glob("shard-*")), cwd=tmp_path)
        assert merged.returncode == 0, merged.stderr
        assert whole.wait(timeout=240) == 0, (tmp_path / "whole.log").read_text()
        assert content(out / "bank") == content(tmp_path / "whole")
    finally:
        if whole.poll() is None:
            whole.kill()
            whole.wait()


def test_the_gpu_script_asks_for_what_a_gpu_cluster_grants(cluster: SlurmCluster, tmp_path: Path) -> None:
    """The cluster declares one GPU: sbatch --test-only accepts the default one-GPU script and
    refuses a two-GPU one, so the --gres line is read and checked, not ignored."""
    slow_plan(tmp_path)
    for gpus, accepted in (("1", True), ("2", False)):
        made = metamers("synth", "slurm", "plan.yaml", "--out", f"runs/gpu{gpus}", "--shards", "4", "--gpus", gpus, "--cpus", "1",
                        "--mem", "4G", "--time", "02:00:00", "--partition", PARTITION, "--setup", "module load cuda", cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        script = tmp_path / f"runs/gpu{gpus}/synth.sbatch"
        assert f"#SBATCH --gres=gpu:{gpus}" in script.read_text() and "--device cuda" in script.read_text()
        test = cluster.run("sbatch", "--test-only", str(script), check=False, cwd=tmp_path)
        if accepted:
            assert test.returncode == 0 and f"to start at " in test.stderr and f"in partition {PARTITION}" in test.stderr, test
        else:
            assert test.returncode != 0 and "Requested node configuration is not available" in test.stderr, test
