"""The bank reader accepts well-formed banks and rejects every kind of bad bank with a clear message."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from synthesis.bank import BankError, Limits, open_bank, read_manifest, zip_bank
from synthesis.media import decode_png, decode_wav, encode_png, encode_wav
from tests.factories import make_bank


def _edit_manifest(root: Path, edit) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _problems(path: Path, limits: Limits = Limits()) -> list[str]:
    with pytest.raises(BankError) as info:
        with open_bank(path, limits):
            pass
    return info.value.problems


def test_written_bank_reads_back_with_every_file_checked(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b", failed={(1, "conv2")})
    with open_bank(root) as bank:
        m = bank.manifest
        assert m.modality == "image"
        naturals = [s for s in m.stimuli if s.kind == "natural"]
        metamers = [s for s in m.stimuli if s.kind == "metamer"]
        assert len(naturals) == 8 and len(metamers) == 24
        failed = [s for s in metamers if not s.passed]
        assert [(s.source, s.layer) for s in failed] == [("src-001", "conv2")]
        assert all(bank.files[s.file].info.kind == "image" for s in m.stimuli)
        assert set(bank.files) >= {c.icon for c in m.categories}


def test_zip_of_bank_reads_the_same_and_cleans_up(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")
    z = zip_bank(root, tmp_path / "b.zip")
    with open_bank(z) as bank:
        extracted = bank.root
        assert len(bank.manifest.stimuli) == len(read_manifest(root).stimuli)
        assert extracted.exists()
    assert not extracted.exists()


def test_zip_with_a_top_folder_is_accepted(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "mybank")
    z = tmp_path / "nested.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in root.rglob("*"):
            if p.is_file():
                zf.write(p, f"mybank/{p.relative_to(root)}")
    with open_bank(z) as bank:
        assert bank.manifest.name == "test-bank"


def test_missing_file_is_reported(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")
    (root / "natural" / "src-000.png").unlink()
    assert any("natural/src-000.png: file is missing" in p for p in _problems(root))


def test_hash_mismatch_is_reported(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")
    (root / "natural" / "src-001.png").write_bytes(encode_png([[0.0, 1.0], [1.0, 0.0]]))
    assert any("natural/src-001.png: sha256 mismatch" in p for p in _problems(root))


@pytest.mark.parametrize("bad", ["../outside.png", "/etc/passwd.png", "a/../../x.png", "C:/x.png", "a\\b.png"])
def test_paths_escaping_the_bank_are_rejected(tmp_path: Path, bad: str) -> None:
    root = make_bank(tmp_path / "b")
    _edit_manifest(root, lambda d: d["stimuli"][0].update(file=bad))
    assert any("escapes the bank folder" in p for p in _problems(root))


def test_symlinked_file_is_rejected(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")
    target = root / "natural" / "src-000.png"
    outside = tmp_path / "secret.png"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    target.symlink_to(outside)
    assert any("symbolic links" in p for p in _problems(root))


def test_unknown_field_is_rejected_by_name(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")
    _edit_manifest(root, lambda d: d["stimuli"][0].update(colour="blue"))
    assert "stimuli.0.colour: unknown field" in _problems(root)


def test_every_malformed_field_is_reported_at_once(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")

    def edit(d):
        d["modality"] = "video"
        d["stimuli"][0]["sha256"] = "xyz"
        d["stimuli"][1]["layer_index"] = "deep"

    _edit_manifest(root, edit)
    problems = _problems(root)
    assert any(p.startswith("modality:") for p in problems)
    assert any(p.startswith("stimuli.0.sha256:") for p in problems)
    assert any(p.startswith("stimuli.1.layer_index:") for p in problems)


def test_dangling_references_are_reported(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")

    def edit(d):
        metamer = next(s for s in d["stimuli"] if s["kind"] == "metamer")
        metamer["layer"] = "conv9"
        d["stimuli"][0]["label"] = "not-a-category"

    _edit_manifest(root, edit)
    problems = _problems(root)
    assert any("has no layer 'conv9' (layers: conv1, conv2, fc)" in p for p in problems)
    assert any("label 'not-a-category' is not a category id" in p for p in problems)


def test_invalid_json_is_reported(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")
    (root / "manifest.json").write_text("{not json")
    assert any("not valid JSON" in p for p in _problems(root))


def test_media_that_is_not_what_it_claims_is_rejected(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")
    fake = b"GIF89a" + b"\x00" * 100
    path = root / "natural" / "src-002.png"
    path.write_bytes(fake)
    import hashlib

    _edit_manifest(root, lambda d: next(s for s in d["stimuli"] if s["id"] == "src-002").update(sha256=hashlib.sha256(fake).hexdigest()))
    assert any("src-002.png: not a PNG file" in p for p in _problems(root))


def test_truncated_png_is_rejected(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")
    path = root / "natural" / "src-003.png"
    data = path.read_bytes()[:-30]
    path.write_bytes(data)
    import hashlib

    _edit_manifest(root, lambda d: next(s for s in d["stimuli"] if s["id"] == "src-003").update(sha256=hashlib.sha256(data).hexdigest()))
    assert any("src-003.png: corrupt PNG" in p for p in _problems(root))


def test_truncated_wav_is_rejected(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b", modality="audio")
    path = root / "natural" / "src-000.wav"
    data = path.read_bytes()[:-1000]
    path.write_bytes(data)
    import hashlib

    _edit_manifest(root, lambda d: d["stimuli"][0].update(sha256=hashlib.sha256(data).hexdigest()))
    assert any("src-000.wav" in p and "WAV" in p for p in _problems(root))


def test_oversized_archive_is_rejected_before_extraction(tmp_path: Path) -> None:
    z = zip_bank(make_bank(tmp_path / "b"), tmp_path / "b.zip")
    problems = _problems(z, Limits(max_archive_bytes=1000))
    assert problems and "over the 1000-byte limit" in problems[0]


def test_zip_bomb_is_rejected(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")
    z = tmp_path / "bomb.zip"
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(root / "manifest.json", "manifest.json")
        zf.writestr("natural/huge.png", b"\x00" * (50 * 1024 * 1024))
    problems = _problems(z)
    assert any("zip bomb" in p for p in problems)


def test_zip_entries_escaping_the_folder_are_rejected(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")
    z = tmp_path / "slip.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(root / "manifest.json", "manifest.json")
        zf.writestr("../../evil.png", b"x")
    assert any("escapes the bank folder" in p for p in _problems(z))
    assert not (tmp_path.parent / "evil.png").exists()


def test_zip_symlink_entries_are_rejected(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(root / "manifest.json", "manifest.json")
        info = zipfile.ZipInfo("natural/src-000.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    assert any("symbolic links" in p for p in _problems(z))


def test_not_a_zip_is_reported(tmp_path: Path) -> None:
    bogus = tmp_path / "bank.zip"
    bogus.write_bytes(b"this is not a zip")
    assert any("not a readable zip" in p for p in _problems(bogus))


def test_metamer_without_its_metrics_is_rejected(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b")

    def edit(d):
        metamer = next(s for s in d["stimuli"] if s["kind"] == "metamer")
        del metamer["metrics"]

    _edit_manifest(root, edit)
    assert any("metamer is missing metrics" in p for p in _problems(root))


def test_png_roundtrip_is_8_bit_quantized() -> None:
    img = [[0.0, 0.5], [0.25, 1.0]]
    out = decode_png(encode_png(img))
    assert out.shape == (2, 2)
    assert abs(out[0, 1] - 128 / 255) < 1e-6


def test_wav_roundtrip_clips_and_keeps_rate() -> None:
    wave, sr = decode_wav(encode_wav([0.0, 0.5, 2.0, -3.0], 16000))
    assert sr == 16000
    assert wave[2] == pytest.approx(1.0) and wave[3] == pytest.approx(-1.0)
    assert wave[1] == pytest.approx(0.5, abs=1e-4)


def test_audio_bank_with_mixed_sample_rates_is_rejected(tmp_path: Path) -> None:
    root = make_bank(tmp_path / "b", modality="audio")
    import hashlib

    data = encode_wav([0.1] * 500, 16000)
    (root / "natural" / "src-000.wav").write_bytes(data)
    _edit_manifest(root, lambda d: d["stimuli"][0].update(sha256=hashlib.sha256(data).hexdigest()))
    assert any("several sample rates" in p for p in _problems(root))
    assert os.path.exists(root / "manifest.json")
