"""A two-model experiment (a standard and a "robust" version of one architecture, same layers):
``metamers export`` adds the human-only between-model ANOVA (level × model, natural shared) to
the per-model analyses. Six participants answer each main trial right with a probability that
depends on the condition (seeded per participant), so the accuracies vary; the statistics are
checked against pingouin on the accuracies read back from trials.csv."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pingouin as pg  # the independent implementation (dev extra); a missing one fails, never skips
import pytest
import sqlalchemy as sa

from app.core.schema import Participant, Trial
from app.core.security import token_hash
from app.core.settings import Settings
from tests.study import Study, build_study

MODELS = ("tiny", "robust")
CONDITIONS = ["natural", "tiny/conv1", "tiny/fc", "robust/conv1", "robust/fc"]
P_CORRECT = {"natural": 0.9, "tiny/conv1": 0.7, "tiny/fc": 0.2, "robust/conv1": 0.8, "robust/fc": 0.6}


def _take_part(study: Study, pid: str) -> None:
    token = study.join(pid)
    study.start(token)
    with study.sessions() as s:
        person = s.scalar(sa.select(Participant.id).where(Participant.token_hash == token_hash(token)))
        plan = s.execute(sa.select(Trial.index, Trial.phase, Trial.condition, Trial.label).where(Trial.participant_id == person).order_by(Trial.index)).all()
    rng = random.Random(pid)
    for index, phase, condition, label in plan:
        ok = rng.random() < P_CORRECT[condition] if phase == "main" else True
        r = study.answer(token, index, label if ok else study.wrong(label))
        assert r.status_code == 201, r.text
    assert study.post(token, "/api/session/complete").status_code == 200


def _export(study: Study, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app import cli
    from app.core import commands

    monkeypatch.setattr(commands, "get_settings", lambda: study.settings)
    assert cli.main(["export", study.slug, "--out", str(out), "--permutations", "300", "--only", "trials.csv", "stats.csv", "stats.txt"]) == 0


def test_metamers_export_compares_two_models_on_human_accuracy(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    study = build_study(
        settings, tmp_path, {"conditions": CONDITIONS, "catch": {"trials": 0}},
        bank_kwargs={"extra_models": ("robust",), "layers": ("conv1", "fc")},
    )
    for pid in "ABCDEF":
        _take_part(study, pid)
    _export(study, tmp_path / "out", monkeypatch)
    st = pd.read_csv(tmp_path / "out" / "stats.csv")

    between = st[st["analysis"] == "rm_anova_models"].set_index("effect")
    assert list(between.index) == ["model", "layer", "layer:model"]
    assert (between["model"] == "tiny+robust").all() and (between["levels"] == "natural;conv1;fc").all()
    assert (between["n_observers"] == 6).all() and (between["scheme"] == "feather2023").all()
    # 6 participants, 3 levels, 2 models: df (1, 5), (2, 10), (2, 10).
    assert between[["df1", "df2"]].values.tolist() == [[1, 5], [2, 10], [2, 10]]
    assert (between["p_formula"] == "#{F* > F} / N, floored at 1/N").all()
    assert ((between["p_value"] >= 1 / 300) & (between["p_value"] <= 1)).all()

    # The same F and partial eta squared from pingouin, on human accuracies computed from trials.csv.
    trials = pd.read_csv(tmp_path / "out" / "trials.csv", dtype={"label": str, "answer": str})
    main = trials[(trials["phase"] == "main") & ~trials["swapped"]]
    acc = main.groupby(["participant", "condition"])["correct"].mean()
    long = pd.DataFrame(
        [
            {"subject": p, "level": level, "model": m, "acc": acc[(p, "natural" if level == "natural" else f"{m}/{level}")]}
            for p in sorted(set(main["participant"])) for level in ("natural", "conv1", "fc") for m in MODELS
        ]
    )
    ref = pg.rm_anova(long, dv="acc", within=["level", "model"], subject="subject", correction=False, effsize="np2").set_index("Source")
    for effect, source in (("model", "model"), ("layer", "level"), ("layer:model", "level * model")):
        assert between.loc[effect, "value"] == pytest.approx(ref.loc[source, "F"], rel=1e-9), effect
        assert between.loc[effect, "partial_eta_sq"] == pytest.approx(ref.loc[source, "np2"], rel=1e-9), effect

    # Each model still gets its human-vs-model ANOVA and its layer effect, natural included.
    for analysis in ("mixed_anova", "rm_anova_layer"):
        rows = st[st["analysis"] == analysis]
        assert set(rows["model"]) == set(MODELS) and (rows["levels"] == "natural;conv1;fc").all(), analysis

    text = (tmp_path / "out" / "stats.txt").read_text(encoding="utf-8")
    assert "Humans only, between models: two-way repeated-measures ANOVA" in text
    assert "tiny+robust: levels natural, conv1, fc; 6 participants" in text
    methods = " ".join(text.split("Methods (generated from this analysis; adapt freely)")[1].split())
    assert "models with the same number of layers was compared with a two-way repeated-measures ANOVA" in methods
    assert "tiny and robust (3 conditions, n = 6)" in methods
    assert "strictly" not in methods and "larger than the observed F (floored at 1/300)" in methods
