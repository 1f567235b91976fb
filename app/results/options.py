"""What a researcher chooses for an export, and the files an export can hold."""

from __future__ import annotations

from dataclasses import dataclass

from app.results import stats

FILES = ("trials.csv", "participants.csv", "screening.csv", "exclusions.csv", "accuracy_by_layer.csv", "accuracy_by_layer.svg", "accuracy_by_layer.png", "stats.csv", "stats.txt")


@dataclass
class ExportOptions:
    pseudonymize: bool = False
    pseudonym_key: str | None = None  # None: derived from the server secret and the experiment
    include_unanswered: bool = False  # trials.csv: also planned trials nobody answered
    n_boot: int = 10_000  # bootstrap resamples per accuracy row
    n_permutations: int = stats.DEFAULT_PERMUTATIONS
    seed: int = 0  # seeds the bootstrap and the permutations
