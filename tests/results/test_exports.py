"""Exports checked against a synthetic study with known answers.

Eight participants take the test study (8 sources, conditions natural + tiny/conv1, conv2, fc, so
2 main trials per condition each). The metamer of src-000 at conv2 failed its validity check, so
whoever meets src-000 in conv2 sees the natural stimulus instead (a swap). The model is made wrong
on src-001 at every layer (a passed metamer: it still agrees with the model's natural decision).

Included participants and how many of their (non-swapped) trials in each condition they get right:

    A: natural 2/2, conv1 2/2, conv2 all,  fc 0/2   (swapped trials answered wrong)
    B: natural 2/2, conv1 1/2, conv2 none, fc 0/2   (swapped trials answered right)
    C: natural 1/2, conv1 1/2, conv2 none, fc 1/2   (swapped trials answered right)

so, across participants (mean, SEM = sample SD / sqrt(3), percentile bootstrap 95% CI over 3 values):

    natural (1, 1, .5)  mean 5/6  SEM 1/6  CI [.5, 1]
    conv1   (1, .5, .5) mean 2/3  SEM 1/6  CI [.5, 1]
    conv2   (1, 0, 0)   mean 1/3  SEM 1/3  CI [0, 1]
    fc      (0, 0, .5)  mean 1/6  SEM 1/6  CI [0, .5]

The exports' default SEM uses the population SD, as the paper's figures do: for 3 values that is
the sample SEM times sqrt(2/3).

(For 3 values the bootstrap means take 4 values; e.g. for conv2 P(mean = 1) = 1/27 < 2.5% and
P(mean >= 2/3) = 7/27 > 2.5%, so the upper limit is 1; P(mean = 0) = 8/27 > 2.5%, so the lower is 0.)

Excluded, with the reasons the sidecar must give:
    D fails the gate (incomplete; failed_gate), E completes but the researcher excludes them,
    F stops early (incomplete), G gets every natural trial wrong (low_natural_accuracy, threshold
    0.5), H fails the catch trials (failed_attention).
"""

from __future__ import annotations

import csv
import io
import math
import xml.etree.ElementTree as ET
import zipfile
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pingouin as pg  # the independent implementation (dev extra); a missing one fails, never skips
import pytest
import sqlalchemy as sa
from PIL import Image

from app.core.schema import Participant, Stimulus, Trial
from app.core.security import token_hash
from app.core.settings import Settings
from app.results import csv_format, summaries
from app.results.csv_format import csv_chunks
from app.results.options import FILES
from app.results.pseudonyms import Pseudonymizer
from app.results.tables import TRIAL_COLUMNS, trial_rows
from tests.admin_client import fast_login
from tests.conftest import BACKENDS, _truncate_all
from tests.study import Study, build_study

POLICY = {
    "A": {"natural": 2, "tiny/conv1": 2, "tiny/conv2": "all", "tiny/fc": 0},
    "B": {"natural": 2, "tiny/conv1": 1, "tiny/conv2": "none", "tiny/fc": 0},
    "C": {"natural": 1, "tiny/conv1": 1, "tiny/conv2": "none", "tiny/fc": 1},
}
EXPECTED = {  # condition: (mean, sample-SD sem, ci_low, ci_high)
    "natural": (5 / 6, 1 / 6, 0.5, 1.0),
    "tiny/conv1": (2 / 3, 1 / 6, 0.5, 1.0),
    "tiny/conv2": (1 / 3, 1 / 3, 0.0, 1.0),
    "tiny/fc": (1 / 6, 1 / 6, 0.0, 0.5),
}
EXCLUDED = {"D": "incomplete;failed_gate", "E": "researcher", "F": "incomplete", "G": "low_natural_accuracy", "H": "failed_attention"}


def _plan(study: Study, token: str) -> list[tuple[int, str, str | None, bool, str]]:
    with study.sessions() as s:
        pid = s.scalar(sa.select(Participant.id).where(Participant.token_hash == token_hash(token)))
        return [tuple(r) for r in s.execute(sa.select(Trial.index, Trial.phase, Trial.condition, Trial.swapped, Trial.label).where(Trial.participant_id == pid).order_by(Trial.index))]  # type: ignore[misc]


def _take_part(study: Study, pid: str, *, policy: dict[str, object] | None = None, gate_ok: bool = True, natural_ok: bool = True,
               catch_ok: bool = True, stop_after_main: int | None = None, swapped_ok: bool = True) -> None:
    token = study.join(pid)
    study.start(token)
    seen: dict[str, int] = defaultdict(int)
    main_done = 0
    for index, phase, condition, swapped, label in _plan(study, token):
        if phase in ("main", "catch"):
            if stop_after_main is not None and main_done >= stop_after_main:
                return
            main_done += 1
        if phase == "gate":
            ok = gate_ok
        elif phase == "catch":
            ok = catch_ok
        elif phase == "main":
            assert condition is not None
            if swapped:
                ok = swapped_ok
            elif policy is not None:
                rule = policy[condition]
                ok = rule == "all" if isinstance(rule, str) else seen[condition] < rule
                seen[condition] += 1
            else:
                ok = natural_ok if condition == "natural" else True
        else:
            ok = True
        # Trial 3's stimulus was presented twice (as after a reload in the browser).
        r = study.answer(token, index, label if ok else study.wrong(label), client={"presentations": 2 if index == 3 else 1})
        assert r.status_code == 201, r.text
        if r.json()["stage"] == "ended":
            return
    assert study.post(token, "/api/session/complete").status_code == 200


@pytest.fixture(scope="module", params=BACKENDS)
def study(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Study:
    """Built once per backend for the whole module (the tests only read it)."""
    tmp = tmp_path_factory.mktemp(f"exports-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'metamers.db'}"
    else:
        url = request.getfixturevalue("pg_database")
        _truncate_all(url)
    settings = Settings(var_dir=tmp / "var", database_url=url, media_root=tmp / "media", secret_key="test-secret-key", base_url="http://testserver")
    st = build_study(
        settings,
        tmp,
        {"catch": {"trials": 2, "min_correct": 2}, "exclusions": {"min_natural_accuracy": 0.5}},
        bank_kwargs={"failed": {(0, "conv2")}},
    )
    with st.sessions() as s:  # the model misclassifies src-001 (natural and metamers alike)
        for stim in s.scalars(sa.select(Stimulus).where(Stimulus.source == "src-001", Stimulus.kind == "metamer")):
            stim.metrics = {**stim.metrics, "pred_metamer": "3", "pred_natural": "3"}
        s.commit()
    _take_part(st, "A", policy=POLICY["A"], swapped_ok=False)
    _take_part(st, "B", policy=POLICY["B"])
    _take_part(st, "C", policy=POLICY["C"])
    _take_part(st, "D", gate_ok=False)
    _take_part(st, "E")
    _take_part(st, "F", stop_after_main=3)
    _take_part(st, "G", natural_ok=False)
    _take_part(st, "H", catch_ok=False)
    csrf = fast_login(st)
    with st.sessions() as s:
        e = s.scalar(sa.select(Participant.public_id).where(Participant.platform_pid == "E"))
    r = st.client.post(f"/admin/experiments/1/participants/{e}/exclusion", data={"csrf_token": csrf, "action": "exclude", "reason": "noisy room"})
    assert r.status_code == 200
    return st


@pytest.fixture(autouse=True)
def _backend_label(request: pytest.FixtureRequest, study: Study) -> None:
    """Count these tests in the per-backend summary like the db_url-based ones."""
    request.node.user_properties.append(("backend", "sqlite" if study.settings.sqlalchemy_url.startswith("sqlite") else "postgresql"))


def download(study: Study, name: str, **params: object) -> bytes:
    r = study.client.get("/admin/experiments/1/export", params={"file": name, "permutations": 500, **params})
    assert r.status_code == 200, r.text
    return r.content


def frame(study: Study, name: str, **params: object) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(download(study, name, **params)))


def pid_of(study: Study) -> dict[str, str]:
    with study.sessions() as s:
        return {pub: pid for pid, pub in s.execute(sa.select(Participant.platform_pid, Participant.public_id))}


# ------------------------------------------------------------------------------ accuracy


def test_accuracy_by_layer_matches_the_hand_computed_values(study: Study) -> None:
    acc = frame(study, "accuracy_by_layer.csv").set_index("condition")
    assert list(acc.index) == ["natural", "tiny/conv1", "tiny/conv2", "tiny/fc"]
    assert list(acc["layer"]) == ["natural", "conv1", "conv2", "fc"]
    for cond, (mean, sem, lo, hi) in EXPECTED.items():
        row = acc.loc[cond]
        assert row["n_participants"] == 3, cond
        assert row["human_mean"] == pytest.approx(mean), cond
        assert row["human_sem"] == pytest.approx(sem * math.sqrt(2 / 3)), cond
        assert (row["human_ci_low"], row["human_ci_high"]) == (pytest.approx(lo), pytest.approx(hi)), cond
        assert row["chance"] == pytest.approx(1 / 4) and row["n_categories"] == 4
    assert acc.loc["natural", "layer_index"] != acc.loc["natural", "layer_index"]  # NaN: natural has no depth
    assert list(acc.loc[["tiny/conv1", "tiny/conv2", "tiny/fc"], "layer_index"]) == [0, 1, 2]


def test_the_sem_convention_is_settable_and_named_in_the_table(study: Study) -> None:
    paper = frame(study, "accuracy_by_layer.csv").set_index("condition")
    sample = frame(study, "accuracy_by_layer.csv", sem_ddof=1).set_index("condition")
    assert (paper["sem_ddof"] == 0).all() and (sample["sem_ddof"] == 1).all()
    for cond, (mean, sem, _, _) in EXPECTED.items():
        assert sample.loc[cond, "human_sem"] == pytest.approx(sem), cond
        assert sample.loc[cond, "human_mean"] == pytest.approx(mean), cond


def test_swapped_trials_are_flagged_and_left_out_of_the_accuracies(study: Study) -> None:
    trials = frame(study, "trials.csv")
    included = trials[~trials["excluded"] & (trials["phase"] == "main")]
    swapped = included[included["swapped"]]
    assert set(swapped["condition"]) <= {"tiny/conv2"}
    assert (swapped["stimulus_kind"] == "natural").all()
    assert (swapped["planned_stimulus_key"] == "src-000/tiny/conv2").all()
    assert swapped["swap_reason"].str.contains("failed validity").all()
    assert (swapped["metamer_passed"] == False).all()  # noqa: E712  (pandas column)
    acc = frame(study, "accuracy_by_layer.csv").set_index("condition")
    # Every condition had 6 planned trials among A, B, C; swaps are counted but not scored.
    assert acc.loc["tiny/conv2", "n_swapped"] == len(swapped)
    assert acc.loc["tiny/conv2", "n_trials"] == 6 - len(swapped)
    assert (acc.loc[["natural", "tiny/conv1", "tiny/fc"], "n_trials"] == 6).all()
    # A swap can happen only to whoever meets src-000 in conv2: the all-trials plan must agree.
    everything = frame(study, "trials.csv", all_trials="true")
    assert everything["swapped"].sum() == len(everything[everything["planned_stimulus_key"] == "src-000/tiny/conv2"])


def test_model_accuracy_is_measured_on_the_stimuli_the_included_participants_saw(study: Study) -> None:
    trials = frame(study, "trials.csv")
    shown = trials[~trials["excluded"] & (trials["phase"] == "main") & ~trials["swapped"]]
    acc = frame(study, "accuracy_by_layer.csv").set_index("condition")
    for cond, rows in shown.groupby("condition"):
        distinct = rows.drop_duplicates("stimulus_key")
        assert acc.loc[cond, "model_n_stimuli"] == len(distinct)
        assert acc.loc[cond, "model_accuracy"] == pytest.approx((distinct["source"] != "src-001").mean()), cond
        yoked = rows.groupby("participant")["source"].apply(lambda s: (s != "src-001").mean())
        assert acc.loc[cond, "model_yoked_mean"] == pytest.approx(yoked.mean()), cond
        assert (rows["model_correct"] == (rows["source"] != "src-001")).all()


# ------------------------------------------------------------------------------ exclusions


def test_the_exclusion_sidecar_lists_every_excluded_participant_with_all_reasons(study: Study) -> None:
    side = frame(study, "exclusions.csv")
    names = pid_of(study)
    got = {names[p]: r for p, r in zip(side["participant"], side["reasons"])}
    assert got == EXCLUDED
    assert "noisy room" in side.set_index("participant").loc[next(k for k, v in names.items() if v == "E"), "details"]


def test_participants_csv_has_one_row_per_participant_with_status_gates_and_exclusions(study: Study) -> None:
    people = frame(study, "participants.csv")
    assert len(people) == 8 and people["participant"].is_unique
    by = people.set_index("platform_pid")
    assert by.loc["D", "status"] == "screened_out" and bool(by.loc["D", "gate_passed"]) is False
    assert by.loc["H", "outcome"] == "failed_attention" and by.loc["H", "catch_correct"] == 0
    trials = frame(study, "trials.csv")
    a_swaps = int(trials[(trials["platform_pid"] == "A") & trials["swapped"]].shape[0])  # A answered swaps wrong
    assert by.loc["A", "gate_passed"] and by.loc["A", "trials_answered"] == 14 and by.loc["A", "main_correct"] == 2 + 2 + 2 + 0 - a_swaps
    assert by.loc["G", "natural_answered"] == 2 and by.loc["G", "natural_correct"] == 0
    assert by.loc["F", "status"] == "started" and math.isnan(by.loc["F", "duration_min"])
    assert by.loc["A", "browser_frame_ms"] == pytest.approx(16.7)
    assert dict(zip(by.index, by["exclusion_reasons"].fillna(""))) == {**{k: "" for k in "ABC"}, **EXCLUDED}
    assert {"headphone_passed", "headphone_antiphase_correct", "headphone_huggins_correct", "user_agent"} <= set(people.columns)


def test_trials_say_how_often_each_stimulus_was_presented(study: Study) -> None:
    trials = frame(study, "trials.csv")
    answered = trials[trials["answered"]]
    assert set(answered.loc[answered["trial_index"] == 3, "client_presentations"]) == {2}
    assert set(answered.loc[answered["trial_index"] != 3, "client_presentations"]) == {1}
    assert trials.loc[~trials["answered"], "client_presentations"].isna().all()


# ------------------------------------------------------------------------------ file formats


def test_csvs_open_in_pandas_with_the_right_dtypes(study: Study) -> None:
    trials = frame(study, "trials.csv")
    for col in ("trial_index", "block", "attempt"):
        assert pd.api.types.is_integer_dtype(trials[col]), col
    for col in ("correct", "swapped", "answered", "excluded"):
        assert pd.api.types.is_bool_dtype(trials[col]), col
    for col in ("rt_ms", "metric_spearman", "metric_snr_db", "measured_stimulus_ms", "layer_index"):
        assert pd.api.types.is_float_dtype(trials[col]), col
    for col in ("participant", "condition", "stimulus_key", "platform_pid"):
        assert pd.api.types.is_string_dtype(trials[col]) or trials[col].dtype == object, col
    # Category ids are text even when they look like numbers (this bank's are digits): read them as such.
    typed = pd.read_csv(io.BytesIO(download(study, "trials.csv")), dtype={"label": str, "answer": str})
    assert set(typed["label"]) == {"0", "1", "2", "3"}
    assert pd.to_datetime(trials["received_at"]).dt.tz is not None
    assert (trials["measured_stimulus_ms"] == 300.0).all() and (trials["rt_ms"] == 500.0).all()
    people = frame(study, "participants.csv")
    assert pd.api.types.is_bool_dtype(people["excluded"]) and pd.api.types.is_bool_dtype(people["gate_passed"])
    assert pd.api.types.is_integer_dtype(people["trials_planned"])
    acc = frame(study, "accuracy_by_layer.csv")
    assert pd.api.types.is_integer_dtype(acc["n_participants"]) and pd.api.types.is_float_dtype(acc["human_mean"])


def test_trials_csv_has_one_row_per_answered_trial_in_order(study: Study) -> None:
    trials = frame(study, "trials.csv")
    # A, B, C, E, G, H answered 14 each; D stopped after the gate (4), F after 3 main/catch trials (7).
    assert len(trials) == 6 * 14 + 4 + 7
    assert trials.groupby("participant")["trial_index"].apply(lambda s: list(s) == sorted(s)).all()
    assert not trials.duplicated(["participant", "trial_index"]).any()
    main = trials[trials["phase"] == "main"]
    assert set(main["model"].dropna()) == {"tiny"} and main["layer"].isna().sum() == (main["condition"] == "natural").sum()
    full = frame(study, "trials.csv", all_trials="true")
    assert len(full) == 8 * 14 and (~full["answered"]).sum() == 8 * 14 - len(trials)


def test_the_figure_is_a_valid_svg_and_png(study: Study) -> None:
    svg = download(study, "accuracy_by_layer.svg")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert b"Humans" in svg and b"Chance" in svg
    png = download(study, "accuracy_by_layer.png")
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width > 300 and img.height > 200
    img.verify()


def _observer_matrix(study: Study, levels: list[str]) -> tuple[list[list[float]], list[list[float]]]:
    """Human and yoked-model proportions correct per included participant, computed from
    trials.csv alone (an independent route from the database rows to the statistics' input)."""
    trials = frame(study, "trials.csv")
    main = trials[~trials["excluded"] & (trials["phase"] == "main") & ~trials["swapped"]]
    human = main.pivot_table(index="participant", columns="condition", values="correct", aggfunc="mean")
    model = main.pivot_table(index="participant", columns="condition", values="model_correct", aggfunc="mean")
    return human[levels].values.tolist(), model[levels].values.tolist()


def test_stats_csv_runs_the_paper_analysis_with_natural_as_a_level(study: Study) -> None:
    st = frame(study, "stats.csv")
    anova = st[st["analysis"] == "mixed_anova"].set_index("effect")
    assert list(anova.index) == ["observer", "layer", "observer:layer"]
    assert (anova["scheme"] == "feather2023").all() and (anova["levels"] == "natural;conv1;conv2;fc").all()
    assert (anova["n_observers"] == 3).all() and (anova["n_permutations"] == 500).all()
    # 3 participants + 3 yoked model observers, 4 levels: df (1, 4) and (3, 12).
    assert anova[["df1", "df2"]].values.tolist() == [[1, 4], [3, 12], [3, 12]]
    assert (anova["p_formula"] == "#{F* >= F} / N, floored at 1/N").all()
    assert ((anova["p_value"] * 500).round(6) % 1 == 0).all() and (anova["p_value"] >= 1 / 500).all()
    eta = anova["value"] * anova["df1"] / (anova["value"] * anova["df1"] + anova["df2"])
    assert anova["partial_eta_sq"].values == pytest.approx(eta.values)
    # The same F, df and partial eta squared from pingouin on the accuracies in trials.csv.
    human, model = _observer_matrix(study, list(EXPECTED))
    long = pd.DataFrame(
        [{"obs": f"{g}{i}", "group": g, "level": j, "acc": v} for g, m in (("h", human), ("m", model)) for i, row in enumerate(m) for j, v in enumerate(row)]
    )
    ref = pg.mixed_anova(long, dv="acc", within="level", subject="obs", between="group", correction=False, effsize="np2").set_index("Source")
    for effect, source in (("observer", "group"), ("layer", "level"), ("observer:layer", "Interaction")):
        assert anova.loc[effect, "value"] == pytest.approx(ref.loc[source, "F"], rel=1e-9), effect
        assert anova.loc[effect, "partial_eta_sq"] == pytest.approx(ref.loc[source, "np2"], rel=1e-9), effect
    paired = st[st["analysis"] == "paired_by_layer"]
    assert list(paired["effect"]) == ["natural", "conv1", "conv2", "fc"]
    assert ((paired["p_value"] > 0) & (paired["p_value"] <= 1)).all()
    (layer,) = st[st["analysis"] == "rm_anova_layer"].itertuples()
    assert (layer.effect, layer.df1, layer.df2, layer.levels) == ("layer", 3, 6, "natural;conv1;conv2;fc")
    assert layer.value == pytest.approx(pg.rm_anova(long[long["group"] == "h"], dv="acc", within="level", subject="obs", correction=False)["F"].iloc[0])
    assert "rm_anova_models" not in set(st["analysis"])  # one model: nothing to compare


def test_the_earlier_centred_scheme_is_a_named_option(study: Study) -> None:
    st = frame(study, "stats.csv", scheme="centred")
    anova = st[st["analysis"] == "mixed_anova"].set_index("effect")
    assert (anova["scheme"] == "centred").all() and (anova["levels"] == "conv1;conv2;fc").all()
    assert anova[["df1", "df2"]].values.tolist() == [[1, 4], [2, 8], [2, 8]]
    assert (anova["p_formula"] == "(1 + #{F* >= F}) / (1 + N)").all()
    assert "centred" in anova.loc["observer:layer", "permutation"]
    text = download(study, "stats.txt", scheme="centred").decode()
    assert "Scheme (human vs model): centred" in text and "natural condition was not a level" in text
    r = study.client.get("/admin/experiments/1/export", params={"file": "stats.csv", "scheme": "nonsense"})
    assert r.status_code == 422 and "feather2023" in r.text


def test_stats_txt_names_scheme_levels_permutations_seed_and_formula_and_ends_with_methods(study: Study) -> None:
    text = download(study, "stats.txt").decode()
    head, methods = text.split("Methods (generated from this analysis; adapt freely)")
    methods = " ".join(methods.split())  # the paragraph is wrapped at 100 columns
    assert "Scheme (human vs model): feather2023" in head
    assert "Permutations: 500 per test; seed: 0" in head
    assert "levels natural, conv1, conv2, fc; 3 participants + 3 yoked model observers" in head
    assert "p = #{F* >= F} / N, floored at 1/N" in head and "partial eta^2 = " in head
    assert "8 started, 3 included, 5 excluded" in head
    assert "population SD (ddof 0)" in head
    assert "Of the 8 participants who started the experiment, 5 were excluded" in methods
    assert "2 did not finish" in methods and "1 failed the gate" in methods and "1 was excluded by the researcher" in methods
    assert "fewer than 1 of the 2 gate trials" in methods and "fewer than 50% of the natural stimuli" in methods
    assert "tiny: natural, conv1, conv2, fc; n = 3 participants and 3 model observers" in methods
    assert "500 permutations (seed 0)" in methods and "shuffled across conditions, independently for each observer" in methods
    assert "between models" not in methods.lower() and "two-way" not in methods  # one model: no comparison
    assert methods.endswith("Analyses were run with Metamer Lab.")


def test_the_admin_panel_offers_the_scheme_and_the_sem_convention(study: Study) -> None:
    page = study.client.get("/admin/experiments/1").text
    assert 'name="scheme"' in page and 'value="feather2023"' in page and 'value="centred"' in page
    assert 'name="sem_ddof"' in page and "population SD (ddof 0)" in page


# ------------------------------------------------------------------------------ privacy, streaming, CLI


def test_pseudonymized_exports_hide_platform_ids_consistently(study: Study) -> None:
    trials = frame(study, "trials.csv", pseudonymize="true")
    people = frame(study, "participants.csv", pseudonymize="true")
    for original in "ABCDEFGH":
        assert original not in set(people["platform_pid"])
    assert people["platform_pid"].str.fullmatch(r"p_[0-9a-f]{16}").all()
    assert not people["session_id"].astype(str).str.startswith("sess-").any()
    # The same person has the same pseudonym in every file.
    joined = trials.merge(people[["participant", "platform_pid"]], on="participant", suffixes=("", "_p"))
    assert (joined["platform_pid"] == joined["platform_pid_p"]).all()
    assert frame(study, "trials.csv")["platform_pid"].isin(list("ABCDEFGH")).all()


def test_exports_stream_in_chunks_with_the_same_result(study: Study, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = download(study, "trials.csv")
    monkeypatch.setattr(summaries, "TRIAL_CHUNK", 2)
    monkeypatch.setattr(summaries, "PARTICIPANT_CHUNK", 3)
    monkeypatch.setattr(csv_format, "CSV_FLUSH_BYTES", 512)
    assert download(study, "trials.csv") == whole
    with study.sessions() as s:
        from app.core.schema import Experiment

        exp = s.get(Experiment, 1)
        s.expunge(exp)
    chunks = list(csv_chunks(TRIAL_COLUMNS, trial_rows(study.sessions, exp, Pseudonymizer(None))))
    assert len(chunks) > 10 and b"".join(chunks) == whole


def test_the_bundle_zip_holds_every_file(study: Study) -> None:
    zf = zipfile.ZipFile(io.BytesIO(download(study, "bundle.zip")))
    assert sorted(zf.namelist()) == sorted(FILES)
    assert zf.read("trials.csv") == download(study, "trials.csv")
    rows = list(csv.DictReader(io.StringIO(zf.read("accuracy_by_layer.csv").decode())))
    assert [r["condition"] for r in rows] == list(EXPECTED)


def test_the_cli_writes_the_same_exports(study: Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app import cli
    from app.core import commands

    monkeypatch.setattr(commands, "get_settings", lambda: study.settings)
    out = tmp_path / "results"
    assert cli.main(["export", "test-study", "--out", str(out), "--permutations", "500"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    assert (out / "accuracy_by_layer.csv").read_bytes() == download(study, "accuracy_by_layer.csv")
    assert (out / "exclusions.csv").read_bytes() == download(study, "exclusions.csv")
    assert (out / "stats.csv").read_bytes() == download(study, "stats.csv")
    assert cli.main(["export", "no-such-study", "--out", str(out)]) == 2


def test_the_cli_chooses_the_scheme_and_the_sem_convention(study: Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from app import cli
    from app.core import commands

    monkeypatch.setattr(commands, "get_settings", lambda: study.settings)
    out = tmp_path / "centred"
    args = ["export", "test-study", "--out", str(out), "--permutations", "500", "--scheme", "centred", "--sem-ddof", "1"]
    assert cli.main([*args, "--only", "stats.csv", "stats.txt", "accuracy_by_layer.csv"]) == 0
    assert (out / "stats.csv").read_bytes() == download(study, "stats.csv", scheme="centred")
    assert (out / "accuracy_by_layer.csv").read_bytes() == download(study, "accuracy_by_layer.csv", sem_ddof=1)
    assert "sample SD (ddof 1)" in (out / "stats.txt").read_text(encoding="utf-8")
    with pytest.raises(SystemExit):
        cli.main(["export", "test-study", "--out", str(out), "--scheme", "paper2019"])
    assert "invalid choice: 'paper2019'" in capsys.readouterr().err
    assert cli.main(["export", "test-study", "--out", str(out), "--permutations", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err

