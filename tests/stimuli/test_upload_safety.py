"""Hostile bank archives, imported the way the admin upload imports them: every one is refused,
and none leaves a row, a media file, or a file anywhere outside the upload's own temp space.

tests/stimuli/test_bank.py checks the reader's verdict on each kind of bad archive; these tests add the
import (database + media store), archive tricks the reader tests do not cover (absolute and
backslash paths, lying size headers, media of one type named as another, HTML disguised as an
image) and the upload endpoint's handling of a hostile file name.
"""

from __future__ import annotations

import hashlib
import io
import json
import stat
import struct
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.core.db import make_engine, make_sessionmaker
from app.core.media_store import MediaStore
from app.core.schema import Stimulus, StimulusSet
from app.core.settings import Settings
from app.stimuli.importer import import_bank
from synthesis.bank import BankError
from tests.factories import _wave, make_bank

HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


def _bank_zip(tmp: Path, mutate: Callable[[dict, Path, zipfile.ZipFile], None]) -> Path:
    """Zip a good bank, letting ``mutate`` change the manifest and add or replace entries."""
    root = make_bank(tmp / "src")
    manifest = json.loads((root / "manifest.json").read_text())
    out = tmp / "bank.zip"
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        replaced = set()

        class Z:
            def writestr(self, name, data, **kw):  # type: ignore[no-untyped-def]
                replaced.add(name if isinstance(name, str) else name.filename)
                zf.writestr(name, data, **kw)

        mutate(manifest, root, Z())  # type: ignore[arg-type]
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and rel != "manifest.json" and rel not in replaced:
                zf.write(f, rel)
        zf.writestr("manifest.json", json.dumps(manifest))
    return out


def _replace_media(manifest: dict, zf, rel: str, data: bytes) -> None:  # type: ignore[no-untyped-def]
    """Swap a stimulus file for ``data``, with a matching hash (so only its content is wrong)."""
    for s in manifest["stimuli"]:
        if s["file"] == rel:
            s["sha256"] = hashlib.sha256(data).hexdigest()
    zf.writestr(rel, data)


def _first_png(manifest: dict) -> str:
    return next(s["file"] for s in manifest["stimuli"] if s["file"].endswith(".png"))


SENTINEL = f"metamers-escape-{uuid.uuid4().hex[:8]}"

HOSTILE: dict[str, Callable[[dict, Path, zipfile.ZipFile], None]] = {
    "zip-slip ../": lambda m, r, z: z.writestr(f"../../{SENTINEL}.png", b"x"),
    "absolute path": lambda m, r, z: z.writestr(f"/tmp/{SENTINEL}.png", b"x"),
    "windows path": lambda m, r, z: z.writestr(f"..\\..\\{SENTINEL}.png", b"x"),
    "symlink entry": lambda m, r, z: z.writestr(_symlink("natural/link.png"), "/etc/passwd"),
    "zip bomb": lambda m, r, z: z.writestr("natural/huge.png", b"\0" * (40 * 1024 * 1024)),
    "html named .png": lambda m, r, z: _replace_media(m, z, _first_png(m), HTML),
    "wav named .png": lambda m, r, z: _replace_media(m, z, _first_png(m), _wave(1)),
    "png with html appended": lambda m, r, z: _replace_media(m, z, _first_png(m), (r / _first_png(m)).read_bytes() + HTML),
}


def _symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.fixture
def env(settings: Settings):  # type: ignore[no-untyped-def]
    engine = make_engine(settings)
    yield make_sessionmaker(engine), MediaStore(settings.media_dir)
    engine.dispose()


def _nothing_written(sessions, store: MediaStore, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(StimulusSet)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(Stimulus)) == 0
    assert not store.root.exists() or not [p for p in store.root.rglob("*") if p.is_file()]
    for where in (tmp_path, tmp_path.parent, tmp_path.parent.parent, Path("/tmp")):
        assert not list(where.glob(f"{SENTINEL}*")), where


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_hostile_archive_is_refused_and_writes_nothing(kind: str, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sessions, store = env
    archive = _bank_zip(tmp_path, HOSTILE[kind])
    with pytest.raises(BankError) as info:
        import_bank(sessions, store, archive, "hostile")
    assert info.value.problems
    _nothing_written(sessions, store, tmp_path)


def test_a_size_header_that_lies_cannot_make_extraction_write_more(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A bomb whose headers claim 1 kB: extraction stops at the claimed size, the bank is refused."""
    sessions, store = env
    archive = _bank_zip(tmp_path, lambda m, r, z: _replace_media(m, z, _first_png(m), b"\0" * (20 * 1024 * 1024)))
    data = bytearray(archive.read_bytes())
    # Rewrite the uncompressed size of every entry whose real size is 20 MiB, in the local
    # headers (PK\3\4, offset 22) and the central directory (PK\1\2, offset 24).
    big = struct.pack("<I", 20 * 1024 * 1024)
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = data.find(sig)
        while pos >= 0:
            if data[pos + off : pos + off + 4] == big:
                data[pos + off : pos + off + 4] = struct.pack("<I", 1024)
            pos = data.find(sig, pos + 4)
    archive.write_bytes(bytes(data))
    with pytest.raises((BankError, zipfile.BadZipFile)):
        import_bank(sessions, store, archive, "liar")
    _nothing_written(sessions, store, tmp_path)


def test_the_upload_endpoint_ignores_a_hostile_file_name(settings: Settings, tmp_path: Path) -> None:
    from tests.admin_client import fast_login
    from tests.study import build_study

    study = build_study(settings, tmp_path)
    csrf = fast_login(study)
    archive = _bank_zip(tmp_path, HOSTILE["zip-slip ../"])
    evil_name = f"../../../../{SENTINEL}.zip"
    r = study.client.post(
        "/admin/sets/upload",
        data={"csrf_token": csrf, "name": "up"},
        files={"bank": (evil_name, io.BytesIO(archive.read_bytes()), "application/zip")},
        follow_redirects=False,
    )
    assert r.status_code == 422
    assert "escapes the bank folder" in r.text
    uploads = settings.var_dir / "uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []
    for where in (settings.var_dir, tmp_path, tmp_path.parent, Path("/tmp")):
        assert not list(where.rglob(f"{SENTINEL}*")) if where != Path("/tmp") else not list(where.glob(f"{SENTINEL}*"))
    with study.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(StimulusSet)) == 1  # only the study's own bank
