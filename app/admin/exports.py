"""Admin: download  CSVs and the zip bundle stream as they are produced (each chunk of
participants in its own short transaction); figures and statistics are computed from one streamed
pass over the trials. Every download is written to the audit log."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.admin.auth import audit
from app.admin.guard import AdminContext, admin_guard
from app.core.runtime import Runtime, runtime
from app.core.schema import Experiment
from app.results import stats
from app.results.accuracy import accuracy_dicts, analyse, figure_bytes
from app.results.analysis import ACCURACY_COLUMNS, SEM_DDOF
from app.results.bundle import bundle_entries, zip_stream
from app.results.csv_format import csv_chunks
from app.results.options import FILES, ExportOptions
from app.results.pseudonyms import pseudonymizer
from app.results.stats_report import compute_stats, stats_dicts, stats_text
from app.results.tables import EXCLUSION_COLUMNS, PARTICIPANT_COLUMNS, SCREENING_COLUMNS, TRIAL_COLUMNS, exclusion_rows, participant_rows, screening_rows, trial_rows

router = APIRouter()

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "svg": "image/svg+xml", "png": "image/png", "txt": "text/plain; charset=utf-8", "zip": "application/zip"}


@router.get("/experiments/{exp_id}/export")
async def export(
    request: Request,
    exp_id: int,
    file: str = Query(..., description="one of app.results.options.FILES, or bundle.zip"),
    pseudonymize: bool = False,
    all_trials: bool = False,
    permutations: int = Query(stats.DEFAULT_PERMUTATIONS, ge=100, le=100_000),
    seed: int = Query(0, ge=0, le=2**31),
    scheme: str = Query(stats.DEFAULT_SCHEME, description="human-vs-model statistics: one of app.results.stats.SCHEMES"),
    sem_ddof: int = Query(SEM_DDOF, ge=0, le=1, description="SEM: 0 population SD (the paper's), 1 sample SD"),
    admin: AdminContext = Depends(admin_guard),
    rt: Runtime = Depends(runtime),
) -> Response:
    if file not in FILES and file != "bundle.zip":
        raise HTTPException(status_code=404, detail=f"unknown export {file!r}")
    if scheme not in stats.SCHEMES:
        raise HTTPException(status_code=422, detail=f"unknown statistics scheme {scheme!r}; choose from {', '.join(stats.SCHEMES)}")
    options = ExportOptions(pseudonymize=pseudonymize, include_unanswered=all_trials, n_permutations=permutations, seed=seed, scheme=scheme, sem_ddof=sem_ddof)

    def load(record: bool) -> Experiment:
        with rt.sessions() as s:
            exp = s.get(Experiment, exp_id)
            if exp is None:
                raise HTTPException(status_code=404, detail="no such experiment")
            if record:  # downloads are audited; the figure shown on the experiment page is not
                audit(s, admin.user(s), "export", f"experiment:{exp.id}", file=file, pseudonymize=pseudonymize, all_trials=all_trials, scheme=scheme, sem_ddof=sem_ddof)
                s.commit()
            s.expunge(exp)
            return exp

    inline = file in ("accuracy_by_layer.svg", "accuracy_by_layer.png") and bool(request.query_params.get("inline"))
    exp = await run_in_threadpool(load, not inline)
    ext = file.rsplit(".", 1)[-1]
    headers = {"Content-Disposition": f'attachment; filename="{exp.slug}-{file}"', "Cache-Control": "no-store"}
    pseudo = pseudonymizer(rt.secret_key, exp, options)
    f = rt.sessions
    streams: dict[str, Iterator[bytes]] = {}
    if file == "trials.csv":
        streams[file] = csv_chunks(TRIAL_COLUMNS, trial_rows(f, exp, pseudo, include_unanswered=all_trials))
    elif file == "participants.csv":
        streams[file] = csv_chunks(PARTICIPANT_COLUMNS, participant_rows(f, exp, pseudo))
    elif file == "screening.csv":
        streams[file] = csv_chunks(SCREENING_COLUMNS, screening_rows(f, exp, pseudo))
    elif file == "exclusions.csv":
        streams[file] = csv_chunks(EXCLUSION_COLUMNS, exclusion_rows(f, exp, pseudo))
    elif file == "bundle.zip":
        streams[file] = zip_stream(bundle_entries(f, exp, options, secret_key=rt.secret_key))
    if file in streams:
        # Starlette iterates a sync generator in a worker thread, chunk by chunk.
        return StreamingResponse(streams[file], media_type=MEDIA_TYPES[ext], headers=headers)

    def compute() -> bytes:
        figure = file in ("accuracy_by_layer.svg", "accuracy_by_layer.png")
        result = analyse(f, exp, ExportOptions(**{**options.__dict__, "n_boot": 0}) if figure else options)
        if file == "accuracy_by_layer.csv":
            return b"".join(csv_chunks(ACCURACY_COLUMNS, accuracy_dicts(result)))
        if file in ("accuracy_by_layer.svg", "accuracy_by_layer.png"):
            return figure_bytes(result, exp, ext)
        report = compute_stats(result, options)
        if file == "stats.csv":
            return b"".join(csv_chunks(stats.STATS_COLUMNS, stats_dicts(report.rows)))
        return stats_text(result, report, options).encode()

    body = await run_in_threadpool(compute)
    if inline:
        headers["Content-Disposition"] = f'inline; filename="{exp.slug}-{file}"'
    return Response(body, media_type=MEDIA_TYPES[ext], headers=headers)
