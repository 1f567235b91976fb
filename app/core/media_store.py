"""Content-addressed media store: ``<media_dir>/<sha[:2]>/<sha><ext>``.

Files are named by their sha256, so identical media imported twice is stored once, URLs can be
cached forever (``immutable``), and a participant never learns anything from a file name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

_ALLOWED_EXT = {".png", ".wav"}


class MediaStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str, ext: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256) or ext not in _ALLOWED_EXT:
            raise ValueError("bad media name")
        return self.root / sha256[:2] / f"{sha256}{ext}"

    def exists(self, sha256: str, ext: str) -> bool:
        return self.path_for(sha256, ext).is_file()

    def put_file(self, src: Path, sha256: str, ext: str) -> bool:
        """Copy ``src`` into the store, checking its hash on the way. Returns True if newly created."""
        dest = self.path_for(sha256, ext)
        if dest.is_file():
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        h = hashlib.sha256()
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(1024 * 1024):
                h.update(chunk)
                fout.write(chunk)
        if h.hexdigest() != sha256:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"{src} changed while it was being stored")
        os.replace(tmp, dest)
        return True

    def put_bytes(self, data: bytes, ext: str) -> tuple[str, bool]:
        """Store ``data``; return (sha256, newly_created)."""
        sha = hashlib.sha256(data).hexdigest()
        dest = self.path_for(sha, ext)
        if dest.is_file():
            return sha, False
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return sha, True

    def remove(self, sha256: str, ext: str) -> None:
        self.path_for(sha256, ext).unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
