"""The export documentation names every column the exports write (so the two cannot drift)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.results import analysis, stats, tables

DOC = Path(__file__).resolve().parents[2] / "docs" / "admin-and-exports.md"


@pytest.mark.parametrize(
    "columns",
    [tables.TRIAL_COLUMNS, tables.PARTICIPANT_COLUMNS, tables.SCREENING_COLUMNS, tables.EXCLUSION_COLUMNS, analysis.ACCURACY_COLUMNS, stats.STATS_COLUMNS],
    ids=["trials", "participants", "screening", "exclusions", "accuracy", "stats"],
)
def test_every_export_column_is_documented(columns: list[str]) -> None:
    text = DOC.read_text()
    missing = [c for c in columns if c not in text]
    assert missing == []
