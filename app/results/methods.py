"""The methods paragraph that ends stats.txt: what was done, in the style of a paper's methods
section, generated from the analysis that actually ran (so it cannot drift from the numbers).
Pure: takes plain facts, returns text. A researcher adapts it; every number in it is real."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from app.experiments.spec import ExperimentSpec
from app.results.stats import P_GE, P_GT, Scheme

# Exclusion reasons (app.results.analysis.REASONS) in words.
REASON_WORDS = {
    "incomplete": "did not finish",
    "failed_gate": "failed the gate",
    "failed_headphone": "failed the headphone check",
    "failed_attention": "failed the catch trials",
    "low_natural_accuracy": "fell below the natural-accuracy threshold",
    "researcher": "{was} excluded by the researcher",
}


# How each scheme's observer and interaction nulls are made, as prose (stats.SCHEMES).
NULL_WORDS = {
    "feather2023": (
        "the observer labels were permuted across observers, using each observer's mean over conditions",
        "the observer labels were permuted and each observer's values were shuffled across conditions, independently for each observer",
    ),
    "centred": (
        "the observer labels were permuted across observers",
        "each observer's profile was centred on its own mean and the observer labels were then permuted",
    ),
}


@dataclass(frozen=True)
class ModelAnalysis:
    """One model's human-vs-model ANOVA as it ran."""

    model: str
    levels: Sequence[str]
    n: int  # participants (and as many yoked model observers)
    n_dropped: int


@dataclass(frozen=True)
class ComparisonAnalysis:
    """One human-only between-model ANOVA as it ran."""

    models: Sequence[str]
    n_levels: int
    n: int


@dataclass
class MethodsFacts:
    modality: str  # image | audio
    n_started: int
    n_included: int
    excluded_by_reason: Mapping[str, int]  # reason -> participants with that reason
    spec: ExperimentSpec
    scheme: Scheme
    n_permutations: int
    seed: int
    sem_convention: str
    mixed: list[ModelAnalysis] = field(default_factory=list)
    layer_effect: list[ModelAnalysis] = field(default_factory=list)
    comparisons: list[ComparisonAnalysis] = field(default_factory=list)


def _join(items: Sequence[str], conj: str = "and") -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} {conj} {items[1]}"
    return ", ".join(items[:-1]) + f", {conj} {items[-1]}"


def exclusion_rules(spec: ExperimentSpec) -> list[str]:
    """The experiment's exclusion rules that can exclude someone, as verb phrases."""
    rules = spec.exclusions
    out: list[str] = []
    if rules.incomplete:
        out.append("did not finish the session")
    if rules.failed_gate and spec.gate.trials > 0:
        out.append(f"answered fewer than {spec.gate.min_correct} of the {spec.gate.trials} gate trials correctly")
    if rules.failed_headphone and spec.headphone.check != "none":
        out.append("failed the headphone check")
    if rules.failed_attention and spec.catch.trials > 0 and spec.catch.min_correct is not None:
        out.append(f"answered fewer than {spec.catch.min_correct} of the {spec.catch.trials} catch trials correctly")
    if rules.min_natural_accuracy is not None:
        out.append(f"recognized fewer than {rules.min_natural_accuracy:.0%} of the natural stimuli")
    return out


def methods_paragraph(f: MethodsFacts, width: int = 100) -> str:
    noun = "sounds" if f.modality == "audio" else "images"
    n_excl = f.n_started - f.n_included
    parts: list[str] = []

    counts = [f"{n} {REASON_WORDS.get(r, r).format(was='was' if n == 1 else 'were')}" for r, n in f.excluded_by_reason.items() if n]
    rules = exclusion_rules(f.spec)
    if n_excl:
        s = f"Of the {f.n_started} participants who started the experiment, {n_excl} were excluded before analysis"
        if counts:
            s += f" ({_join(counts)}; a participant can have more than one reason)"
        parts.append(s + f", leaving {f.n_included}.")
    else:
        parts.append(f"All {f.n_started} participants who started the experiment were included in the analysis.")
    if rules:
        parts.append(f"Participants were excluded if they {_join(rules, 'or')}; researchers' manual exclusions are listed with their reasons in exclusions.csv.")
    else:
        parts.append("No automatic exclusion rule was in force; researchers' manual exclusions are listed with their reasons in exclusions.csv.")
    parts.append(
        "For each participant we computed the proportion of main trials answered correctly in each condition; "
        f"trials in which a metamer that failed the validity criteria had been replaced by its natural {noun[:-1]} were not scored."
    )

    n = f.n_permutations
    if f.mixed:
        per_model = "; ".join(f"{m.model}: {', '.join(m.levels)}; n = {m.n} participants and {m.n} model observers" for m in f.mixed)
        level_words = "the natural condition and metamers from each of the model's layers, in depth order" if f.scheme.natural else "metamers from each of the model's layers, in depth order (the natural condition was not a level)"
        parts.append(
            "For each model we built a yoked model observer for every participant: the model's own accuracy (its predicted class equal to the true label) "
            "on exactly the stimuli that participant saw in each condition. "
            "Human and model recognition were compared with a mixed-design (split-plot) ANOVA on proportion correct, with observer (human or model) "
            f"as a between-observer factor and condition as a within-observer factor, the conditions being {level_words} ({per_model})."
        )
        dropped = sum(m.n_dropped for m in f.mixed)
        if dropped:
            parts.append(f"Participants without a value in every condition were left out of that model's analysis ({dropped} in all).")
        observer, interaction = NULL_WORDS[f.scheme.name]
        parts.append(
            f"F statistics were not corrected for sphericity; p-values were computed from {n:,} permutations (seed {f.seed}) instead of the F distribution: "
            f"for the main effect of observer, {observer}; for the observer x condition interaction, {interaction}. "
            f"The p-value is {f.scheme.p_rule.words.format(n=f'{n:,}')}."
        )
        parts.append(
            "At each condition, human and model accuracy were also compared with a paired sign-flip permutation test of the mean difference "
            "(two-sided), with Holm's correction across the conditions of a model."
        )
    if f.layer_effect:
        ns = ", ".join(f"{m.model}: n = {m.n}" for m in f.layer_effect)
        parts.append(
            "The effect of the metamer generation layer on human recognition was tested for each model with a one-way repeated-measures ANOVA "
            f"over the conditions ({ns}), with p from shuffling the conditions within each participant; "
            f"p is {P_GE.words.format(n=f'{n:,}')}."
        )
    if f.comparisons:
        which = "; ".join(f"{_join(list(c.models))} ({c.n_levels} conditions, n = {c.n})" for c in f.comparisons)
        parts.append(
            "Human recognition of the metamers of models with the same number of layers was compared with a two-way repeated-measures ANOVA "
            f"(condition x model; the natural condition was the same for every model): {which}. "
            "The main effect of model was tested by permuting the model labels within each participant after averaging over conditions, "
            "and the condition x model interaction by shuffling all condition x model cells within each participant; "
            f"p is {P_GT.words.format(n=f'{n:,}')}."
        )
    if f.mixed or f.layer_effect or f.comparisons:
        parts.append("Effect sizes are partial eta squared, F·df1 / (F·df1 + df2).")
    parts.append(f"Error bars show the standard error of the mean across participants ({f.sem_convention}). Analyses were run with Metamer Lab.")
    return textwrap.fill(" ".join(parts), width=width, break_on_hyphens=False)
