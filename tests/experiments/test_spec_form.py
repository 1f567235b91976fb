"""The experiment form's conversions between posted values and the spec (app/experiments/spec_form.py)."""

from __future__ import annotations

from app.experiments.spec_form import bind, default_values, parse_form, spec_fields


def test_checkboxes_post_a_hidden_false_then_true_when_ticked() -> None:
    data, problems = parse_form({"allow_mobile": ["false", "true"], "allow_repeats": ["false"]})
    assert problems == []
    assert data["allow_mobile"] is True and data["allow_repeats"] is False


def test_empty_optional_numbers_mean_none_and_bad_numbers_are_reported() -> None:
    data, problems = parse_form({"max_participants": [""], "breaks": ["three"], "timing.stimulus_ms": [""], "exclusions.min_natural_accuracy": ["0.75"]})
    assert data["max_participants"] is None
    assert data["exclusions"]["min_natural_accuracy"] == 0.75
    assert "breaks: 'three' is not a whole number" in problems
    assert "timing.stimulus_ms: a value is required" in problems


def test_textarea_line_ends_are_normalized_and_empty_optional_text_is_none() -> None:
    data, _ = parse_form({"texts.consent": ["line one\r\nline two"], "completion_codes.completed": [""], "title": ["  Padded  "]})
    assert data["texts"]["consent"] == "line one\nline two"
    assert data["completion_codes"]["completed"] is None
    assert data["title"] == "Padded"


def test_section_level_problems_are_shown_next_to_the_field_they_name() -> None:
    fields = {f.name: f for f in bind(default_values(), ["gate: min_correct (5) cannot exceed trials (2)", "slug: bad"])}
    assert fields["gate.min_correct"].problems == ["gate: min_correct (5) cannot exceed trials (2)"]
    assert fields["gate.trials"].problems == []
    assert fields["slug"].problems == ["slug: bad"]


def test_choices_come_from_the_spec_literals() -> None:
    fields = {f.name: f for f in spec_fields()}
    assert fields["platform"].choices == ["prolific", "mturk", "none"]
    assert fields["headphone.check"].choices == ["none", "antiphase", "huggins", "both"]
    assert fields["image_px"].minimum == 32 and fields["image_px"].maximum == 1024
