"""Two processes writing one bank folder (two shards given one --out, a shard resubmitted while it
still runs, a merge of a shard that has not finished). The first run is stopped with SIGSTOP in
the middle of its jobs, so the second always meets it."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli import main
from tests.synthesis.shard_runs import content, files, metamers_in, slow_plan, start, wait_until

pytestmark = pytest.mark.timeout(300)


def synth(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    """``metamers synth ...`` in this process (the stopped writer is another process)."""
    rc = main(["synth", *map(str, argv)])
    return rc, capsys.readouterr().err


@contextlib.contextmanager
def stopped_mid_run(plan: Path, out: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Shard 0/2 of ``plan`` running into ``out`` in another process, held by SIGSTOP after its
    first job (so it holds the writer lock); it goes on and must finish cleanly afterwards."""
    log = out.parent / f"{out.name}.log"
    proc = start("synth", "run", plan, "--out", out, "--shard", "0/2", "--threads", "1", "--no-progress", cwd=plan.parent, log=log)
    try:
        wait_until(lambda: metamers_in(out) > 0, 120, "the first job", proc)
        proc.send_signal(signal.SIGSTOP)
        yield proc
    finally:
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=120) == 0, log.read_text()


def test_a_second_writer_of_a_bank_being_written_is_refused_and_loses_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = slow_plan(tmp_path, round_steps=100)
    bank = tmp_path / "bank"
    with stopped_mid_run(plan, bank) as first:
        before = files(bank)
        rc, err = synth(capsys, "run", plan, "--out", bank, "--shard", "1/2", "--no-progress")
        assert rc == 2
        assert f"is being written by another process (pid {first.pid} on " in err
        assert files(bank) == before
    # Once the first has finished, the second shard goes into the same folder, and the folder
    # holds exactly the bank of one unsharded run.
    assert synth(capsys, "run", plan, "--out", bank, "--shard", "1/2", "--no-progress")[0] == 0
    assert synth(capsys, "run", plan, "--out", tmp_path / "whole", "--no-progress")[0] == 0
    assert content(bank) == content(tmp_path / "whole")


def test_merge_refuses_a_shard_that_is_still_being_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = slow_plan(tmp_path, round_steps=100)
    shard = tmp_path / "shard-0"
    with stopped_mid_run(plan, shard) as run:
        rc, err = synth(capsys, "merge", tmp_path / "bank", shard)
        assert rc == 2
        assert f"shard-0 is being written by another process (pid {run.pid} on " in err
        assert not (tmp_path / "bank").exists()
    assert synth(capsys, "merge", tmp_path / "bank", shard)[0] == 0
    assert metamers_in(tmp_path / "bank") == metamers_in(shard) == 6
