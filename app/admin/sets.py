"""Admin: stimulus sets. Upload a bank zip (streamed to disk, size-limited, all-or-nothing import),
browse a set's gallery, delete a set no experiment uses."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.admin.auth import audit, tokens_match
from app.admin.guard import AdminContext, admin_guard, render, see_other
from app.core.runtime import Runtime, db, runtime
from app.core.schema import Experiment, ExperimentStimulusSet, Stimulus, StimulusSet
from app.stimuli.importer import SetImportError, delete_set, import_bank
from app.stimuli.uploads import UploadError, receive_upload
from synthesis.bank import BankError, Limits

router = APIRouter()

SOURCES_PER_PAGE = 20
EXTRAS_SHOWN = 48


def _sets_page(request: Request, admin: AdminContext, session: Session, *, status_code: int = 200, **extra: Any) -> HTMLResponse:
    sets = session.scalars(sa.select(StimulusSet).order_by(StimulusSet.id.desc())).all()
    users: dict[int, list[str]] = defaultdict(list)
    for set_id, slug in session.execute(
        sa.select(ExperimentStimulusSet.stimulus_set_id, Experiment.slug).join(Experiment, Experiment.id == ExperimentStimulusSet.experiment_id)
    ):
        users[set_id].append(slug)
    rt: Runtime = request.app.state.runtime
    return render(request, "admin/sets.html", admin, status_code=status_code, sets=sets, users=users, max_upload=rt.settings.max_upload_bytes, **extra)


@router.get("/sets", response_class=HTMLResponse)
def sets_page(request: Request, admin: AdminContext = Depends(admin_guard), session: Session = Depends(db)) -> Response:
    return _sets_page(request, admin, session)


@router.post("/sets/upload", response_class=HTMLResponse)
async def upload_set(request: Request, admin: AdminContext = Depends(admin_guard), rt: Runtime = Depends(runtime)) -> Response:
    """Stream the zip to a temp file (size limit), then import it; problems are shown on the page."""

    def check_csrf(fields: dict[str, str]) -> None:
        if admin.csrf_deferred and not tokens_match(admin.csrf_token, fields.get("csrf_token")):
            raise UploadError(403, "missing or wrong CSRF token; reload the page and try again")

    problems: list[str] = []
    name = ""
    status = 200
    try:
        up = await receive_upload(
            request.headers.get("content-type", ""),
            request.headers.get("content-length"),
            request.stream(),
            file_field="bank",
            limit=rt.settings.max_upload_bytes,
            tmp_dir=rt.settings.var_dir / "uploads",
            before_file=check_csrf,
        )
    except UploadError as exc:
        if exc.status == 403:
            raise HTTPException(status_code=403, detail=exc.message) from exc
        up = None
        problems = [exc.message]
        status = exc.status
    if up is not None:
        try:
            if admin.csrf_deferred and not tokens_match(admin.csrf_token, up.fields.get("csrf_token")):
                raise HTTPException(status_code=403, detail="missing or wrong CSRF token; reload the page and try again")
            name = up.fields.get("name", "").strip()
            if up.file_path is None or up.file_bytes == 0:
                problems, status = ["choose a bank zip file to upload"], 400
            else:
                if not name:
                    name = (up.filename or "").removesuffix(".zip").strip()
                path = up.file_path

                def do_import() -> int:
                    limits = Limits(max_archive_bytes=rt.settings.max_upload_bytes)
                    set_id = import_bank(rt.sessions, rt.store, path, name, imported_by=admin.username, limits=limits)
                    with rt.sessions() as s:
                        audit(s, admin.user(s), "set_upload", f"set:{set_id}", name=name, filename=up.filename, bytes=up.file_bytes)
                        s.commit()
                    return set_id

                try:
                    set_id = await run_in_threadpool(do_import)
                    return see_other(f"/admin/sets/{set_id}?done=imported")
                except BankError as exc:
                    problems, status = list(exc.problems), 422
                except SetImportError as exc:
                    problems, status = [str(exc)], 422
        finally:
            up.cleanup()

    def page() -> HTMLResponse:
        with rt.sessions() as s:
            return _sets_page(request, admin, s, status_code=status, problems=problems, upload_name=name)

    return await run_in_threadpool(page)


def _metric(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "–"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.3g}"
    return str(v)


@router.get("/sets/{set_id}", response_class=HTMLResponse)
def gallery(
    request: Request,
    set_id: int,
    page: int = 1,
    label: str | None = None,
    failed: bool = False,
    admin: AdminContext = Depends(admin_guard),
    session: Session = Depends(db),
) -> Response:
    sset = session.get(StimulusSet, set_id)
    if sset is None:
        raise HTTPException(status_code=404, detail="no such stimulus set")
    manifest = sset.manifest
    categories = manifest.get("categories", [])
    columns: list[dict[str, Any]] = []
    null = manifest.get("null", {}) or {}
    layer_stats = {
        (m, lay): (n, int(ok or 0))
        for m, lay, n, ok in session.execute(
            sa.select(Stimulus.model, Stimulus.layer, sa.func.count(), sa.func.sum(sa.case((Stimulus.passed.is_(True), 1), else_=0)))
            .where(Stimulus.set_id == set_id, Stimulus.kind == "metamer")
            .group_by(Stimulus.model, Stimulus.layer)
        )
    }
    for m in manifest.get("models", []) or []:
        for i, lay in enumerate(m.get("layers", [])):
            n, ok = layer_stats.get((m["name"], lay), (0, 0))
            columns.append({"model": m["name"], "layer": lay, "index": i, "null": (null.get(m["name"]) or {}).get(lay), "n": n, "passed": ok})
    known = {(c["model"], c["layer"]) for c in columns}
    for (m, lay), (n, ok) in sorted(layer_stats.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))):
        if (m, lay) not in known:  # metamers of a model the manifest does not list (defensive)
            columns.append({"model": m, "layer": lay, "index": None, "null": None, "n": n, "passed": ok})

    q = sa.select(Stimulus).where(Stimulus.set_id == set_id, Stimulus.kind == "natural")
    if label:
        q = q.where(Stimulus.label == label)
    if failed:
        bad = sa.select(Stimulus.source).where(Stimulus.set_id == set_id, Stimulus.kind == "metamer", Stimulus.passed.is_not(True))
        q = q.where(Stimulus.key.in_(bad))
    total = session.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
    pages = max(1, math.ceil(total / SOURCES_PER_PAGE))
    page = min(max(1, page), pages)
    naturals = session.scalars(q.order_by(Stimulus.key).offset((page - 1) * SOURCES_PER_PAGE).limit(SOURCES_PER_PAGE)).all()
    keys = [n.key for n in naturals]
    grid: dict[str, dict[tuple[str, str], Stimulus]] = defaultdict(dict)
    if keys:
        for s in session.scalars(sa.select(Stimulus).where(Stimulus.set_id == set_id, Stimulus.kind == "metamer", Stimulus.source.in_(keys))):
            grid[s.source or ""][(s.model or "", s.layer or "")] = s
    extras = {
        kind: session.scalars(sa.select(Stimulus).where(Stimulus.set_id == set_id, Stimulus.kind == kind).order_by(Stimulus.key).limit(EXTRAS_SHOWN)).all()
        for kind in ("practice", "catch")
    }
    extra_counts = dict(
        session.execute(sa.select(Stimulus.kind, sa.func.count()).where(Stimulus.set_id == set_id).group_by(Stimulus.kind)).all()
    )
    users = session.scalars(
        sa.select(Experiment.slug).join(ExperimentStimulusSet, ExperimentStimulusSet.experiment_id == Experiment.id).where(ExperimentStimulusSet.stimulus_set_id == set_id)
    ).all()
    return render(
        request,
        "admin/set.html",
        admin,
        sset=sset,
        categories=categories,
        labels={c["id"]: c.get("label", c["id"]) for c in categories},
        columns=columns,
        naturals=naturals,
        grid=grid,
        page=page,
        pages=pages,
        total=total,
        label=label or "",
        failed=failed,
        extras=extras,
        extra_counts=extra_counts,
        users=users,
        metric=_metric,
        done=request.query_params.get("done"),
    )


@router.post("/sets/{set_id}/delete", response_class=HTMLResponse)
async def delete(request: Request, set_id: int, admin: AdminContext = Depends(admin_guard), rt: Runtime = Depends(runtime)) -> Response:
    def run() -> Response:
        with rt.sessions() as s:
            sset = s.get(StimulusSet, set_id)
            if sset is None:
                raise HTTPException(status_code=404, detail="no such stimulus set")
            name = sset.name
        try:
            delete_set(rt.sessions, rt.store, set_id)
        except SetImportError as exc:
            with rt.sessions() as s:
                return _sets_page(request, admin, s, status_code=409, problems=[str(exc)])
        with rt.sessions() as s:
            audit(s, admin.user(s), "set_delete", f"set:{set_id}", name=name)
            s.commit()
        return see_other("/admin/sets?done=deleted")

    return await run_in_threadpool(run)
