"""`metamers synth progress`: which shards of a Slurm array have finished, read from the shard
banks, and the sbatch line that resubmits only the others."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from app.cli import main
from synthesis.bank import writer_lock
from tests.synthesis.tiny import write_plan, write_sources


def synth(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    rc = main(["synth", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def array(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A 3-shard array (2 jobs each): shard 0 finished, shard 1 stopped after one job, shard 2 never started."""
    write_sources(tmp_path / "sources", per_class=2)
    plan = write_plan(tmp_path / "plan.yaml")
    out = tmp_path / "runs"
    assert synth(capsys, "slurm", plan, "--out", out, "--shards", "3", "--gpus", "0")[0] == 0
    assert synth(capsys, "run", plan, "--out", out / "shard-0", "--shard", "0/3", "--no-progress")[0] == 0
    assert synth(capsys, "run", plan, "--out", out / "shard-1", "--shard", "1/3", "--no-progress", "--max-jobs", "1")[0] == 0
    return out


def test_progress_names_the_unfinished_shards_and_the_sbatch_line_for_only_those(array: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = synth(capsys, "progress", array)
    assert rc == 1
    lines = out.splitlines()
    assert lines[0] == f"{array}: 3 shards of {array.parent / 'plan.yaml'}; 3 of 6 jobs finished"
    assert lines[2:5] == ["    0        2/2  finished", "    1        1/2  stopped", "    2        0/2  not started"]
    assert lines[-1] == f"  sbatch --array=1,2 {array / 'synth.sbatch'}"


def test_progress_json_gives_each_shard_and_the_resubmission(array: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = synth(capsys, "progress", array, "--json")
    assert rc == 1
    data = json.loads(out)
    assert [(s["shard"], s["jobs_done"], s["jobs"], s["state"]) for s in data["shards"]] == [(0, 2, 2, "finished"), (1, 1, 2, "stopped"),
                                                                                          (2, 0, 2, "not started")]
    assert data["resubmit"] == f"sbatch --array=1,2 {array / 'synth.sbatch'}"


def test_a_shard_being_written_shows_as_running_and_is_not_resubmitted(array: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with writer_lock(array / "shard-2"):  # as a task that has just started would
        rc, out, _ = synth(capsys, "progress", array)
    assert rc == 1
    assert f"    2        0/2  running (pid {os.getpid()} on " in out
    assert out.splitlines()[-1] == f"  sbatch --array=1 {array / 'synth.sbatch'}"


def test_when_every_shard_has_finished_progress_gives_the_merge_command(array: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = array.parent / "plan.yaml"
    for i in (1, 2):
        assert synth(capsys, "run", plan, "--out", array / f"shard-{i}", "--shard", f"{i}/3", "--no-progress")[0] == 0
    rc, out, _ = synth(capsys, "progress", array)
    assert rc == 0
    assert out.splitlines()[-1] == f"Every shard has finished. Merge them: metamers synth merge {array}/bank {array}/shard-*"


def test_progress_of_a_folder_that_holds_no_array_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = synth(capsys, "progress", tmp_path)
    assert rc == 2
    assert f"{tmp_path / 'slurm.json'} is missing: {tmp_path} is not the --out folder of `metamers synth slurm`" in err
