"""Importing banks as stimulus sets, and deleting unused sets. No torch.

An import is all-or-nothing: the bank is validated completely first (``synthesis.bank``); media is
then copied into the content-addressed store and the rows are written in one transaction. If
anything fails, the transaction rolls back and every media file this import created (and nobody
else references) is removed, so a failed import leaves no rows and no orphan files.
"""

from __future__ import annotations

import hashlib
import os

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from app.core.media_store import MediaStore
from app.core.schema import ExperimentStimulusSet, Stimulus, StimulusSet
from synthesis.bank import MANIFEST, Bank, BankError, Limits, open_bank  # noqa: F401  (BankError re-exported)


class SetImportError(ValueError):
    """A bank could not be imported; the message says why. Nothing was written."""


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _stimulus_rows(bank: Bank) -> list[Stimulus]:
    rows = []
    for s in bank.manifest.stimuli:
        f = bank.files[s.file]
        info = f.info
        assert info is not None
        rows.append(
            Stimulus(
                key=s.id,
                kind=s.kind,
                source=s.source_id,
                label=s.label,
                model=s.model,
                layer=s.layer,
                layer_index=s.layer_index,
                passed=s.passed,
                fail_reasons=s.fail_reasons,
                metrics=s.metrics.model_dump() if s.metrics else None,
                media_sha256=f.sha256,
                media_ext=info.ext,
                media_bytes=f.size,
                width=info.width,
                height=info.height,
                channels=info.channels,
                sample_rate=info.sample_rate,
                frames=info.frames,
            )
        )
    return rows


def referenced_media(session: Session) -> set[tuple[str, str]]:
    """Every (sha256, ext) some stimulus row or category icon still refers to."""
    refs = {(sha, ext) for sha, ext in session.execute(sa.select(Stimulus.media_sha256, Stimulus.media_ext).distinct())}
    for (manifest,) in session.execute(sa.select(StimulusSet.manifest)):
        for c in manifest.get("categories", []):
            if c.get("icon_sha256"):
                refs.add((c["icon_sha256"], _ext(c["icon"])))
    return refs


def import_bank(
    factory: sessionmaker[Session],
    store: MediaStore,
    path: str | os.PathLike[str],
    name: str,
    *,
    imported_by: str | None = None,
    limits: Limits = Limits(),
) -> int:
    """Validate and import the bank at ``path`` as stimulus set ``name``; return its id.

    Raises BankError (invalid bank) or SetImportError (e.g. the name is taken). Nothing is written
    in either case.
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise SetImportError("a stimulus set needs a name of 1 to 200 characters")
    with factory() as session:
        if session.scalar(sa.select(StimulusSet.id).where(StimulusSet.name == name)) is not None:
            raise SetImportError(f"a stimulus set named {name!r} already exists; choose another name")
    with open_bank(path, limits) as bank:
        created: list[tuple[str, str]] = []
        try:
            for rel, f in bank.files.items():
                ext = _ext(rel)
                if ext in (".png", ".wav") and store.put_file(f.path, f.sha256, ext):
                    created.append((f.sha256, ext))
            manifest = bank.manifest
            meta = manifest.model_dump(mode="json", exclude={"stimuli"}, exclude_none=True)
            with factory() as session, session.begin():
                sset = StimulusSet(
                    name=name,
                    modality=manifest.modality,
                    bank_format=manifest.format,
                    manifest=meta,
                    manifest_sha256=hashlib.sha256((bank.root / MANIFEST).read_bytes()).hexdigest(),
                    n_stimuli=len(manifest.stimuli),
                    imported_by=imported_by,
                )
                sset.stimuli = _stimulus_rows(bank)
                session.add(sset)
                session.flush()
                set_id = sset.id
            return set_id
        except BaseException as exc:
            _remove_unreferenced(factory, store, created)
            if isinstance(exc, sa.exc.IntegrityError):
                raise SetImportError(f"a stimulus set named {name!r} already exists; choose another name") from exc
            raise


def _remove_unreferenced(factory: sessionmaker[Session], store: MediaStore, files: list[tuple[str, str]]) -> None:
    if not files:
        return
    with factory() as session:
        still = referenced_media(session)
    for sha, ext in files:
        if (sha, ext) not in still:
            store.remove(sha, ext)


def delete_set(factory: sessionmaker[Session], store: MediaStore, set_id: int) -> None:
    """Delete a stimulus set that no experiment uses, and media nothing else references."""
    with factory() as session, session.begin():
        sset = session.get(StimulusSet, set_id)
        if sset is None:
            raise SetImportError("no such stimulus set")
        users = session.scalars(
            sa.select(ExperimentStimulusSet.experiment_id).where(ExperimentStimulusSet.stimulus_set_id == set_id)
        ).all()
        if users:
            raise SetImportError(f"stimulus set {sset.name!r} is used by {len(users)} experiment(s); delete or edit them first")
        mine = {(s.media_sha256, s.media_ext) for s in sset.stimuli}
        for c in sset.manifest.get("categories", []):
            if c.get("icon_sha256"):
                mine.add((c["icon_sha256"], _ext(c["icon"])))
        session.delete(sset)
    _remove_unreferenced(factory, store, sorted(mine))

