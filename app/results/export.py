"""Researcher exports written to a folder: database rows → tidy CSV files, accuracy tables,
figures and statistics (``metamers export``; the admin panel streams the same files as a zip,
:mod:`app.results.bundle`).

Everything is *streamed*: participants are read in small chunks, each in its own short
transaction, and rows are yielded as CSV text as they are produced. Memory stays bounded by the
chunk size, the number of stimuli and per-participant summaries, never by the number of trials;
and no export holds a database transaction open for long (on SQLite every transaction takes the
write lock, so a long read would stall participants' saves).

Files (columns are listed in the ``*_COLUMNS`` constants and documented in docs/admin-and-exports.md):

* ``trials.csv``         one row per answered trial (optionally also unanswered planned trials)
* ``participants.csv``   one row per participant (previews never appear anywhere)
* ``screening.csv``      one row per headphone-check trial
* ``exclusions.csv``     the sidecar: every excluded participant and every reason that applies
* ``accuracy_by_layer.csv``, ``accuracy_by_layer.svg``/``.png``, ``stats.csv``, ``stats.txt``

Pseudonyms: :mod:`app.results.pseudonyms`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.core.schema import Experiment
from app.results import stats
from app.results.accuracy import accuracy_dicts, analyse, figure_bytes
from app.results.analysis import ACCURACY_COLUMNS
from app.results.csv_format import write_csv
from app.results.options import FILES, ExportOptions
from app.results.pseudonyms import pseudonymizer
from app.results.stats_report import compute_stats, stats_dicts, stats_text
from app.results.summaries import exclusions
from app.results.tables import EXCLUSION_COLUMNS, PARTICIPANT_COLUMNS, SCREENING_COLUMNS, TRIAL_COLUMNS, exclusion_rows, participant_rows, screening_rows, trial_rows


def write_export(
    factory: sessionmaker[Session],
    exp: Experiment,
    out_dir: Path,
    options: ExportOptions,
    *,
    secret_key: str,
    only: Iterable[str] | None = None,
) -> list[Path]:
    """Write the export files (all of :data:`FILES`, or those named in ``only``) into ``out_dir``."""
    wanted = set(only or FILES)
    unknown = wanted - set(FILES)
    if unknown:
        raise ValueError(f"unknown export file(s): {', '.join(sorted(unknown))}; choose from {', '.join(FILES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    pseudo = pseudonymizer(secret_key, exp, options)
    excl = exclusions(factory, exp)
    written: list[Path] = []

    def out(name: str) -> Path:
        written.append(out_dir / name)
        return out_dir / name

    if "trials.csv" in wanted:
        write_csv(out("trials.csv"), TRIAL_COLUMNS, trial_rows(factory, exp, pseudo, excl, include_unanswered=options.include_unanswered))
    if "participants.csv" in wanted:
        write_csv(out("participants.csv"), PARTICIPANT_COLUMNS, participant_rows(factory, exp, pseudo))
    if "screening.csv" in wanted:
        write_csv(out("screening.csv"), SCREENING_COLUMNS, screening_rows(factory, exp, pseudo))
    if "exclusions.csv" in wanted:
        write_csv(out("exclusions.csv"), EXCLUSION_COLUMNS, exclusion_rows(factory, exp, pseudo))
    needs_analysis = wanted & {"accuracy_by_layer.csv", "accuracy_by_layer.svg", "accuracy_by_layer.png", "stats.csv", "stats.txt"}
    if needs_analysis:
        result = analyse(factory, exp, options, excl)
        if "accuracy_by_layer.csv" in wanted:
            write_csv(out("accuracy_by_layer.csv"), ACCURACY_COLUMNS, accuracy_dicts(result))
        for fmt in ("svg", "png"):
            if f"accuracy_by_layer.{fmt}" in wanted:
                out(f"accuracy_by_layer.{fmt}").write_bytes(figure_bytes(result, exp, fmt))
        if wanted & {"stats.csv", "stats.txt"}:
            report = compute_stats(result, options)
            if "stats.csv" in wanted:
                write_csv(out("stats.csv"), stats.STATS_COLUMNS, stats_dicts(report.rows))
            if "stats.txt" in wanted:
                out("stats.txt").write_text(stats_text(result, report, options), encoding="utf-8")
    return written
