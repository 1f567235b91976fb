"""Trial planning: which stimulus each participant sees, in which order. Pure functions, no DB.

The design follows Feather et al. (docs/science.md §4) and improves its balancing:

* every participant sees each of their sources exactly once, each source in one condition;
* within a participant the conditions are balanced (each gets floor or ceil of n / C trials);
* across participants a Latin-square rotation makes every (source, condition) cell appear equally
  often: after every ``period(S, C, n)`` participants the cell counts are exactly equal (the paper
  assigned conditions at random per participant);
* a failed or missing metamer is swapped for its natural stimulus and the swap is recorded;
* catch trials are mixed in, the order is shuffled with the participant's stored seed, and the main
  sequence is cut into ``breaks + 1`` blocks.

A participant's row of the Latin square is their *slot*. Slots are handed out by the participant
service so that only participants who count occupy one (see ``app/participation/arrival.py``).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

NATURAL = "natural"


@dataclass(frozen=True)
class StimRef:
    """The facts about a stored stimulus that planning needs. ``id`` is the database id."""

    id: int
    key: str
    kind: str
    label: str
    source: str | None = None
    model: str | None = None
    layer: str | None = None
    layer_index: int | None = None
    passed: bool | None = None
    fail_reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class DesignInput:
    """Everything fixed per experiment. ``sources`` are source keys in a fixed, experiment-level
    order (already shuffled by the experiment's design seed)."""

    sources: tuple[str, ...]
    conditions: tuple[str, ...]
    naturals: dict[str, StimRef]
    metamers: dict[tuple[str, str], StimRef]
    practice: tuple[StimRef, ...]
    catch: tuple[StimRef, ...]
    sources_per_participant: int
    practice_trials: int
    gate_trials: int
    catch_trials: int
    breaks: int


@dataclass(frozen=True)
class PlannedTrial:
    index: int
    phase: str  # practice | gate | main | catch
    block: int
    stimulus: StimRef
    label: str
    condition: str | None = None
    source: str | None = None
    swapped: bool = False
    swap_reason: str | None = None
    planned_stimulus: StimRef | None = None


def blocks_of(n_sources: int, per_participant: int) -> int:
    """How many disjoint source blocks the sources split into."""
    if per_participant <= 0 or n_sources % per_participant:
        raise ValueError(f"sources_per_participant ({per_participant}) must divide the number of sources ({n_sources})")
    return n_sources // per_participant


def period(n_sources: int, n_conditions: int, per_participant: int) -> int:
    """Participants after which every (source, condition) cell has appeared equally often."""
    return blocks_of(n_sources, per_participant) * n_conditions


def assign_cells(slot: int, n_sources: int, n_conditions: int, per_participant: int) -> list[tuple[int, int]]:
    """The (source position, condition index) pairs of the Latin-square row ``slot``.

    Sources are split into B = S / n consecutive blocks. Slot k takes block ``k mod B`` and
    rotation ``r = (k div B) mod C``; the j-th source of the block gets condition ``(j + r) mod C``.
    Hence within a slot conditions cycle (balanced within one trial), and over B·C consecutive
    slots each source meets every condition exactly once.
    """
    if slot < 0:
        raise ValueError("slot must be >= 0")
    b = blocks_of(n_sources, per_participant)
    block = slot % b
    rotation = (slot // b) % n_conditions
    start = block * per_participant
    return [(start + j, (j + rotation) % n_conditions) for j in range(per_participant)]


def source_order(sources: Sequence[str], design_seed: int) -> tuple[str, ...]:
    """The experiment-level order of sources: sorted, then shuffled by the design seed so each block
    mixes categories. Fixed for the experiment's lifetime."""
    ordered = sorted(sources)
    random.Random(design_seed).shuffle(ordered)
    return tuple(ordered)


def _swap_reason(metamer: StimRef | None) -> str:
    if metamer is None:
        return "no metamer for this source and condition in the stimulus set"
    reasons = "; ".join(metamer.fail_reasons) or "failed the validity criteria"
    return f"metamer failed validity: {reasons}"


def main_stimulus(inp: DesignInput, source: str, condition: str) -> tuple[StimRef, bool, str | None, StimRef | None]:
    """The stimulus shown for a (source, condition) cell: the metamer if it passed, else the natural."""
    natural = inp.naturals[source]
    if condition == NATURAL:
        return natural, False, None, None
    metamer = inp.metamers.get((source, condition))
    if metamer is not None and metamer.passed:
        return metamer, False, None, None
    return natural, True, _swap_reason(metamer), metamer


def split_blocks(n_items: int, breaks: int) -> list[int]:
    """Block number of each of ``n_items`` positions, with ``breaks`` breaks at equal fractions."""
    n_blocks = max(1, min(breaks + 1, n_items))
    return [min(i * n_blocks // max(n_items, 1), n_blocks - 1) for i in range(n_items)]


def plan_trials(inp: DesignInput, slot: int, seed: int) -> list[PlannedTrial]:
    """Plan one participant's complete trial list: practice, gate, then shuffled main + catch."""
    rng = random.Random(seed)
    trials: list[PlannedTrial] = []

    pool = list(inp.practice)
    rng.shuffle(pool)
    need = inp.practice_trials + inp.gate_trials
    if need > len(pool):
        raise ValueError(f"{need} practice and gate trials need as many practice stimuli; {len(pool)} exist")
    for phase, items in (("practice", pool[: inp.practice_trials]), ("gate", pool[inp.practice_trials : need])):
        for stim in items:
            trials.append(PlannedTrial(index=len(trials), phase=phase, block=0, stimulus=stim, label=stim.label))

    main: list[PlannedTrial] = []
    cells = assign_cells(slot, len(inp.sources), len(inp.conditions), inp.sources_per_participant)
    for pos, ci in cells:
        source = inp.sources[pos]
        condition = inp.conditions[ci]
        stim, swapped, reason, planned = main_stimulus(inp, source, condition)
        main.append(
            PlannedTrial(
                index=-1,
                phase="main",
                block=0,
                stimulus=stim,
                label=inp.naturals[source].label,
                condition=condition,
                source=source,
                swapped=swapped,
                swap_reason=reason,
                planned_stimulus=planned,
            )
        )
    if inp.catch_trials:
        if not inp.catch:
            raise ValueError("catch trials requested but there are no catch stimuli")
        catch_pool = list(inp.catch)
        rng.shuffle(catch_pool)
        for i in range(inp.catch_trials):
            stim = catch_pool[i % len(catch_pool)]
            main.append(PlannedTrial(index=-1, phase="catch", block=0, stimulus=stim, label=stim.label))
    rng.shuffle(main)
    blocks = split_blocks(len(main), inp.breaks)
    for t, block in zip(main, blocks):
        trials.append(
            PlannedTrial(
                index=len(trials),
                phase=t.phase,
                block=block,
                stimulus=t.stimulus,
                label=t.label,
                condition=t.condition,
                source=t.source,
                swapped=t.swapped,
                swap_reason=t.swap_reason,
                planned_stimulus=t.planned_stimulus,
            )
        )
    return trials


def cell_counts(plans: Sequence[Sequence[PlannedTrial]]) -> Counter[tuple[str, str]]:
    """How often each (source, condition) cell was planned, over many participants' plans."""
    counts: Counter[tuple[str, str]] = Counter()
    for plan in plans:
        for t in plan:
            if t.phase == "main" and t.source is not None and t.condition is not None:
                counts[(t.source, t.condition)] += 1
    return counts


def max_per_condition(n_sources: int, n_conditions: int) -> int:
    """The ceil rule (docs/science.md §4): no condition gets more than ceil(n / C) trials."""
    return math.ceil(n_sources / n_conditions)
