"""Trial planning: balance within and across participants, swaps, catch trials, order and breaks."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.experiments.design import (
    NATURAL,
    DesignInput,
    StimRef,
    assign_cells,
    cell_counts,
    period,
    plan_trials,
    source_order,
    split_blocks,
)


def make_input(
    n_sources: int,
    conditions: tuple[str, ...],
    per_participant: int | None = None,
    failed: frozenset[tuple[int, str]] = frozenset(),
    missing: frozenset[tuple[int, str]] = frozenset(),
    practice: int = 4,
    gate: int = 3,
    catch: int = 2,
    breaks: int = 3,
) -> DesignInput:
    labels = ["a", "b", "c", "d"]
    ids = iter(range(1, 10**6))
    sources = tuple(f"s{i:03d}" for i in range(n_sources))
    naturals = {s: StimRef(next(ids), s, "natural", labels[i % 4], source=s) for i, s in enumerate(sources)}
    metamers = {}
    for i, s in enumerate(sources):
        for c in conditions:
            if c == NATURAL or (i, c) in missing:
                continue
            model, layer = c.split("/")
            ok = (i, c) not in failed
            metamers[(s, c)] = StimRef(
                next(ids), f"{s}/{c}", "metamer", naturals[s].label, source=s, model=model, layer=layer,
                passed=ok, fail_reasons=() if ok else ("prediction differs",),
            )
    prac = tuple(StimRef(next(ids), f"p{i}", "practice", labels[i % 4]) for i in range(practice + gate))
    cat = tuple(StimRef(next(ids), f"c{i}", "catch", labels[i % 4]) for i in range(4))
    return DesignInput(
        sources=sources,
        conditions=conditions,
        naturals=naturals,
        metamers=metamers,
        practice=prac,
        catch=cat,
        sources_per_participant=per_participant or n_sources,
        practice_trials=practice,
        gate_trials=gate,
        catch_trials=catch,
        breaks=breaks,
    )


CONDS = (NATURAL, "m/l1", "m/l2", "m/l3")


def main_trials(plan):
    return [t for t in plan if t.phase == "main"]


@st.composite
def design_shapes(draw):
    n_conditions = draw(st.integers(1, 7))
    per = draw(st.integers(1, 12))
    blocks = draw(st.integers(1, 5))
    return blocks * per, n_conditions, per


@settings(max_examples=150, deadline=None)
@given(design_shapes(), st.integers(0, 10_000))
def test_each_slot_sees_distinct_sources_with_conditions_balanced(shape, slot):
    n_sources, n_conditions, per = shape
    cells = assign_cells(slot, n_sources, n_conditions, per)
    sources = [s for s, _ in cells]
    assert len(sources) == per == len(set(sources))
    counts = Counter(c for _, c in cells)
    assert max(counts.values()) <= math.ceil(per / n_conditions)
    assert min(counts.get(c, 0) for c in range(n_conditions)) >= per // n_conditions


@settings(max_examples=150, deadline=None)
@given(design_shapes(), st.integers(1, 3), st.integers(0, 50))
def test_latin_square_cells_are_exactly_equal_after_each_period(shape, periods, offset):
    n_sources, n_conditions, per = shape
    p = period(n_sources, n_conditions, per)
    start = offset * p  # any whole number of periods, starting anywhere on a period boundary
    counts = Counter()
    for slot in range(start, start + periods * p):
        counts.update(assign_cells(slot, n_sources, n_conditions, per))
    assert len(counts) == n_sources * n_conditions
    assert set(counts.values()) == {periods}


def test_full_plans_balance_exactly_after_two_periods_of_participants():
    inp = make_input(12, CONDS)
    plans = [plan_trials(inp, slot, seed=1000 + slot) for slot in range(2 * len(CONDS))]
    counts = cell_counts(plans)
    assert len(counts) == 12 * len(CONDS)
    assert set(counts.values()) == {2}


def test_plan_with_subset_of_sources_balances_after_its_period():
    inp = make_input(12, CONDS, per_participant=4)
    p = period(12, len(CONDS), 4)
    assert p == 12
    counts = cell_counts([plan_trials(inp, slot, seed=slot) for slot in range(p)])
    assert set(counts.values()) == {1} and len(counts) == 48


def test_failed_and_missing_metamers_are_swapped_for_the_natural_and_recorded():
    inp = make_input(8, CONDS, failed=frozenset({(0, "m/l1"), (1, "m/l2")}), missing=frozenset({(2, "m/l3")}))
    swapped = []
    for slot in range(len(CONDS)):
        for t in main_trials(plan_trials(inp, slot, seed=slot)):
            if t.swapped:
                swapped.append((t.source, t.condition, t.stimulus.kind, t.swap_reason, t.planned_stimulus))
            else:
                expected_kind = "natural" if t.condition == NATURAL else "metamer"
                assert t.stimulus.kind == expected_kind
    by_cell = {(s, c): (k, r, p) for s, c, k, r, p in swapped}
    assert set(by_cell) == {("s000", "m/l1"), ("s001", "m/l2"), ("s002", "m/l3")}
    kind, reason, planned = by_cell[("s000", "m/l1")]
    assert kind == "natural" and "prediction differs" in reason and planned.key == "s000/m/l1"
    kind, reason, planned = by_cell[("s002", "m/l3")]
    assert kind == "natural" and "no metamer" in reason and planned is None


def test_plan_order_is_practice_then_gate_then_main_with_catch():
    inp = make_input(8, CONDS, practice=3, gate=2, catch=5)
    plan = plan_trials(inp, 0, seed=7)
    phases = [t.phase for t in plan]
    assert phases[:5] == ["practice"] * 3 + ["gate"] * 2
    assert sorted(phases[5:]) == sorted(["main"] * 8 + ["catch"] * 5)
    assert [t.index for t in plan] == list(range(len(plan)))
    practice_ids = {t.stimulus.id for t in plan[:5]}
    assert len(practice_ids) == 5, "practice and gate trials show different stimuli"


def test_plan_is_deterministic_for_a_seed_and_shuffled_by_it():
    inp = make_input(16, CONDS)
    a = plan_trials(inp, 3, seed=42)
    b = plan_trials(inp, 3, seed=42)
    c = plan_trials(inp, 3, seed=43)
    assert a == b
    assert [t.stimulus.id for t in a] != [t.stimulus.id for t in c]
    assert Counter((t.source, t.condition) for t in main_trials(a)) == Counter((t.source, t.condition) for t in main_trials(c))


def test_main_sequence_is_cut_into_equal_blocks_for_breaks():
    inp = make_input(16, CONDS, catch=4, breaks=3)
    plan = plan_trials(inp, 0, seed=1)
    blocks = [t.block for t in plan if t.phase in ("main", "catch")]
    assert blocks == sorted(blocks)
    assert Counter(blocks) == {0: 5, 1: 5, 2: 5, 3: 5}


@pytest.mark.parametrize("n,breaks", [(10, 3), (3, 5), (1, 0), (400, 3)])
def test_split_blocks_never_leaves_an_empty_block(n, breaks):
    blocks = split_blocks(n, breaks)
    assert len(blocks) == n
    sizes = Counter(blocks)
    assert len(sizes) == min(breaks + 1, n)
    assert max(sizes.values()) - min(sizes.values()) <= 1


def test_source_order_is_a_fixed_permutation():
    sources = [f"s{i}" for i in range(20)]
    a = source_order(reversed(sources), 5)
    assert sorted(a) == sorted(sources)
    assert a == source_order(sources, 5)
    assert a != source_order(sources, 6)


def test_subset_size_must_divide_sources():
    with pytest.raises(ValueError, match="must divide"):
        assign_cells(0, 10, 3, 4)


def test_not_enough_practice_stimuli_is_an_error():
    inp = make_input(4, CONDS, practice=4, gate=3)
    short = DesignInput(**{**inp.__dict__, "practice": inp.practice[:5]})
    with pytest.raises(ValueError, match="practice"):
        plan_trials(short, 0, seed=0)
