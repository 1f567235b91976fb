"""Importing banks into the database is all-or-nothing: no rows and no orphan files on failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.core.db import make_engine, make_sessionmaker
from app.core.media_store import MediaStore
from app.core.schema import Stimulus, StimulusSet
from app.core.settings import Settings
from app.experiments.service import create_experiment
from app.experiments.spec import parse_spec
from app.stimuli.importer import SetImportError, delete_set, import_bank
from synthesis.bank import BankError, zip_bank
from tests.factories import make_bank


@pytest.fixture
def env(settings: Settings):  # type: ignore[no-untyped-def]
    engine = make_engine(settings)
    yield make_sessionmaker(engine), MediaStore(settings.media_dir)
    engine.dispose()


def media_files(store: MediaStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file()) if store.root.exists() else []


def n_rows(sessions) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        return s.scalar(sa.select(sa.func.count()).select_from(StimulusSet)), s.scalar(sa.select(sa.func.count()).select_from(Stimulus))


def test_import_stores_rows_and_content_addressed_media(env, tmp_path: Path) -> None:
    sessions, store = env
    bank = make_bank(tmp_path / "b")
    set_id = import_bank(sessions, store, zip_bank(bank, tmp_path / "b.zip"), "first")
    with sessions() as s:
        sset = s.get(StimulusSet, set_id)
        assert sset.modality == "image" and sset.n_stimuli == len(sset.stimuli) == 40  # 8 natural + 24 metamers + 4 practice + 4 catch
        for st in sset.stimuli:
            path = store.path_for(st.media_sha256, st.media_ext)
            assert path.is_file() and path.name == f"{st.media_sha256}.png"
        assert all(c["icon_sha256"] for c in sset.manifest["categories"])
        assert "stimuli" not in sset.manifest
    assert len(media_files(store)) == 44  # 40 stimuli + 4 icons, all distinct content


def test_invalid_bank_writes_nothing(env, tmp_path: Path) -> None:
    sessions, store = env
    bank = make_bank(tmp_path / "b")
    (bank / "natural" / "src-003.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(BankError, match="sha256 mismatch"):
        import_bank(sessions, store, bank, "bad")
    assert n_rows(sessions) == (0, 0)
    assert media_files(store) == []


def test_duplicate_name_is_refused_before_anything_is_written(env, tmp_path: Path) -> None:
    sessions, store = env
    import_bank(sessions, store, make_bank(tmp_path / "a"), "same")
    before = media_files(store)
    other = make_bank(tmp_path / "b", labels=["x", "y"], name="other")
    with pytest.raises(SetImportError, match="already exists"):
        import_bank(sessions, store, other, "same")
    assert n_rows(sessions)[0] == 1
    assert media_files(store) == before


def test_database_failure_midway_removes_the_new_files(env, tmp_path: Path, monkeypatch) -> None:
    sessions, store = env
    import app.stimuli.importer as banks

    def boom(bank):  # type: ignore[no-untyped-def]
        raise RuntimeError("database went away")

    monkeypatch.setattr(banks, "_stimulus_rows", boom)
    with pytest.raises(RuntimeError):
        import_bank(sessions, store, make_bank(tmp_path / "b"), "x")
    assert n_rows(sessions) == (0, 0)
    assert media_files(store) == []


def test_shared_media_survives_a_failed_import_of_the_same_files(env, tmp_path: Path, monkeypatch) -> None:
    sessions, store = env
    bank = make_bank(tmp_path / "b")
    import_bank(sessions, store, bank, "kept")
    before = media_files(store)
    import app.stimuli.importer as banks

    monkeypatch.setattr(banks, "_stimulus_rows", lambda b: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        import_bank(sessions, store, bank, "again")
    assert media_files(store) == before


def test_a_set_in_use_cannot_be_deleted_and_an_unused_one_is_removed_with_its_media(env, tmp_path: Path) -> None:
    sessions, store = env
    used = import_bank(sessions, store, make_bank(tmp_path / "a"), "used")
    unused = import_bank(sessions, store, make_bank(tmp_path / "b", labels=["x", "y"], name="b", seed=1000), "unused")
    spec = parse_spec({"slug": "exp-one", "title": "t", "stimulus_sets": ["used"], "conditions": ["natural"], "practice": {"trials": 2}, "gate": {"trials": 2, "min_correct": 1}})
    with sessions() as s:
        create_experiment(s, spec)
        s.commit()
    with pytest.raises(SetImportError, match="used by 1 experiment"):
        delete_set(sessions, store, used)
    n_before = len(media_files(store))
    delete_set(sessions, store, unused)
    with sessions() as s:
        assert s.get(StimulusSet, unused) is None and s.get(StimulusSet, used) is not None
        assert s.scalar(sa.select(sa.func.count()).select_from(Stimulus).where(Stimulus.set_id == unused)) == 0
    assert len(media_files(store)) < n_before
    with sessions() as s:
        for st in s.scalars(sa.select(Stimulus)):
            assert store.exists(st.media_sha256, st.media_ext)


def test_cli_import_reports_problems_and_exit_code(settings: Settings, tmp_path: Path, monkeypatch, capsys) -> None:
    from app import cli
    from app.core.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MEDIA_ROOT", str(settings.media_dir))
    monkeypatch.setenv("SECRET_KEY", "k")
    get_settings.cache_clear()
    bank = make_bank(tmp_path / "b")
    manifest = json.loads((bank / "manifest.json").read_text())
    manifest["stimuli"][0]["file"] = "../escape.png"
    (bank / "manifest.json").write_text(json.dumps(manifest))
    try:
        assert cli.main(["bank", "import", str(bank), "--name", "x"]) == 2
        err = capsys.readouterr().err
        assert "escapes the bank folder" in err
        ok = make_bank(tmp_path / "c")
        assert cli.main(["bank", "import", str(ok), "--name", "good"]) == 0
        assert "imported" in capsys.readouterr().out
    finally:
        get_settings.cache_clear()
