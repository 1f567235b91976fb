"""`metamers synth ...` end to end on a tiny model: banks, resume, shards, errors before compute."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import main
from synthesis.bank import open_bank, read_manifest
from synthesis.criteria import compare
from synthesis.features import FeatureExtractor
from synthesis.media import decode_png, encode_png
from tests.synthesis.tiny import SIZE, tiny_model, write_plan, write_sources


def project(tmp_path: Path, **plan_kw) -> Path:
    write_sources(tmp_path / "sources", per_class=2)
    return write_plan(tmp_path / "plan.yaml", **plan_kw)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["synth", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def stimuli(bank: Path) -> dict[str, dict]:
    return {s["id"]: s for s in json.loads((bank / "manifest.json").read_text())["stimuli"]}


def test_run_writes_a_bank_that_the_reader_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path)
    rc, out, err = cli(capsys, "run", str(plan), "--out", str(tmp_path / "bank"), "--no-progress")
    assert rc == 0, err
    with open_bank(tmp_path / "bank") as bank:
        m = bank.manifest
    assert [c.id for c in m.categories] == ["a", "b", "c"]
    assert m.models[0].layers == ["relu1", "relu2", "fc"]
    assert set(m.null["tiny"]) == {"relu1", "relu2", "fc"}
    metamers = [s for s in m.stimuli if s.kind == "metamer"]
    assert len(metamers) == 6 * 3
    for s in metamers:
        assert s.passed == (not s.fail_reasons)
        assert s.metrics is not None and s.metrics.steps > 0
    assert "6 jobs run" in out


def test_metrics_are_measured_on_the_saved_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path, layers=("relu2",))
    assert cli(capsys, "run", str(plan), "--out", str(tmp_path / "bank"), "--no-progress")[0] == 0
    model = tiny_model()
    fe = FeatureExtractor(model.module, ["relu2"], torch.zeros(1, 1, SIZE, SIZE))
    for s in stimuli(tmp_path / "bank").values():
        if s["kind"] != "metamer":
            continue
        saved = torch.from_numpy(decode_png((tmp_path / "bank" / s["file"]).read_bytes()))[None, None]
        natural = torch.from_numpy(decode_png((tmp_path / "bank" / f"natural/{s['source']}.png").read_bytes()))[None, None]
        with torch.no_grad():
            stats = compare(fe(natural)["relu2"].numpy(), fe(saved)["relu2"].numpy())
            decision = model.decide(saved)[0]
        # Batched and single forward passes differ only in float rounding.
        assert s["metrics"]["spearman"] == pytest.approx(stats.spearman, abs=1e-4)
        assert s["metrics"]["snr_db"] == pytest.approx(stats.snr_db, abs=1e-4)
        assert s["metrics"]["pred_metamer"] == decision


def test_resume_skips_finished_jobs_and_leaves_them_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path)
    bank = tmp_path / "bank"
    assert cli(capsys, "run", str(plan), "--out", str(bank), "--no-progress", "--max-jobs", "2")[0] == 0  # "interrupted"
    first = stimuli(bank)
    done = {k: v for k, v in first.items() if v["kind"] == "metamer"}
    assert len(done) == 6  # two jobs of three sources
    mtimes = {k: (bank / v["file"]).stat().st_mtime_ns for k, v in done.items()}
    rc, out, _ = cli(capsys, "run", str(plan), "--out", str(bank), "--no-progress")
    assert rc == 0 and "4 jobs run, 2 skipped" in out
    after = stimuli(bank)
    for k, v in done.items():
        assert after[k] == v
        assert (bank / v["file"]).stat().st_mtime_ns == mtimes[k]
    # ...and the resumed bank is the bank an uninterrupted run makes.
    assert cli(capsys, "run", str(plan), "--out", str(tmp_path / "whole"), "--no-progress")[0] == 0
    whole = stimuli(tmp_path / "whole")
    assert {k: v["sha256"] for k, v in whole.items()} == {k: v["sha256"] for k, v in after.items()}
    rc, out, _ = cli(capsys, "run", str(plan), "--out", str(bank), "--no-progress")
    assert rc == 0 and "0 jobs run, 6 skipped" in out


def test_shards_merge_into_the_bank_of_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path, layers=("relu1", "fc"))
    for i in range(2):
        assert cli(capsys, "run", str(plan), "--out", str(tmp_path / f"shard-{i}"), "--shard", f"{i}/2", "--no-progress")[0] == 0
    parts = [{k for k, v in stimuli(tmp_path / f"shard-{i}").items() if v["kind"] == "metamer"} for i in range(2)]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    rc, out, err = cli(capsys, "merge", str(tmp_path / "merged"), str(tmp_path / "shard-0"), str(tmp_path / "shard-1"))
    assert rc == 0, err
    with open_bank(tmp_path / "merged"):
        pass
    assert cli(capsys, "run", str(plan), "--out", str(tmp_path / "whole"), "--no-progress")[0] == 0
    merged = {k: v["sha256"] for k, v in stimuli(tmp_path / "merged").items()}
    assert merged == {k: v["sha256"] for k, v in stimuli(tmp_path / "whole").items()}


def test_merge_refuses_shards_of_different_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path, layers=("fc",))
    assert cli(capsys, "run", str(plan), "--out", str(tmp_path / "one"), "--no-progress")[0] == 0
    other = write_plan(tmp_path / "other.yaml", layers=("relu1",))
    assert cli(capsys, "run", str(other), "--out", str(tmp_path / "two"), "--no-progress")[0] == 0
    rc, _, err = cli(capsys, "merge", str(tmp_path / "merged"), str(tmp_path / "one"), str(tmp_path / "two"))
    assert rc == 2 and "different plan" in err


def test_bank_of_another_plan_is_not_extended(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path, layers=("fc",))
    assert cli(capsys, "run", str(plan), "--out", str(tmp_path / "bank"), "--no-progress")[0] == 0
    other = write_plan(tmp_path / "plan.yaml", layers=("fc",), extra="")
    other.write_text(other.read_text().replace("seed: 3", "seed: 4"))
    rc, _, err = cli(capsys, "run", str(other), "--out", str(tmp_path / "bank"), "--no-progress")
    assert rc == 2 and "different plan" in err


def test_unknown_layer_fails_before_any_compute_and_lists_valid_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path, layers=("relu1", "relu7"))
    rc, _, err = cli(capsys, "run", str(plan), "--out", str(tmp_path / "bank"), "--no-progress")
    assert rc == 2
    assert "relu7" in err and "conv1, relu1, add, conv2, relu2" in err
    assert not (tmp_path / "bank").exists()


def test_unreadable_image_is_named_before_any_compute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path)
    (tmp_path / "sources" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    rc, _, err = cli(capsys, "run", str(plan), "--out", str(tmp_path / "bank"), "--no-progress")
    assert rc == 2 and "broken.png" in err and "unreadable" in err
    assert not (tmp_path / "bank").exists()


def test_wrong_input_shape_is_reported_before_any_compute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path)
    (tmp_path / "sources" / "b" / "big.png").write_bytes(encode_png(np.zeros((10, 12))))
    rc, _, err = cli(capsys, "check", str(plan))
    assert rc == 2 and "big.png" in err and "12×10 grey" in err and "[1, 8, 8]" in err


def test_check_lists_jobs_without_computing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "check", str(project(tmp_path)))
    assert rc == 0 and "jobs: 6 (18 metamers)" in out


def test_diagnostics_write_a_figure_per_metamer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path, layers=("fc",), batch_size=6)
    assert cli(capsys, "run", str(plan), "--out", str(tmp_path / "bank"), "--no-progress", "--diagnostics")[0] == 0
    figures = sorted((tmp_path / "bank" / "diagnostics" / "tiny" / "fc").glob("*.png"))
    assert len(figures) == 6 and figures[0].read_bytes().startswith(b"\x89PNG")
    with open_bank(tmp_path / "bank"):  # figures are not part of the manifest
        pass


def test_layers_command_lists_names_and_shapes(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "layers", "tests.synthesis.tiny:tiny_model")
    assert rc == 0
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert "4×8×8" in lines["conv1"] and "yes" in lines["relu1"] and "3" in lines["fc"].split()[3]


def test_slurm_command_writes_a_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path)
    rc, out, _ = cli(capsys, "slurm", str(plan), "--out", str(tmp_path / "runs"))
    assert rc == 0
    text = (tmp_path / "runs" / "synth.sbatch").read_text()
    assert "#SBATCH --array=0-5" in text  # one task per job by default
    assert (tmp_path / "runs" / "logs").is_dir()


def test_report_prints_pass_rates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path, layers=("fc",))
    assert cli(capsys, "run", str(plan), "--out", str(tmp_path / "bank"), "--no-progress")[0] == 0
    rc, out, _ = cli(capsys, "report", str(tmp_path / "bank"), "--json")
    (row,) = json.loads(out)
    m = read_manifest(tmp_path / "bank")
    passed = sum(1 for s in m.stimuli if s.kind == "metamer" and s.passed)
    assert rc == 0 and row["layer"] == "fc" and row["total"] == 6 and row["passed"] == passed


def test_cli_module_does_not_import_torch() -> None:
    code = "import sys, app.cli; app.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_null_is_reused_from_another_bank(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = project(tmp_path, layers=("relu2",))
    assert cli(capsys, "run", str(plan), "--out", str(tmp_path / "first"), "--no-progress", "--max-jobs", "0")[0] == 0
    other = write_plan(tmp_path / "other.yaml", layers=("relu2",))
    other.write_text(other.read_text().replace("seed: 3", "seed: 9").replace("null: {pairs: 40, signals: 12}",
                                                                           "null: {pairs: 40, signals: 12, reuse: first}"))
    assert cli(capsys, "run", str(other), "--out", str(tmp_path / "second"), "--no-progress", "--max-jobs", "0")[0] == 0
    first, second = read_manifest(tmp_path / "first"), read_manifest(tmp_path / "second")
    assert second.null == first.null
    assert second.generator.seed == 9
    with open_bank(tmp_path / "second"):
        pass
