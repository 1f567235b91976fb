"""Stimulus media: immutable caching, conditional and range requests, and a per-process memory
cache that never outlives the file it caches."""

from __future__ import annotations

import sqlalchemy as sa

from app.core.media_store import MediaStore
from app.core.schema import Stimulus
from tests.study import Study, build_study


def _media(study: Study) -> tuple[str, bytes]:
    with study.sessions() as s:
        sha, ext = s.execute(sa.select(Stimulus.media_sha256, Stimulus.media_ext).limit(1)).one()
    return f"/media/{sha}{ext}", MediaStore(study.settings.media_dir).path_for(sha, ext).read_bytes()


def test_whole_file_is_served_with_immutable_caching_and_etag(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = build_study(settings, tmp_path)
    url, data = _media(study)
    for _ in range(2):  # the second answer comes from the memory cache
        r = study.client.get(url)
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-type"] == "image/png"
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["etag"] == f'"{url[7:71]}"'
        assert r.headers["accept-ranges"] == "bytes"
        assert r.headers["x-content-type-options"] == "nosniff"


def test_revalidation_with_the_etag_is_304_without_a_body(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = build_study(settings, tmp_path)
    url, _ = _media(study)
    etag = study.client.get(url).headers["etag"]
    r = study.client.get(url, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""


def test_range_requests_get_206_with_the_requested_bytes(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = build_study(settings, tmp_path, bank_kwargs={"modality": "audio"}, spec={"conditions": ["natural", "tiny/conv1", "tiny/conv2", "tiny/fc"]})
    url, data = _media(study)
    study.client.get(url)  # cached whole; ranges must still be honoured
    r = study.client.get(url, headers={"Range": "bytes=4-15"})
    assert r.status_code == 206 and r.content == data[4:16]
    assert r.headers["content-range"] == f"bytes 4-15/{len(data)}"


def test_a_deleted_file_is_not_served_from_the_memory_cache(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = build_study(settings, tmp_path)
    url, _ = _media(study)
    assert study.client.get(url).status_code == 200
    MediaStore(study.settings.media_dir).remove(url[7:71], url[71:])
    assert study.client.get(url).status_code == 404


def test_unknown_and_malformed_names_are_404(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    study = build_study(settings, tmp_path)
    for name in ["0" * 64 + ".png", "0" * 64 + ".html", "..%2F..%2Fetc%2Fpasswd", "A" * 64 + ".png"]:
        assert study.client.get(f"/media/{name}").status_code == 404


def test_cached_media_skip_the_framework_with_the_same_answer(settings, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The second request is answered by MediaFastPath (the route is never called) with the
    same bytes and headers as the first, security headers included; a range request still
    reaches the route."""
    from app.stimuli import media

    study = build_study(settings, tmp_path)
    url, data = _media(study)
    first = study.client.get(url)
    calls: list[str] = []

    def counted(cls):  # type: ignore[no-untyped-def]
        class Counted(cls):  # type: ignore[misc,valid-type]
            def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
                calls.append("route")
                super().__init__(*args, **kwargs)

        return Counted

    # The route builds its answers from these names; the fast path does not.
    monkeypatch.setattr(media, "Response", counted(media.Response))
    monkeypatch.setattr(media, "FileResponse", counted(media.FileResponse))
    second = study.client.get(url)
    assert calls == []
    assert second.status_code == 200 and second.content == data
    keep = ("content-type", "content-length", "cache-control", "etag", "accept-ranges", "x-content-type-options", "content-security-policy")
    assert {k: second.headers[k] for k in keep} == {k: first.headers[k] for k in keep}
    assert study.client.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    assert calls == []
    ranged = study.client.get(url, headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and ranged.content == data[:10]
    assert calls == ["route"]
