"""The experiment form of the admin panel, generated from :class:`app.experiments.spec.ExperimentSpec`.

The form is derived from the pydantic model by walking its fields, so it covers *every* setting
and follows the spec when settings are added. Inputs are named by dotted paths
(``practice.timing.fixation_ms``). :func:`parse_form` turns posted values back into the nested
dict that :func:`app.experiments.spec.parse_spec` validates; conversion problems (a word in a number box)
are collected and reported together with the spec's own problems.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from app.experiments.spec import NATURAL, ExperimentSpec

Kind = Literal["bool", "int", "float", "choice", "text", "textarea", "sets", "conditions"]

TEXTAREAS = {"description", "texts.consent", "texts.instructions", "texts.debrief"}

# Sections of the form: top-level settings go to "study" unless listed here.
GROUPS = {"platform": "recruitment", "completion_codes": "recruitment", "max_participants": "recruitment", "allow_repeats": "recruitment"}
GROUP_TITLES = {
    "study": "Study",
    "practice": "Practice",
    "gate": "Gate (demo trials)",
    "catch": "Catch trials",
    "timing": "Main trial timing",
    "audio": "Audio",
    "response": "Responses",
    "headphone": "Headphone check",
    "recruitment": "Recruitment",
    "texts": "Participant texts (Markdown)",
    "exclusions": "Exclusions (applied by the exports)",
}

HELP: dict[str, str] = {
    "slug": "Lower-case letters, digits and dashes; the study URL is /e/<slug>.",
    "stimulus_sets": "The imported stimulus sets this experiment draws from (one modality).",
    "conditions": "'natural' and the model/layer metamer conditions; each source is shown in one condition per participant.",
    "sources_per_participant": "Empty: every source. Must divide the number of sources (exact Latin square).",
    "practice.trials": "Practice trials come first and may give feedback.",
    "gate.trials": "Demo trials without feedback; 0 disables the gate.",
    "gate.min_correct": "Correct gate trials needed to continue.",
    "catch.trials": "Trials with obvious answers mixed into the main trials.",
    "catch.min_correct": "Empty: no attention threshold. Below it the participant gets the failed-attention code.",
    "breaks": "Breaks in the main trials, at equal fractions.",
    "timing.fixation_ms": "Milliseconds, locked to display frames.",
    "image_px": "On-screen size of image stimuli in CSS pixels.",
    "response.columns": "Empty: automatic.",
    "headphone.check": "Headphone screening for audio experiments (docs/science.md §5).",
    "platform": "Where participants come from; decides the study URL parameters and the completion redirect.",
    "max_participants": "Empty: no cap. Caps the balancing slots.",
    "abandon_after_minutes": "Silent participants are marked abandoned after this long and free their slot.",
    "estimated_minutes": "Shown to participants.",
    "exclusions.min_natural_accuracy": "Empty: off. Proportion (0-1) of natural trials a participant must get right to be analysed.",
    "allow_mobile": "Phones and tablets cannot time stimuli reliably; off shows them a message instead.",
}


@dataclass
class FormField:
    name: str  # dotted path
    label: str
    kind: Kind
    group: str
    optional: bool = False
    choices: list[str] = field(default_factory=list)
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    help: str = ""
    value: Any = None
    problems: list[str] = field(default_factory=list)

    @property
    def input_id(self) -> str:
        return "f-" + self.name.replace(".", "-").replace("_", "-")

    @property
    def step(self) -> str:
        return "any" if self.kind == "float" else "1"

    @property
    def text_value(self) -> str:
        if self.value is None:
            return ""
        if isinstance(self.value, bool):
            return "true" if self.value else "false"
        return str(self.value)


def _constraints(meta: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in meta:
        items = m.metadata if isinstance(m, FieldInfo) else [m]
        for item in items:
            for attr in ("ge", "gt", "le", "lt", "max_length", "min_length"):
                v = getattr(item, attr, None)
                if v is not None:
                    out[attr] = v
    return out


def _unwrap(tp: Any) -> tuple[Any, bool, dict[str, Any]]:
    """(base type, optional?, constraints) of an annotation such as ``Annotated[int, Field(ge=0)] | None``."""
    optional = False
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        tp = rest[0]
    cons: dict[str, Any] = {}
    if get_origin(tp) is typing.Annotated:
        base, *meta = get_args(tp)
        cons = _constraints(meta)
        tp = base
    return tp, optional, cons


def _label(name: str) -> str:
    words = name.replace("_ms", " (ms)").replace("_px", " (px)").replace("_", " ")
    return words[:1].upper() + words[1:]


def spec_fields(model: type[BaseModel] = ExperimentSpec, prefix: str = "", group: str = "") -> list[FormField]:
    """Every leaf setting of ``model`` as a form field, in declaration order."""
    out: list[FormField] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        tp, optional, cons = _unwrap(info.annotation)
        cons = {**_constraints(info.metadata), **cons}
        grp = group or GROUPS.get(name, name)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            out += spec_fields(tp, path + ".", grp)
            continue
        if path == "stimulus_sets":
            kind: Kind = "sets"
        elif path == "conditions":
            kind = "conditions"
        elif get_origin(tp) is Literal:
            kind = "choice"
        elif tp is bool:
            kind = "bool"
        elif tp is int:
            kind = "int"
        elif tp is float:
            kind = "float"
        elif path in TEXTAREAS:
            kind = "textarea"
        else:
            kind = "text"
        out.append(
            FormField(
                name=path,
                label=_label(name),
                kind=kind,
                group=grp if (prefix or name in GROUPS) else "study",
                optional=optional,
                choices=[str(c) for c in get_args(tp)] if kind == "choice" else [],
                minimum=cons.get("ge", cons.get("gt")),
                maximum=cons.get("le", cons.get("lt")),
                max_length=cons.get("max_length"),
                help=HELP.get(path, ""),
            )
        )
    return out


def default_values(model: type[BaseModel] = ExperimentSpec) -> dict[str, Any]:
    """The spec's defaults as a nested dict (required settings without a default are absent)."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.is_required():
            tp, _, _ = _unwrap(info.annotation)
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                out[name] = default_values(tp)
            continue
        d = info.get_default(call_default_factory=True)
        out[name] = d.model_dump(mode="json") if isinstance(d, BaseModel) else d
    return out


def _get(data: Mapping[str, Any], path: str) -> Any:
    cur: Any = data
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    cur = data
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def condition_keys(values: Any) -> list[str]:
    """Condition keys of a spec's ``conditions`` (strings or {model, layer} dicts)."""
    keys = []
    for c in values or []:
        if isinstance(c, str):
            keys.append(c)
        elif isinstance(c, Mapping):
            keys.append(NATURAL if c.get("model") is None else f"{c.get('model')}/{c.get('layer')}")
    return keys


def bind(values: Mapping[str, Any], problems: Sequence[str] = ()) -> list[FormField]:
    """Form fields filled with ``values`` (a spec dict), with each problem attached to the field it
    names (``practice.trials: ...``); problems that name no field stay with the form."""
    fields = spec_fields()
    for f in fields:
        v = _get(values, f.name)
        f.value = condition_keys(v) if f.kind == "conditions" else v
    for p in problems:
        loc, _, msg = p.partition(":")
        loc = loc.strip()
        exact = [f for f in fields if loc == f.name or loc.startswith(f.name + ".")]
        if not exact:
            # A cross-field check of a section ("gate: min_correct (5) cannot exceed trials (2)"):
            # put it next to the first field of that section the message names, else the first one.
            section = [f for f in fields if f.name.startswith(loc + ".")]
            named = sorted((f for f in section if f.name.rsplit(".", 1)[-1] in msg), key=lambda f: msg.index(f.name.rsplit(".", 1)[-1]))
            exact = (named or section)[:1]
        for f in exact:
            f.problems.append(p)
    return fields


TRUE = {"true", "on", "1", "yes"}


def parse_form(form: Mapping[str, Sequence[str]]) -> tuple[dict[str, Any], list[str]]:
    """Posted values (name → list of values) → (nested spec dict, conversion problems).

    A setting that is posted empty is an error when required (or None when optional); a setting
    that is not posted at all is left out, so the spec's default applies."""
    data: dict[str, Any] = {}
    problems: list[str] = []
    for f in spec_fields():
        if f.name not in form and f.kind not in ("sets", "conditions"):
            continue  # not posted at all: the spec's default applies
        raw = list(form.get(f.name, []))
        last = raw[-1].strip() if raw else ""
        if f.kind in ("sets", "conditions"):
            _set(data, f.name, [v for v in raw if v.strip()])
        elif f.kind == "bool":
            _set(data, f.name, last.lower() in TRUE)
        elif f.kind in ("int", "float"):
            if last == "":
                if f.optional:
                    _set(data, f.name, None)
                else:
                    problems.append(f"{f.name}: a value is required")
                continue
            try:
                _set(data, f.name, int(last) if f.kind == "int" else float(last))
            except ValueError:
                problems.append(f"{f.name}: {last[:30]!r} is not a {'whole number' if f.kind == 'int' else 'number'}")
        elif f.kind == "choice":
            _set(data, f.name, last)
        else:
            value = (raw[-1] if raw else "").replace("\r\n", "\n")  # browsers post textarea lines with CRLF
            if f.kind == "text":
                value = value.strip()
            _set(data, f.name, None if (f.optional and value == "") else value)
    return data, problems


def grouped(fields: Sequence[FormField]) -> list[tuple[str, str, list[FormField]]]:
    """(group id, title, fields) in order of first appearance."""
    out: dict[str, list[FormField]] = {}
    for f in fields:
        out.setdefault(f.group, []).append(f)
    return [(g, GROUP_TITLES.get(g, g.replace("_", " ").capitalize()), fs) for g, fs in out.items()]
