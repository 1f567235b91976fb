"""What a researcher chooses for an export, and the files an export can hold."""

from __future__ import annotations

from dataclasses import dataclass

from app.results import stats
from app.results.analysis import SEM_CONVENTIONS, SEM_DDOF

FILES = ("trials.csv", "participants.csv", "screening.csv", "exclusions.csv", "accuracy_by_layer.csv", "accuracy_by_layer.svg", "accuracy_by_layer.png", "stats.csv", "stats.txt")


@dataclass
class ExportOptions:
    pseudonymize: bool = False
    pseudonym_key: str | None = None  # None: derived from the server secret and the experiment
    include_unanswered: bool = False  # trials.csv: also planned trials nobody answered
    n_boot: int = 10_000  # bootstrap resamples per accuracy row
    n_permutations: int = stats.DEFAULT_PERMUTATIONS
    seed: int = 0  # seeds the bootstrap and the permutations
    scheme: str = stats.DEFAULT_SCHEME  # the human-vs-model analysis (stats.SCHEMES)
    sem_ddof: int = SEM_DDOF  # SEM of accuracy_by_layer.csv and the figure: 0 population SD (the paper's), 1 sample SD

    def __post_init__(self) -> None:
        if self.scheme not in stats.SCHEMES:
            raise ValueError(f"unknown statistics scheme {self.scheme!r}; choose from {', '.join(stats.SCHEMES)}")
        if self.sem_ddof not in SEM_CONVENTIONS:
            raise ValueError(f"sem_ddof must be 0 (population SD) or 1 (sample SD), not {self.sem_ddof!r}")
        if self.n_permutations < 1:
            raise ValueError("the number of permutations must be at least 1")
