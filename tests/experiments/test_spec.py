"""Experiment files are validated completely: every problem is reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.experiments.spec import Condition, SetSummary, SpecError, check_against_sets, load_spec_file, parse_spec

GOOD = {
    "slug": "digits-demo",
    "title": "Digits",
    "stimulus_sets": ["digits"],
    "conditions": ["natural", "net/conv1", {"model": "net", "layer": "fc"}],
}


def summary(**kw) -> SetSummary:  # type: ignore[no-untyped-def]
    base = dict(
        name="digits",
        modality="image",
        categories=[{"id": str(i), "label": str(i)} for i in range(10)],
        sources=[f"s{i}" for i in range(40)],
        conditions={"net/conv1": 40, "net/fc": 40},
        n_practice=30,
        n_catch=10,
    )
    base.update(kw)
    return SetSummary(**base)


def test_defaults_follow_the_paper() -> None:
    spec = parse_spec(GOOD)
    assert (spec.timing.fixation_ms, spec.timing.stimulus_ms, spec.timing.mask_ms) == (300, 300, 300)
    assert (spec.practice.timing.fixation_ms, spec.practice.timing.stimulus_ms, spec.practice.timing.mask_ms) == (500, 400, 400)
    assert (spec.practice.trials, spec.gate.trials, spec.gate.min_correct, spec.catch.trials, spec.breaks) == (16, 12, 7, 16, 3)
    assert spec.condition_keys == ["natural", "net/conv1", "net/fc"]
    assert spec.audio.play_once is True and spec.allow_repeats is False


def test_every_schema_problem_is_reported_together() -> None:
    bad = {
        **GOOD,
        "slug": "Bad Slug!",
        "timing": {"stimulus_ms": 0},
        "gate": {"trials": 5, "min_correct": 9},
        "platform": "facebook",
        "colour": "red",
    }
    with pytest.raises(SpecError) as info:
        parse_spec(bad)
    text = "\n".join(info.value.problems)
    assert "slug:" in text
    assert "timing.stimulus_ms:" in text
    assert "min_correct (9) cannot exceed trials (5)" in text
    assert "platform:" in text
    assert "colour: unknown setting" in text
    assert len(info.value.problems) >= 5


def test_platform_codes_are_required() -> None:
    with pytest.raises(SpecError, match="needs completion_codes.completed"):
        parse_spec({**GOOD, "platform": "prolific"})


def test_conditions_parse_from_strings_and_mappings() -> None:
    assert Condition.parse("natural").key == "natural"
    assert Condition.parse("m/l").key == "m/l"
    assert Condition.parse({"model": "m", "layer": "l"}).key == "m/l"
    with pytest.raises(ValueError):
        Condition.parse("a/b/c")
    with pytest.raises(SpecError, match="listed twice"):
        parse_spec({**GOOD, "conditions": ["natural", "natural"]})


def test_cross_checks_against_sets_report_everything() -> None:
    spec = parse_spec({**GOOD, "stimulus_sets": ["digits", "nope"], "conditions": ["natural", "net/conv9"], "sources_per_participant": 7, "practice": {"trials": 30}})
    problems = check_against_sets(spec, {"digits": summary()})
    text = "\n".join(problems)
    assert "no stimulus set named 'nope'" in text
    assert "'net/conv9' is not in the stimulus sets" in text
    assert "must divide the number of sources (40)" in text and "[1, 2, 4, 5, 8, 10, 20, 40]" in text
    assert "practice.trials + gate.trials = 42" in text


def test_a_valid_spec_has_no_cross_check_problems() -> None:
    spec = parse_spec({**GOOD, "sources_per_participant": 20})
    assert check_against_sets(spec, {"digits": summary()}) == []


def test_headphone_checks_are_only_for_audio() -> None:
    spec = parse_spec({**GOOD, "headphone": {"check": "antiphase"}})
    assert any("audio experiments" in p for p in check_against_sets(spec, {"digits": summary()}))


def test_yaml_and_json_files_load(tmp_path: Path) -> None:
    y = tmp_path / "e.yaml"
    y.write_text("slug: a-b-c\ntitle: T\nstimulus_sets: [s]\nconditions: [natural]\n")
    assert load_spec_file(y).slug == "a-b-c"
    j = tmp_path / "e.json"
    j.write_text('{"slug": "a-b-c", "title": "T", "stimulus_sets": ["s"], "conditions": ["natural"]')
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec_file(j)


def test_cli_experiment_create_lists_all_problems(tmp_path: Path, capsys) -> None:
    from app import cli

    f = tmp_path / "bad.yaml"
    f.write_text("slug: X\ntitle: ''\nstimulus_sets: []\nconditions: [natural]\nbreaks: -1\n")
    assert cli.main(["experiment", "create", str(f)]) == 2
    err = capsys.readouterr().err
    for field in ("slug:", "title:", "stimulus_sets:", "breaks:"):
        assert field in err
