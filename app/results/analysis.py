"""Accuracy by condition, as in Feather et al. (2023; docs/science.md §7). Pure functions: no web, no DB.

The unit of analysis is the *participant*: each participant's proportion correct per condition is
computed first, and the table reports the mean of those proportions across participants, the SEM
across participants, and a percentile bootstrap 95% CI that resamples participants (seeded, so an
export is reproducible). The SEM is SD / sqrt(n) with the population SD (ddof 0) by default, as
in the paper's figures; ``sem_ddof=1`` gives the sample SD instead (the column ``sem_ddof`` of
accuracy_by_layer.csv says which was used).

Decisions (documented in ``docs/admin-and-exports.md``):

* Only main-phase trials count (practice, gate and catch trials are not conditions).
* A *swapped* trial (its metamer failed the validity criteria, so the natural stimulus was shown)
  is left out of every accuracy: the participant did not see a metamer, and counting it in the
  natural condition would unbalance the design. Swaps are reported per row (``n_swapped``).
* The model's accuracy is measured on the same stimuli the included participants saw in that
  condition: for metamers ``pred_metamer == label``, for natural stimuli ``pred_natural == label``
  (of that model). ``model_accuracy`` averages over the distinct stimuli shown; the *yoked model
  observers* (one per participant: the model's accuracy on exactly that participant's stimuli)
  give ``model_yoked_mean``/``model_yoked_sem``, which are what the figure and the statistics use.
* Chance is 1 / number of response categories.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from app.experiments.spec import NATURAL, ExclusionSpec

# Exclusion reasons, in the order they are reported.
REASONS = ("incomplete", "failed_gate", "failed_headphone", "failed_attention", "low_natural_accuracy", "researcher")


# ------------------------------------------------------------------------------ summaries


SEM_DDOF = 0  # the paper's convention: population SD over sqrt(n)
SEM_CONVENTIONS = {0: "population SD (ddof 0) / sqrt(n)", 1: "sample SD (ddof 1) / sqrt(n)"}


def sem(values: Sequence[float], ddof: int = SEM_DDOF) -> float:
    """Standard error of the mean: SD (with ``ddof``) / sqrt(n). NaN for fewer than two values
    (one participant says nothing about the spread)."""
    if ddof not in SEM_CONVENTIONS:
        raise ValueError(f"sem ddof must be 0 or 1, not {ddof!r}")
    n = len(values)
    if n < 2:
        return math.nan
    return float(np.std(np.asarray(values, dtype=float), ddof=ddof) / math.sqrt(n))


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean, resampling ``values`` with replacement.

    Deterministic for a given (values, n_boot, seed). Returns (nan, nan) for no values; a single
    value (or identical values) gives a zero-width interval.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // max(x.size, 1))  # bound memory: at most ~2M draws at a time
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        means[start:stop] = x[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def row_seed(seed: int, *parts: str) -> int:
    """A per-row seed derived from the export seed and the row's identity, so a row's bootstrap
    does not depend on which other rows are in the table."""
    return (seed * 1_000_003 + zlib.crc32("|".join(parts).encode())) % (2**63)


# ------------------------------------------------------------------------------ exclusions


@dataclass(frozen=True)
class ParticipantFacts:
    """What the exclusion rules look at, for one participant."""

    participant: str
    status: str
    outcome: str | None = None
    gate_trials: int = 0  # gate trials in the spec
    gate_min_correct: int = 0
    gate_answered: int = 0
    gate_correct: int = 0
    headphone_passed: bool | None = None
    researcher_excluded: bool = False
    researcher_reason: str | None = None
    natural_trials: int = 0  # answered main trials in the natural condition (not swapped)
    natural_correct: int = 0


def failed_gate(f: ParticipantFacts) -> bool:
    return f.gate_trials > 0 and f.gate_answered >= f.gate_trials and f.gate_correct < f.gate_min_correct


def exclusion_reasons(f: ParticipantFacts, rules: ExclusionSpec) -> list[tuple[str, str]]:
    """Every (reason, detail) that excludes this participant under ``rules``; empty if included.

    A researcher's manual exclusion always applies. ``min_natural_accuracy`` needs at least one
    natural trial to judge; without any, it does not exclude (the participant is normally
    excluded as incomplete anyway).
    """
    out: list[tuple[str, str]] = []
    if rules.incomplete and f.status != "completed":
        out.append(("incomplete", f"status {f.status}"))
    if rules.failed_gate and failed_gate(f):
        out.append(("failed_gate", f"{f.gate_correct}/{f.gate_trials} correct, needed {f.gate_min_correct}"))
    if rules.failed_headphone and f.headphone_passed is False:
        out.append(("failed_headphone", "failed the headphone check"))
    if rules.failed_attention and f.outcome == "failed_attention":
        out.append(("failed_attention", "too few catch trials correct"))
    thr = rules.min_natural_accuracy
    if thr is not None and f.natural_trials > 0 and f.natural_correct / f.natural_trials < thr:
        out.append(("low_natural_accuracy", f"{f.natural_correct}/{f.natural_trials} natural correct, below {thr:g}"))
    if f.researcher_excluded:
        out.append(("researcher", f.researcher_reason or "excluded by the researcher"))
    return out


# ------------------------------------------------------------------------------ tallies


@dataclass
class Cell:
    """One participant in one condition: answered, correct and swapped trial counts, and the
    yoked model observers' correct counts per model (on the same, non-swapped, stimuli)."""

    n: int = 0
    correct: int = 0
    swapped: int = 0
    model_n: dict[str, int] = field(default_factory=dict)
    model_correct: dict[str, int] = field(default_factory=dict)


class AccuracyTally:
    """Streams answered main trials into per-(participant, condition) cells.

    Memory is O(participants × conditions + distinct stimuli), never O(trials).
    """

    def __init__(self, included: set[str] | None = None) -> None:
        """``included``: the participants whose stimuli define the model's accuracy (None: all).
        Cells are kept for everybody; tables pick the included ones."""
        self.included = included
        self.cells: dict[tuple[str, str], Cell] = {}
        # (condition, model) -> stimulus id -> model correct on that stimulus (included participants)
        self.stimuli: dict[tuple[str, str], dict[int, bool]] = {}

    def add(
        self,
        participant: str,
        condition: str,
        correct: bool,
        *,
        swapped: bool = False,
        stimulus_id: int | None = None,
        model_correct: Mapping[str, bool | None] | None = None,
    ) -> None:
        """Add one answered main trial. ``model_correct`` maps model name to whether that model
        classifies this stimulus correctly (None or absent: unknown)."""
        cell = self.cells.setdefault((participant, condition), Cell())
        if swapped:
            cell.swapped += 1
            return
        cell.n += 1
        cell.correct += int(bool(correct))
        for model, ok in (model_correct or {}).items():
            if ok is None:
                continue
            cell.model_n[model] = cell.model_n.get(model, 0) + 1
            cell.model_correct[model] = cell.model_correct.get(model, 0) + int(bool(ok))
            if stimulus_id is not None and (self.included is None or participant in self.included):
                self.stimuli.setdefault((condition, model), {})[stimulus_id] = bool(ok)

    def participants(self) -> set[str]:
        return {p for p, _ in self.cells}

    def model_on_stimuli(self, condition: str, model: str) -> tuple[int, float]:
        """(number of distinct stimuli, model accuracy over them) in a condition, over the stimuli
        the included participants saw (not swapped)."""
        vals = list(self.stimuli.get((condition, model), {}).values())
        return (len(vals), float(np.mean(vals)) if vals else math.nan)


# ------------------------------------------------------------------------------ table


@dataclass(frozen=True)
class Level:
    """One point on a model's x axis: the natural condition or one of its layers."""

    model: str
    layer: str  # "natural" for the natural condition
    layer_index: int | None
    condition: str


def layout(conditions: Sequence[str], model_layers: Mapping[str, Sequence[str]]) -> list[Level]:
    """The rows of the accuracy table: per model (in order of first appearance), natural first
    (if it is a condition), then the model's layers in depth order (``model_layers``, from the
    bank manifest). Without metamer conditions, one natural row with an empty model."""
    models: list[str] = []
    for c in conditions:
        if c != NATURAL:
            m = c.split("/", 1)[0]
            if m not in models:
                models.append(m)
    has_natural = NATURAL in conditions
    levels: list[Level] = []
    if not models and has_natural:
        return [Level("", NATURAL, None, NATURAL)]
    for m in models:
        if has_natural:
            levels.append(Level(m, NATURAL, None, NATURAL))
        order = list(model_layers.get(m, []))
        mine = [c.split("/", 1)[1] for c in conditions if c != NATURAL and c.split("/", 1)[0] == m]
        mine.sort(key=lambda lay: (order.index(lay) if lay in order else len(order), lay))
        for lay in mine:
            levels.append(Level(m, lay, order.index(lay) if lay in order else None, f"{m}/{lay}"))
    return levels


@dataclass(frozen=True)
class AccuracyRow:
    experiment: str
    model: str
    layer: str
    layer_index: int | None
    condition: str
    n_participants: int
    n_trials: int
    n_swapped: int
    human_mean: float
    human_sem: float
    human_ci_low: float
    human_ci_high: float
    model_accuracy: float
    model_n_stimuli: int
    model_yoked_mean: float
    model_yoked_sem: float
    chance: float
    n_categories: int
    sem_ddof: int  # the SEM convention of human_sem and model_yoked_sem (0: population SD, 1: sample SD)


ACCURACY_COLUMNS = list(AccuracyRow.__dataclass_fields__)


def per_participant(tally: AccuracyTally, condition: str, included: set[str], model: str | None = None) -> dict[str, float]:
    """Proportion correct per included participant in ``condition`` (human, or the yoked
    observer of ``model``); participants without a counted trial there are absent."""
    out: dict[str, float] = {}
    for (p, c), cell in tally.cells.items():
        if c != condition or p not in included:
            continue
        if model is None:
            if cell.n:
                out[p] = cell.correct / cell.n
        elif cell.model_n.get(model):
            out[p] = cell.model_correct[model] / cell.model_n[model]
    return out


def accuracy_table(
    tally: AccuracyTally,
    levels: Iterable[Level],
    included: set[str],
    *,
    experiment: str,
    n_categories: int,
    n_boot: int = 10_000,
    seed: int = 0,
    sem_ddof: int = SEM_DDOF,
) -> list[AccuracyRow]:
    rows: list[AccuracyRow] = []
    for lv in levels:
        human = per_participant(tally, lv.condition, included)
        vals = [human[p] for p in sorted(human)]
        cells = [cell for (p, c), cell in tally.cells.items() if c == lv.condition and p in included]
        n_stim, model_acc = tally.model_on_stimuli(lv.condition, lv.model) if lv.model else (0, math.nan)
        yoked = per_participant(tally, lv.condition, included, lv.model) if lv.model else {}
        yvals = [yoked[p] for p in sorted(yoked)]
        # n_boot = 0 skips the bootstrap (the figure does not draw CIs).
        lo, hi = bootstrap_ci(vals, n_boot=n_boot, seed=row_seed(seed, lv.condition)) if vals and n_boot > 0 else (math.nan, math.nan)
        rows.append(
            AccuracyRow(
                experiment=experiment,
                model=lv.model,
                layer=lv.layer,
                layer_index=lv.layer_index,
                condition=lv.condition,
                n_participants=len(vals),
                n_trials=sum(c.n for c in cells),
                n_swapped=sum(c.swapped for c in cells),
                human_mean=float(np.mean(vals)) if vals else math.nan,
                human_sem=sem(vals, sem_ddof),
                human_ci_low=lo,
                human_ci_high=hi,
                model_accuracy=model_acc,
                model_n_stimuli=n_stim,
                model_yoked_mean=float(np.mean(yvals)) if yvals else math.nan,
                model_yoked_sem=sem(yvals, sem_ddof),
                chance=1.0 / n_categories if n_categories else math.nan,
                n_categories=n_categories,
                sem_ddof=sem_ddof,
            )
        )
    return rows


def _complete(columns: Sequence[Mapping[str, float]]) -> tuple[list[str], list[str]]:
    """(participants with a value in every column, participants with a value in some column)."""
    if not columns:
        return [], []
    keys = [set(c) for c in columns]
    return sorted(set.intersection(*keys)), sorted(set.union(*keys))


def paired_matrix(tally: AccuracyTally, levels: Sequence[Level], included: set[str], model: str) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """Human and yoked-model accuracies at ``levels`` (of ``model``) for the participants who have
    both values at every level: (participants, human[n, L], model[n, L], number of participants
    left out for lacking some value). Used by the human-vs-model statistics."""
    human = [per_participant(tally, lv.condition, included) for lv in levels]
    yoked = [per_participant(tally, lv.condition, included, model) for lv in levels]
    people, anyone = _complete(human + yoked)
    h = np.array([[hm[p] for hm in human] for p in people], dtype=float).reshape(len(people), len(levels))
    m = np.array([[ym[p] for ym in yoked] for p in people], dtype=float).reshape(len(people), len(levels))
    return people, h, m, len(anyone) - len(people)


def human_matrix(tally: AccuracyTally, conditions: Sequence[Sequence[str]], included: set[str]) -> tuple[list[str], np.ndarray, int]:
    """Human accuracies for the human-only statistics: ``conditions`` is a table of condition
    keys (rows: levels; columns: models; the natural condition may repeat across a row). Returns
    (participants with a value in every condition, array[n, levels, models], participants left out
    for lacking some value)."""
    needed = sorted({c for row in conditions for c in row})
    by_condition = {c: per_participant(tally, c, included) for c in needed}
    people, anyone = _complete([by_condition[c] for c in needed])
    n_lev = len(conditions)
    n_mod = len(conditions[0]) if conditions else 0
    y = np.array([[[by_condition[c][p] for c in row] for row in conditions] for p in people], dtype=float).reshape(len(people), n_lev, n_mod)
    return people, y, len(anyone) - len(people)
