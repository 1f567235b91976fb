"""The experiment specification: every setting a researcher chooses, validated in one place.

An experiment file (YAML or JSON) is parsed into :class:`ExperimentSpec`. Schema errors and the
cross-checks against the imported stimulus sets (:func:`check_against_sets`) are collected and
reported together, so a researcher fixes a file in one pass instead of one error per run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NATURAL = "natural"
SLUG_RE = r"^[a-z0-9][a-z0-9-]{1,62}[a-z0-9]$"
# Completion codes are pasted into Prolific/MTurk; keep them to characters that survive URLs.
Code = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Ms = Annotated[int, Field(ge=0, le=10_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timing(_Strict):
    """Image trial timing in ms: fixation cross, image, noise mask. Locked to display frames."""

    fixation_ms: Ms = 300
    stimulus_ms: Annotated[int, Field(ge=1, le=10_000)] = 300
    mask_ms: Ms = 300


class PracticeSpec(_Strict):
    """Practice trials come first and show feedback; they use slower timing (docs/science.md §4)."""

    trials: Annotated[int, Field(ge=0, le=200)] = 16
    feedback: bool = True
    timing: Timing = Timing(fixation_ms=500, stimulus_ms=400, mask_ms=400)


class GateSpec(_Strict):
    """Demo trials without feedback; continuing needs ``min_correct`` of ``trials`` correct."""

    trials: Annotated[int, Field(ge=0, le=200)] = 12
    min_correct: Annotated[int, Field(ge=0)] = 7

    @model_validator(mode="after")
    def _reachable(self) -> GateSpec:
        if self.min_correct > self.trials:
            raise ValueError(f"min_correct ({self.min_correct}) cannot exceed trials ({self.trials})")
        return self


class CatchSpec(_Strict):
    """Trials with obvious answers mixed into the main trials. Below ``min_correct`` the
    participant completes with the failed-attention code."""

    trials: Annotated[int, Field(ge=0, le=200)] = 16
    min_correct: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _reachable(self) -> CatchSpec:
        if self.min_correct is not None and self.min_correct > self.trials:
            raise ValueError(f"min_correct ({self.min_correct}) cannot exceed trials ({self.trials})")
        return self


class AudioSpec(_Strict):
    play_once: bool = True


class ResponseSpec(_Strict):
    """How participants answer: a grid of category buttons, or typing a vocabulary word."""

    mode: Literal["buttons", "typed"] = "buttons"
    show: Literal["labels", "icons", "both"] = "labels"
    columns: Annotated[int, Field(ge=1, le=16)] | None = None


class HeadphoneSpec(_Strict):
    """Headphone screening (docs/science.md §5). Defaults follow the published procedures."""

    check: Literal["none", "antiphase", "huggins", "both"] = "none"
    antiphase_trials: Annotated[int, Field(ge=1, le=12)] = 6
    antiphase_pass: Annotated[int, Field(ge=0)] = 5
    antiphase_retry: bool = False
    huggins_trials: Annotated[int, Field(ge=1, le=18)] = 6
    huggins_pass: Annotated[int, Field(ge=0)] = 6
    huggins_retry: bool = True
    position: Literal["before_instructions", "before_practice", "before_main"] = "before_practice"

    @model_validator(mode="after")
    def _reachable(self) -> HeadphoneSpec:
        if self.antiphase_pass > self.antiphase_trials:
            raise ValueError("antiphase_pass cannot exceed antiphase_trials")
        if self.huggins_pass > self.huggins_trials:
            raise ValueError("huggins_pass cannot exceed huggins_trials")
        return self


class CompletionCodes(_Strict):
    completed: Code | None = None
    screened_out: Code | None = None
    failed_attention: Code | None = None


class Texts(_Strict):
    """Participant-facing texts in Markdown (raw HTML is escaped, never rendered)."""

    consent: Annotated[str, Field(max_length=20_000)] = (
        "This study is part of scientific research on perception. You will see (or hear) short stimuli and "
        "say what they are. Taking part is voluntary and you may stop at any time. We record your answers, "
        "response times and basic browser information, stored without your name."
    )
    instructions: Annotated[str, Field(max_length=20_000)] = (
        "On each trial a stimulus is presented briefly. Choose the category you think it belongs to. "
        "Some stimuli are hard to recognize: give your best guess."
    )
    debrief: Annotated[str, Field(max_length=20_000)] = (
        "Thank you! Some of the stimuli you saw were *model metamers*: signals synthesized so that a layer of "
        "a neural network responds to them as it does to a natural signal. Your answers tell us whether people "
        "perceive them the way the network does."
    )


class ExclusionSpec(_Strict):
    """Exclusion rules applied by the exports (recorded in a sidecar file)."""

    incomplete: bool = True
    failed_gate: bool = True
    failed_headphone: bool = True
    failed_attention: bool = True
    min_natural_accuracy: Annotated[float, Field(ge=0, le=1)] | None = None


class Condition(_Strict):
    """A model×layer metamer condition; ``model=None`` is the natural condition."""

    model: str | None = None
    layer: str | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> Condition:
        if (self.model is None) != (self.layer is None):
            raise ValueError("a condition names both model and layer (or neither, for natural)")
        return self

    @property
    def key(self) -> str:
        return NATURAL if self.model is None else f"{self.model}/{self.layer}"

    @classmethod
    def parse(cls, value: Any) -> Condition:
        if isinstance(value, Condition):
            return value
        if isinstance(value, str):
            if value == NATURAL:
                return cls()
            if value.count("/") != 1 or not all(value.split("/")):
                raise ValueError(f"condition {value!r} must be 'natural' or 'model/layer'")
            model, layer = value.split("/")
            return cls(model=model, layer=layer)
        if isinstance(value, dict):
            return cls.model_validate(value)
        raise ValueError(f"condition {value!r} must be 'natural', 'model/layer' or {{model, layer}}")


class ExperimentSpec(_Strict):
    slug: Annotated[str, Field(pattern=SLUG_RE)]
    title: Annotated[str, Field(min_length=1, max_length=200)]
    description: Annotated[str, Field(max_length=5_000)] = ""
    stimulus_sets: Annotated[list[str], Field(min_length=1)]
    conditions: Annotated[list[Condition], Field(min_length=1)]
    # None: every source of the sets. Must divide the number of sources (exact Latin square).
    sources_per_participant: Annotated[int, Field(ge=1)] | None = None
    practice: PracticeSpec = PracticeSpec()
    gate: GateSpec = GateSpec()
    catch: CatchSpec = CatchSpec()
    breaks: Annotated[int, Field(ge=0, le=20)] = 3
    timing: Timing = Timing()
    # On-screen size of image stimuli in CSS pixels (the paper showed 224 px images).
    image_px: Annotated[int, Field(ge=32, le=1024)] = 224
    audio: AudioSpec = AudioSpec()
    response: ResponseSpec = ResponseSpec()
    headphone: HeadphoneSpec = HeadphoneSpec()
    platform: Literal["prolific", "mturk", "none"] = "none"
    completion_codes: CompletionCodes = CompletionCodes()
    max_participants: Annotated[int, Field(ge=1, le=100_000)] | None = None
    allow_repeats: bool = False
    # A participant silent this long is marked abandoned and frees their balancing slot (minutes).
    abandon_after_minutes: Annotated[int, Field(ge=5, le=7 * 24 * 60)] = 120
    estimated_minutes: Annotated[int, Field(ge=1, le=600)] | None = None
    texts: Texts = Texts()
    exclusions: ExclusionSpec = ExclusionSpec()
    # Phones and tablets cannot show frame-timed stimuli reliably; they see a clear message.
    allow_mobile: bool = False

    @field_validator("conditions", mode="before")
    @classmethod
    def _parse_conditions(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [Condition.parse(c) if isinstance(c, str) else c for c in v]
        return v

    @model_validator(mode="after")
    def _cross_fields(self) -> ExperimentSpec:
        problems = []
        keys = [c.key for c in self.conditions]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            problems.append(f"conditions are listed twice: {', '.join(dupes)}")
        if len(set(self.stimulus_sets)) != len(self.stimulus_sets):
            problems.append("stimulus_sets lists a set twice")
        codes = self.completion_codes
        if self.platform in ("prolific", "mturk") and not codes.completed:
            problems.append(f"platform {self.platform} needs completion_codes.completed")
        if self.platform == "prolific" and self.gate.trials and not codes.screened_out:
            problems.append("a Prolific study with a gate needs completion_codes.screened_out")
        if self.platform == "prolific" and self.headphone.check != "none" and not codes.screened_out:
            problems.append("a Prolific study with a headphone check needs completion_codes.screened_out")
        if self.catch.min_correct is not None and self.platform == "prolific" and not codes.failed_attention:
            problems.append("catch.min_correct on Prolific needs completion_codes.failed_attention")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def condition_keys(self) -> list[str]:
        return [c.key for c in self.conditions]


class SpecError(ValueError):
    """An experiment file has problems; ``problems`` lists all of them."""

    def __init__(self, problems: list[str], source: str = "experiment") -> None:
        self.problems = problems
        super().__init__("\n  - ".join([f"{source} has {len(problems)} problem(s):", *problems]))


def _format_errors(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        msg = re.sub(r"^Value error, ", "", msg)
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def parse_spec(data: Any, source: str = "experiment") -> ExperimentSpec:
    """Validate a decoded experiment file; raise SpecError with every schema problem."""
    if not isinstance(data, dict):
        raise SpecError(["the file must hold a mapping of settings"], source)
    try:
        return ExperimentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc), source) from exc


def load_spec_file(path: str | Path) -> ExperimentSpec:
    """Read a YAML or JSON experiment file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError([f"cannot read {p}: {exc.strerror}"], p.name) from exc
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError([f"not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: {exc}"], p.name) from exc
    return parse_spec(data, p.name)


class SetSummary(BaseModel):
    """What the cross-checks need to know about an imported stimulus set."""

    name: str
    modality: str
    categories: list[dict[str, Any]]
    sources: list[str]
    # condition key -> number of metamers (passed or not) for that model/layer
    conditions: dict[str, int]
    n_practice: int
    n_catch: int


def check_against_sets(spec: ExperimentSpec, sets: dict[str, SetSummary]) -> list[str]:
    """Problems between the spec and the stimulus sets it names (missing sets, conditions, stimuli)."""
    problems: list[str] = []
    found = [sets[name] for name in spec.stimulus_sets if name in sets]
    for name in spec.stimulus_sets:
        if name not in sets:
            known = ", ".join(sorted(sets)) or "none imported yet"
            problems.append(f"stimulus_sets: no stimulus set named {name!r} (known: {known})")
    if not found:
        return problems
    modalities = {s.modality for s in found}
    if len(modalities) > 1:
        problems.append(f"stimulus_sets mix modalities {sorted(modalities)}; use sets of one modality")
    first = found[0]
    for s in found[1:]:
        if [c["id"] for c in s.categories] != [c["id"] for c in first.categories]:
            problems.append(f"stimulus set {s.name!r} has different categories from {first.name!r}")
    available = {k for s in found for k in s.conditions}
    for key in spec.condition_keys:
        if key != NATURAL and key not in available:
            problems.append(f"conditions: {key!r} is not in the stimulus sets (available: {', '.join(sorted(available)) or 'none'})")
    n_sources = sum(len(s.sources) for s in found)
    if n_sources == 0:
        problems.append("the stimulus sets hold no natural stimuli (sources)")
    n = spec.sources_per_participant
    if n is not None and n_sources:
        if n > n_sources:
            problems.append(f"sources_per_participant is {n} but the sets hold only {n_sources} sources")
        elif n_sources % n:
            divisors = [d for d in range(1, n_sources + 1) if n_sources % d == 0]
            problems.append(
                f"sources_per_participant ({n}) must divide the number of sources ({n_sources}) so the Latin square "
                f"balances exactly; choose one of {divisors}"
            )
    n_practice = sum(s.n_practice for s in found)
    need = spec.practice.trials + spec.gate.trials
    if need > n_practice:
        problems.append(
            f"practice.trials + gate.trials = {need} but the sets hold only {n_practice} practice stimuli "
            f"(each practice or gate trial shows a different one)"
        )
    if spec.catch.trials and not sum(s.n_catch for s in found):
        problems.append("catch.trials > 0 but the sets hold no catch stimuli")
    modality = first.modality
    if spec.response.show in ("icons", "both") and spec.response.mode == "buttons":
        missing = [c["id"] for c in first.categories if not c.get("icon")]
        if missing and spec.response.show == "icons":
            problems.append(f"response.show is 'icons' but categories {missing[:5]} have no icon")
    if modality == "image" and spec.headphone.check != "none":
        problems.append("headphone checks are for audio experiments; set headphone.check to none")
    return problems
