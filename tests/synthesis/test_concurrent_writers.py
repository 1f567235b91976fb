"""Two processes writing one bank folder (two shards given one --out, a shard resubmitted while it
still runs, a merge of a shard that has not finished). The first run is stopped with SIGSTOP in
the middle of its jobs, so the second always meets it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from app.cli import main
from tests.synthesis.shard_runs import content, files, metamers_in, slow_plan, start, wait_until

pytestmark = pytest.mark.timeout(300)


def synth(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    """``metamers synth ...`` in this process (the stopped writer is another process)."""
    rc = main(["synth", *map(str, argv)])
    return rc, capsys.readouterr().err


def test_a_second_writer_of_a_bank_being_written_is_refused_and_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = slow_plan(tmp_path, round_steps=100)
    bank = tmp_path / "bank"
    first = start("synth", "run", plan, "--out", bank, "--shard", "0/2", "--threads", "1", "--no-progress", cwd=tmp_path, log=tmp_path / "first.log")
    try:
        wait_until(lambda: metamers_in(bank) > 0, 120, "the first shard's first job", first)
        first.send_signal(signal.SIGSTOP)
        before = files(bank)
        rc, err = synth(capsys, "run", plan, "--out", bank, "--shard", "1/2", "--no-progress")
        assert rc == 2
        assert f"is being written by another process (pid {first.pid} on " in err
        assert files(bank) == before
    finally:
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()
    # Once the first has finished, the second shard goes into the same folder, and the folder
    # holds exactly the bank of one unsharded run.
    assert synth(capsys, "run", plan, "--out", bank, "--shard", "1/2", "--no-progress")[0] == 0
    assert synth(capsys, "run", plan, "--out", tmp_path / "whole", "--no-progress")[0] == 0
    assert content(bank) == content(tmp_path / "whole")


def test_merge_refuses_a_shard_that_is_still_being_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = slow_plan(tmp_path, round_steps=100)
    shard = tmp_path / "shard-0"
    run = start("synth", "run", plan, "--out", shard, "--shard", "0/2", "--threads", "1", "--no-progress", cwd=tmp_path, log=tmp_path / "run.log")
    try:
        wait_until(lambda: metamers_in(shard) > 0, 120, "the shard's first job", run)
        run.send_signal(signal.SIGSTOP)
        rc, err = synth(capsys, "merge", tmp_path / "bank", shard)
        assert rc == 2
        assert f"shard-0 is being written by another process (pid {run.pid} on " in err
        assert not (tmp_path / "bank").exists()
    finally:
        run.send_signal(signal.SIGCONT)
        assert run.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()
    assert synth(capsys, "merge", tmp_path / "bank", shard)[0] == 0
    assert metamers_in(tmp_path / "bank") == metamers_in(shard) == 6
