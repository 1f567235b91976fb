"""The whole export as one zip archive, streamed as it is written (the admin panel's download)."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.core.schema import Experiment
from app.results import stats
from app.results.accuracy import Analysis, accuracy_dicts, analyse, figure_bytes
from app.results.analysis import ACCURACY_COLUMNS
from app.results.csv_format import csv_chunks
from app.results.options import ExportOptions
from app.results.pseudonyms import pseudonymizer
from app.results.stats_report import StatsReport, compute_stats, stats_dicts, stats_text
from app.results.summaries import Exclusions, exclusions
from app.results.tables import EXCLUSION_COLUMNS, PARTICIPANT_COLUMNS, SCREENING_COLUMNS, TRIAL_COLUMNS, exclusion_rows, participant_rows, screening_rows, trial_rows


class _ZipSink:
    """A write-only, non-seekable file object that collects what ZipFile writes, to be drained."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def write(self, b: bytes) -> int:
        self.parts.append(bytes(b))
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def seekable(self) -> bool:
        return False

    def drain(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def zip_stream(entries: Iterable[tuple[str, Callable[[], Iterable[bytes]]]]) -> Iterator[bytes]:
    """A zip archive streamed as it is written: ``entries`` are (name, chunk-iterator factory)."""
    sink = _ZipSink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:  # type: ignore[arg-type]
        for name, make in entries:
            with zf.open(name, "w", force_zip64=True) as f:
                for chunk in make():
                    f.write(chunk)
                    data = sink.drain()
                    if data:
                        yield data
            data = sink.drain()
            if data:
                yield data
    data = sink.drain()
    if data:
        yield data


def bundle_entries(
    factory: sessionmaker[Session], exp: Experiment, options: ExportOptions, *, secret_key: str
) -> list[tuple[str, Callable[[], Iterable[bytes]]]]:
    """The whole export as zip entries, each produced lazily while the archive streams."""
    pseudo = pseudonymizer(secret_key, exp, options)
    state: dict[str, Any] = {}

    def excl() -> Exclusions:
        if "excl" not in state:
            state["excl"] = exclusions(factory, exp)
        return state["excl"]  # type: ignore[no-any-return]

    def result() -> Analysis:
        if "result" not in state:
            state["result"] = analyse(factory, exp, options, excl())
        return state["result"]  # type: ignore[no-any-return]

    def report() -> StatsReport:
        if "stats" not in state:
            state["stats"] = compute_stats(result(), options)
        return state["stats"]  # type: ignore[no-any-return]

    return [
        ("trials.csv", lambda: csv_chunks(TRIAL_COLUMNS, trial_rows(factory, exp, pseudo, excl(), include_unanswered=options.include_unanswered))),
        ("participants.csv", lambda: csv_chunks(PARTICIPANT_COLUMNS, participant_rows(factory, exp, pseudo))),
        ("screening.csv", lambda: csv_chunks(SCREENING_COLUMNS, screening_rows(factory, exp, pseudo))),
        ("exclusions.csv", lambda: csv_chunks(EXCLUSION_COLUMNS, exclusion_rows(factory, exp, pseudo))),
        ("accuracy_by_layer.csv", lambda: csv_chunks(ACCURACY_COLUMNS, accuracy_dicts(result()))),
        ("accuracy_by_layer.svg", lambda: [figure_bytes(result(), exp, "svg")]),
        ("accuracy_by_layer.png", lambda: [figure_bytes(result(), exp, "png")]),
        ("stats.csv", lambda: csv_chunks(stats.STATS_COLUMNS, stats_dicts(report().rows))),
        ("stats.txt", lambda: [stats_text(result(), report(), options).encode()]),
    ]
