"""Admin: download exports. CSVs and the zip bundle stream as they are produced (each chunk of
participants in its own short transaction); figures and statistics are computed from one streamed
pass over the trials. Every download is written to the audit log."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app import exports, stats
from app.auth import audit
from app.deps import Runtime, runtime
from app.models import Experiment
from app.routes.admin_base import AdminContext, admin_guard

router = APIRouter()

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "svg": "image/svg+xml", "png": "image/png", "txt": "text/plain; charset=utf-8", "zip": "application/zip"}


@router.get("/experiments/{exp_id}/export")
async def export(
    request: Request,
    exp_id: int,
    file: str = Query(..., description="one of exports.FILES, or bundle.zip"),
    pseudonymize: bool = False,
    all_trials: bool = False,
    permutations: int = Query(stats.DEFAULT_PERMUTATIONS, ge=100, le=100_000),
    seed: int = Query(0, ge=0, le=2**31),
    admin: AdminContext = Depends(admin_guard),
    rt: Runtime = Depends(runtime),
) -> Response:
    if file not in exports.FILES and file != "bundle.zip":
        raise HTTPException(status_code=404, detail=f"unknown export {file!r}")
    options = exports.ExportOptions(pseudonymize=pseudonymize, include_unanswered=all_trials, n_permutations=permutations, seed=seed)

    def load(record: bool) -> Experiment:
        with rt.sessions() as s:
            exp = s.get(Experiment, exp_id)
            if exp is None:
                raise HTTPException(status_code=404, detail="no such experiment")
            if record:  # downloads are audited; the figure shown on the experiment page is not
                audit(s, admin.user(s), "export", f"experiment:{exp.id}", file=file, pseudonymize=pseudonymize, all_trials=all_trials)
                s.commit()
            s.expunge(exp)
            return exp

    inline = file in ("accuracy_by_layer.svg", "accuracy_by_layer.png") and bool(request.query_params.get("inline"))
    exp = await run_in_threadpool(load, not inline)
    ext = file.rsplit(".", 1)[-1]
    headers = {"Content-Disposition": f'attachment; filename="{exp.slug}-{file}"', "Cache-Control": "no-store"}
    pseudo = exports.pseudonymizer(rt.secret_key, exp, options)
    f = rt.sessions
    streams: dict[str, Iterator[bytes]] = {}
    if file == "trials.csv":
        streams[file] = exports.csv_chunks(exports.TRIAL_COLUMNS, exports.trial_rows(f, exp, pseudo, include_unanswered=all_trials))
    elif file == "participants.csv":
        streams[file] = exports.csv_chunks(exports.PARTICIPANT_COLUMNS, exports.participant_rows(f, exp, pseudo))
    elif file == "screening.csv":
        streams[file] = exports.csv_chunks(exports.SCREENING_COLUMNS, exports.screening_rows(f, exp, pseudo))
    elif file == "exclusions.csv":
        streams[file] = exports.csv_chunks(exports.EXCLUSION_COLUMNS, exports.exclusion_rows(f, exp, pseudo))
    elif file == "bundle.zip":
        streams[file] = exports.zip_stream(exports.bundle_entries(f, exp, options, secret_key=rt.secret_key))
    if file in streams:
        # Starlette iterates a sync generator in a worker thread, chunk by chunk.
        return StreamingResponse(streams[file], media_type=MEDIA_TYPES[ext], headers=headers)

    def compute() -> bytes:
        figure = file in ("accuracy_by_layer.svg", "accuracy_by_layer.png")
        result = exports.analyse(f, exp, exports.ExportOptions(**{**options.__dict__, "n_boot": 0}) if figure else options)
        if file == "accuracy_by_layer.csv":
            return b"".join(exports.csv_chunks(exports.ACCURACY_COLUMNS, exports.accuracy_dicts(result)))
        if file in ("accuracy_by_layer.svg", "accuracy_by_layer.png"):
            return exports.figure_bytes(result, exp, ext)
        rows = exports.stats_rows(result, options)
        if file == "stats.csv":
            return b"".join(exports.csv_chunks(stats.STATS_COLUMNS, exports.stats_dicts(rows)))
        return exports.stats_text(result, rows, options).encode()

    body = await run_in_threadpool(compute)
    if inline:
        headers["Content-Disposition"] = f'inline; filename="{exp.slug}-{file}"'
    return Response(body, media_type=MEDIA_TYPES[ext], headers=headers)
