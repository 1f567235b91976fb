"""The stimulus bank: the only contract between synthesis and the web app. Torch-free.

A bank is a folder (or a zip of one) that holds ``manifest.json`` and media files. The manifest
format is documented in ``docs/bank-format.md``; the pydantic models below are its executable
definition. Unknown fields are rejected everywhere so that a typo never silently drops data.

Reading a bank (:func:`read_bank`) checks everything a researcher could get wrong or an attacker
could abuse, and reports *all* problems at once in a :class:`BankError`:

* malformed or unknown manifest fields, dangling references (labels, sources, models, layers);
* paths that escape the bank folder, symlinks, missing files, sha256 mismatches;
* media whose content is not what its name claims (a ``.png`` that is not a PNG, a truncated WAV);
* zip archives that are too large, too many files, or compress suspiciously well (zip bombs).

Reading never writes anything outside a private temporary folder, which it removes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from synthesis.media import MediaError, MediaInfo, media_kind_for, sniff

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

FORMAT = "metamer-bank/1"
MANIFEST = "manifest.json"

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,199}$")]
# Model and layer names appear in condition keys "model/layer", so they cannot hold "/".
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,199}$")]
StimulusKind = Literal["natural", "metamer", "catch", "practice"]


class BankError(ValueError):
    """A bank failed validation. ``problems`` lists every problem found, one line each."""

    def __init__(self, problems: list[str], source: str = "bank") -> None:
        self.problems = problems
        head = f"{source} is not a valid metamer bank ({len(problems)} problem{'s' if len(problems) != 1 else ''}):"
        shown = problems[:50]
        more = [f"... and {len(problems) - 50} more"] if len(problems) > 50 else []
        super().__init__("\n  - ".join([head, *shown, *more]))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Category(_Strict):
    """One response alternative, in the order the experiment shows them."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.'-]{1,64}$")]
    label: Annotated[str, Field(min_length=1, max_length=100)]
    icon: str | None = None
    icon_sha256: Sha256 | None = None

    @model_validator(mode="after")
    def _icon_has_hash(self) -> Category:
        if (self.icon is None) != (self.icon_sha256 is None):
            raise ValueError("icon and icon_sha256 must be given together")
        return self


class Generator(_Strict):
    """What produced the bank: enough to reproduce it."""

    package: str
    version: str
    settings: dict[str, Any] = {}
    seed: int | None = None


class InputSpec(_Strict):
    """What a model takes. Images: ``shape`` = [C, H, W]. Audio: ``sample_rate`` (Hz) and ``samples``."""

    kind: Literal["image", "audio"]
    shape: list[Annotated[int, Field(gt=0)]] | None = None
    sample_rate: Annotated[int, Field(gt=0)] | None = None
    samples: Annotated[int, Field(gt=0)] | None = None
    range: tuple[float, float]

    @model_validator(mode="after")
    def _complete(self) -> InputSpec:
        if self.kind == "image" and (self.shape is None or len(self.shape) != 3):
            raise ValueError("image input needs shape [C, H, W]")
        if self.kind == "audio" and (self.sample_rate is None or self.samples is None):
            raise ValueError("audio input needs sample_rate and samples")
        if self.range[0] >= self.range[1]:
            raise ValueError("range must be [low, high] with low < high")
        return self


class ModelInfo(_Strict):
    """A model whose layers the bank's metamers match. ``layers`` are in depth order."""

    name: Name
    checkpoint_sha256: Sha256
    layers: Annotated[list[Name], Field(min_length=1)]
    input: InputSpec
    description: str = ""
    # Settings of a front end that is part of the model (e.g. the cochleagram), recorded for provenance.
    front_end: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _unique_layers(self) -> ModelInfo:
        if len(set(self.layers)) != len(self.layers):
            raise ValueError("layer names must be unique")
        return self


class Quantiles(_Strict):
    """Summary of one null statistic over random pairs of different natural signals."""

    max: float
    p50: float
    p95: float
    p99: float


class NullSummary(_Strict):
    """The null distribution at one layer: a metamer must beat every ``max`` to pass."""

    n_pairs: Annotated[int, Field(gt=0)]
    spearman: Quantiles
    pearson: Quantiles
    snr_db: Quantiles
    # Optional JSON file in the bank with the full histograms, for inspection.
    histogram: str | None = None
    histogram_sha256: Sha256 | None = None


class Metrics(_Strict):
    """Per-metamer results at the matched layer, computed on the saved (quantized) file."""

    loss: float | None
    spearman: float | None
    pearson: float | None
    snr_db: float | None
    pred_metamer: str
    pred_natural: str
    steps: Annotated[int, Field(ge=0)]
    seed: int


class Stimulus(_Strict):
    """One media file of the bank."""

    id: Ident
    kind: StimulusKind
    source: Ident | None = None
    label: str
    file: str
    sha256: Sha256
    model: Name | None = None
    layer: Name | None = None
    layer_index: Annotated[int, Field(ge=0)] | None = None
    metrics: Metrics | None = None
    passed: bool | None = None
    fail_reasons: list[str] | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> Stimulus:
        metamer_fields = {
            "model": self.model,
            "layer": self.layer,
            "layer_index": self.layer_index,
            "metrics": self.metrics,
            "passed": self.passed,
            "fail_reasons": self.fail_reasons,
        }
        if self.kind == "metamer":
            missing = [k for k, v in metamer_fields.items() if v is None]
            if missing:
                raise ValueError(f"metamer is missing {', '.join(missing)}")
            if self.source is None:
                raise ValueError("metamer needs the id of its natural source")
            if self.passed and self.fail_reasons:
                raise ValueError("a passed metamer cannot have fail_reasons")
            if not self.passed and not self.fail_reasons:
                raise ValueError("a failed metamer needs at least one fail reason")
        else:
            present = [k for k, v in metamer_fields.items() if v is not None]
            if present:
                raise ValueError(f"only metamers have {', '.join(present)}")
            if self.kind == "natural" and self.source not in (None, self.id):
                raise ValueError("a natural stimulus is its own source (source must equal id)")
        return self

    @property
    def source_id(self) -> str | None:
        """The natural source this stimulus belongs to (naturals are their own source)."""
        return self.id if self.kind == "natural" else self.source


class Manifest(_Strict):
    format: Literal["metamer-bank/1"]
    name: Annotated[str, Field(min_length=1, max_length=200)]
    modality: Literal["image", "audio"]
    created: dt.datetime
    generator: Generator
    categories: Annotated[list[Category], Field(min_length=2)]
    models: list[ModelInfo] = []
    null: dict[str, dict[str, NullSummary]] = {}
    stimuli: Annotated[list[Stimulus], Field(min_length=1)]

    def model(self, name: str) -> ModelInfo:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

    def referenced_files(self) -> dict[str, str]:
        """Every file the manifest names, mapped to its expected sha256."""
        files: dict[str, str] = {}
        for c in self.categories:
            if c.icon and c.icon_sha256:
                files[c.icon] = c.icon_sha256
        for layers in self.null.values():
            for summary in layers.values():
                if summary.histogram and summary.histogram_sha256:
                    files[summary.histogram] = summary.histogram_sha256
        for s in self.stimuli:
            files[s.file] = s.sha256
        return files


def manifest_problems(manifest: Manifest) -> list[str]:
    """Cross-reference checks that a single field's schema cannot express."""
    problems: list[str] = []
    category_ids = [c.id for c in manifest.categories]
    if len(set(category_ids)) != len(category_ids):
        problems.append("categories: ids must be unique")
    cats = set(category_ids)
    models = {m.name: m for m in manifest.models}
    if len(models) != len(manifest.models):
        problems.append("models: names must be unique")
    for mname, layers in manifest.null.items():
        if mname not in models:
            problems.append(f"null: unknown model {mname!r}")
            continue
        for lname in layers:
            if lname not in models[mname].layers:
                problems.append(f"null[{mname}]: unknown layer {lname!r}")
    ids: set[str] = set()
    files: dict[str, str] = {}
    naturals = {s.id: s for s in manifest.stimuli if s.kind == "natural"}
    seen_metamer: set[tuple[str, str, str]] = set()
    for i, s in enumerate(manifest.stimuli):
        where = f"stimuli[{i}] ({s.id})"
        if s.id in ids:
            problems.append(f"{where}: duplicate id")
        ids.add(s.id)
        if s.file in files:
            problems.append(f"{where}: file {s.file!r} is also used by {files[s.file]}")
        files[s.file] = s.id
        if s.label not in cats:
            problems.append(f"{where}: label {s.label!r} is not a category id")
        kind = media_kind_for(s.file)
        if kind is None:
            problems.append(f"{where}: file {s.file!r} must end in .png or .wav")
        elif kind != manifest.modality:
            problems.append(f"{where}: {kind} file in a {manifest.modality} bank")
        if s.kind == "metamer":
            assert s.model is not None and s.layer is not None and s.source is not None
            nat = naturals.get(s.source)
            if nat is None:
                problems.append(f"{where}: source {s.source!r} is not a natural stimulus of this bank")
            elif nat.label != s.label:
                problems.append(f"{where}: label {s.label!r} differs from its source's label {nat.label!r}")
            model = models.get(s.model)
            if model is None:
                problems.append(f"{where}: unknown model {s.model!r}")
            elif s.layer not in model.layers:
                problems.append(f"{where}: model {s.model!r} has no layer {s.layer!r} (layers: {', '.join(model.layers)})")
            elif model.layers.index(s.layer) != s.layer_index:
                problems.append(f"{where}: layer_index {s.layer_index} but {s.layer!r} is layer {model.layers.index(s.layer)}")
            key = (s.source, s.model, s.layer)
            if key in seen_metamer:
                problems.append(f"{where}: a second metamer for source {s.source!r} at {s.model}/{s.layer}")
            seen_metamer.add(key)
    for c in manifest.categories:
        if c.icon and media_kind_for(c.icon) != "image":
            problems.append(f"categories[{c.id}]: icon {c.icon!r} must be a .png")
    return problems


# --------------------------------------------------------------------------------------------
# Safe paths and archives


@dataclass(frozen=True)
class Limits:
    """Bounds on what a bank may hold. Bytes unless stated."""

    max_archive_bytes: int = 2 * 1024**3
    max_total_bytes: int = 8 * 1024**3
    max_file_bytes: int = 64 * 1024**2
    max_files: int = 200_000
    max_manifest_bytes: int = 64 * 1024**2
    # Media barely compresses; anything squeezed harder than this is a bomb, not a stimulus.
    max_compression_ratio: float = 200.0


def safe_relpath(path: str) -> str | None:
    """Return ``path`` normalized if it is a plain relative POSIX path inside the bank, else None."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/") or ":" in path.split("/")[0]:
        return None
    parts = PurePosixPath(path).parts
    if not parts or any(p in ("..", ".", "") for p in parts):
        return None
    return "/".join(parts)


def _extract_zip(zip_path: Path, dest: Path, limits: Limits) -> list[str]:
    """Extract a bank zip into ``dest`` after checking every entry; returns problems (nothing extracted if any)."""
    problems: list[str] = []
    size = zip_path.stat().st_size
    if size > limits.max_archive_bytes:
        return [f"archive is {size} bytes, over the {limits.max_archive_bytes}-byte limit"]
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        return [f"not a readable zip archive: {exc}"]
    with zf:
        infos = zf.infolist()
        if len(infos) > limits.max_files:
            return [f"archive holds {len(infos)} entries, over the {limits.max_files} limit"]
        names = [i.filename for i in infos if not i.is_dir()]
        # A bank zipped with its folder has every path under one top folder; strip it.
        prefix = ""
        tops = {n.split("/", 1)[0] for n in names}
        if MANIFEST not in names and len(tops) == 1 and f"{next(iter(tops))}/{MANIFEST}" in names:
            prefix = next(iter(tops)) + "/"
        total = 0
        plan: list[tuple[zipfile.ZipInfo, str]] = []
        for info in infos:
            mode = (info.external_attr >> 16) & 0o170000
            if mode == stat.S_IFLNK:
                problems.append(f"{info.filename}: symbolic links are not allowed in a bank")
                continue
            if info.is_dir():
                continue
            rel = safe_relpath(info.filename[len(prefix):] if info.filename.startswith(prefix) else info.filename)
            if rel is None or not info.filename.startswith(prefix):
                problems.append(f"{info.filename}: path escapes the bank folder")
                continue
            if info.file_size > limits.max_file_bytes:
                problems.append(f"{rel}: {info.file_size} bytes, over the {limits.max_file_bytes}-byte file limit")
                continue
            if info.compress_size and info.file_size / info.compress_size > limits.max_compression_ratio and info.file_size > 1024 * 1024:
                problems.append(f"{rel}: compression ratio {info.file_size / info.compress_size:.0f}:1 looks like a zip bomb")
                continue
            total += info.file_size
            plan.append((info, rel))
        if total > limits.max_total_bytes:
            problems.append(f"archive expands to {total} bytes, over the {limits.max_total_bytes}-byte limit")
        if problems:
            return problems
        for info, rel in plan:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            # Headers can lie about sizes, so count what is really decompressed.
            written = 0
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(1024 * 1024):
                    written += len(chunk)
                    if written > info.file_size or written > limits.max_file_bytes:
                        return [f"{rel}: decompresses to more than its declared size (zip bomb?)"]
                    out.write(chunk)
    return []


@contextlib.contextmanager
def open_bank_folder(path: str | os.PathLike[str], limits: Limits = Limits()) -> Iterator[Path]:
    """Yield a folder holding the bank at ``path`` (a folder, or a zip extracted to a private temp dir).

    Raises BankError if the archive is unsafe. The temp dir is removed on exit.
    """
    p = Path(path)
    if not p.exists():
        raise BankError([f"{p} does not exist"], str(p))
    if p.is_dir():
        yield p
        return
    tmp = Path(tempfile.mkdtemp(prefix="metamer-bank-"))
    try:
        problems = _extract_zip(p, tmp, limits)
        if problems:
            raise BankError(problems, p.name)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class BankFile:
    """A verified file of a bank: where it is, its hash and what its content really is."""

    rel: str
    path: Path
    sha256: str
    size: int
    info: MediaInfo | None  # None for non-media files (null histograms)


@dataclass
class Bank:
    """A fully validated bank. Files are only valid while the folder exists (see :func:`open_bank`)."""

    root: Path
    manifest: Manifest
    files: dict[str, BankFile] = field(default_factory=dict)


def _format_validation_error(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "manifest"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append(f"{loc}: {msg}")
    return out


def parse_manifest(raw: bytes | str) -> Manifest:
    """Parse and check a manifest's JSON text. Raises BankError listing every problem."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BankError([f"{MANIFEST} is not valid JSON: {exc}"]) from exc
    if not isinstance(data, dict):
        raise BankError([f"{MANIFEST} must hold a JSON object"])
    if data.get("format") not in (None, FORMAT):
        raise BankError([f"format {data.get('format')!r} is not supported (this reader knows {FORMAT!r})"])
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise BankError(_format_validation_error(exc)) from exc
    problems = manifest_problems(manifest)
    if problems:
        raise BankError(problems)
    return manifest


def validate_folder(root: Path, limits: Limits = Limits(), source: str | None = None) -> Bank:
    """Check a bank folder completely: manifest, paths, hashes and media content."""
    source = source or root.name
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise BankError([f"{MANIFEST} is missing"], source)
    if mpath.stat().st_size > limits.max_manifest_bytes:
        raise BankError([f"{MANIFEST} is larger than {limits.max_manifest_bytes} bytes"], source)
    try:
        manifest = parse_manifest(mpath.read_bytes())
    except BankError as exc:
        raise BankError(exc.problems, source) from exc
    problems: list[str] = []
    files: dict[str, BankFile] = {}
    real_root = root.resolve()
    expected = manifest.referenced_files()
    if len(expected) > limits.max_files:
        raise BankError([f"bank lists {len(expected)} files, over the {limits.max_files} limit"], source)
    total = 0
    for rel, sha in expected.items():
        norm = safe_relpath(rel)
        if norm is None or norm != rel:
            problems.append(f"{rel}: path escapes the bank folder or is not a plain relative path")
            continue
        path = root / rel
        if path.is_symlink() or any(p.is_symlink() for p in path.parents if p != root and root in p.parents):
            problems.append(f"{rel}: symbolic links are not allowed in a bank")
            continue
        try:
            resolved = path.resolve()
            resolved.relative_to(real_root)
        except (ValueError, OSError):
            problems.append(f"{rel}: path escapes the bank folder")
            continue
        if not path.is_file():
            problems.append(f"{rel}: file is missing")
            continue
        size = path.stat().st_size
        if size > limits.max_file_bytes:
            problems.append(f"{rel}: {size} bytes, over the {limits.max_file_bytes}-byte file limit")
            continue
        total += size
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            problems.append(f"{rel}: sha256 mismatch (manifest {sha[:12]}…, file {actual[:12]}…)")
            continue
        info: MediaInfo | None = None
        ext = os.path.splitext(rel)[1].lower()
        if ext in (".png", ".wav"):
            try:
                info = sniff(data, ext)
            except MediaError as exc:
                problems.append(f"{rel}: {exc}")
                continue
        elif ext != ".json":
            problems.append(f"{rel}: unsupported file type {ext!r}")
            continue
        else:
            try:
                json.loads(data)
            except ValueError as exc:
                problems.append(f"{rel}: not valid JSON ({exc})")
                continue
        files[rel] = BankFile(rel, path, actual, size, info)
    if total > limits.max_total_bytes:
        problems.append(f"bank holds {total} bytes, over the {limits.max_total_bytes}-byte limit")
    problems.extend(_media_consistency(manifest, files))
    if problems:
        raise BankError(problems, source)
    return Bank(root=root, manifest=manifest, files=files)


def _media_consistency(manifest: Manifest, files: dict[str, BankFile]) -> list[str]:
    """Audio stimuli of one bank must share a sample rate: the browser plays them through one context."""
    problems: list[str] = []
    if manifest.modality == "audio":
        rates = {f.info.sample_rate for s in manifest.stimuli if (f := files.get(s.file)) and f.info}
        if len(rates) > 1:
            problems.append(f"audio stimuli use several sample rates {sorted(r for r in rates if r)}; use one")
    return problems


@contextlib.contextmanager
def open_bank(path: str | os.PathLike[str], limits: Limits = Limits()) -> Iterator[Bank]:
    """Open and fully validate the bank at ``path`` (folder or .zip). Raises BankError."""
    with open_bank_folder(path, limits) as root:
        yield validate_folder(root, limits, source=Path(path).name)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a bank folder's manifest with schema checks only (no media or hash checks)."""
    return parse_manifest((Path(path) / MANIFEST).read_bytes())


# --------------------------------------------------------------------------------------------
# Writing


LOCK = ".writer.lock"


class BankBusy(BankError):
    """Another process holds the bank folder's writer lock."""

    def __init__(self, message: str) -> None:
        self.problems = [message]
        ValueError.__init__(self, message)


@contextlib.contextmanager
def writer_lock(root: str | os.PathLike[str], wait_s: float = 2.0) -> Iterator[Path]:
    """Hold the writer lock of the bank folder ``root`` (created if missing); yields ``root``.

    A writer keeps its manifest in memory and rewrites it whole, so two processes writing one
    folder (two shards sent to one ``--out``, or a shard resubmitted while it still runs) would
    each drop the other's entries. The second is refused with :class:`BankBusy`, naming the
    holder, and writes nothing; it tries for ``wait_s`` seconds first, which rides out
    :func:`lock_holder`'s momentary probes. The lock is ``flock`` on ``ROOT/.writer.lock``, which
    the kernel releases however the holder ends (``scancel``, SIGKILL, out of memory), so there
    is never a stale lock to remove. Linux NFS clients map it to POSIX locks, which the server
    sees from every node. Where the filesystem has no locks at all the writer goes on unlocked,
    with a warning. The lock file is not part of the bank: readers and merges ignore it.
    """
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # not POSIX: no locks to take
        yield folder
        return
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        locked = _flock_within(fd, wait_s, folder)
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (_this_writer() + "\n").encode(), 0)
        try:
            yield folder
        finally:
            if locked:
                os.ftruncate(fd, 0)  # still held here, so no reader names a writer that has finished
    finally:
        os.close(fd)


def lock_holder(root: str | os.PathLike[str]) -> str | None:
    """Who is writing the bank folder ``root`` right now (pid, host, Slurm task, since when), or
    None. Only reads: a lock file left by a writer that was killed names nobody."""
    if fcntl is None:
        return None
    try:
        fd = os.open(Path(root) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 1000, 0).decode("utf-8", "replace").strip() or "a writer that has just started"
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _flock_within(fd: int, wait_s: float, folder: Path) -> bool:
    """Take the exclusive lock on ``fd``, retrying for ``wait_s`` seconds; False where the
    filesystem has no locks. Raises BankBusy naming the holder."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            holder = os.pread(fd, 1000, 0).decode("utf-8", "replace").strip() or "it has just started"
            raise BankBusy(f"{folder} is being written by another process ({holder}). Two writers would lose each other's "
                           "work, so this one stops and changes nothing: wait until that process has finished, or use "
                           "another folder.") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            warnings.warn(f"{folder}: this filesystem has no file locks ({exc.strerror}); nothing stops a second "
                          "process from writing this bank at the same time", stacklevel=4)
            return False


def _this_writer() -> str:
    """This process as a lock holder: pid, host, Slurm task, start time."""
    who = f"pid {os.getpid()} on {socket.gethostname()}"
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        who += f", Slurm job {array}_{task}"
    elif os.environ.get("SLURM_JOB_ID"):
        who += f", Slurm job {os.environ['SLURM_JOB_ID']}"
    return f"{who}, since {dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()}"


class BankWriter:
    """Builds a bank folder file by file; :meth:`save` writes the manifest atomically.

    Media bytes are written as they are added, so a crash leaves files but no manifest entry for
    them; re-adding the same content is a no-op. The manifest is validated before it is written,
    so a writer cannot produce a bank that the reader rejects. One writer per folder: hold
    :func:`writer_lock` while writing.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        name: str,
        modality: Literal["image", "audio"],
        categories: list[Category],
        generator: Generator,
        models: list[ModelInfo] | None = None,
        null: dict[str, dict[str, NullSummary]] | None = None,
        created: dt.datetime | None = None,
    ) -> None:
        self.root = Path(root)
        self.name = name
        self.modality = modality
        self.categories = list(categories)
        self.generator = generator
        self.models = list(models or [])
        self.null: dict[str, dict[str, NullSummary]] = {k: dict(v) for k, v in (null or {}).items()}
        self.created = created or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        self.stimuli: dict[str, Stimulus] = {}
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_existing(cls, root: str | os.PathLike[str]) -> BankWriter:
        """Reopen a bank folder to add to it (resume, merge)."""
        m = read_manifest(root)
        w = cls(
            root,
            name=m.name,
            modality=m.modality,
            categories=list(m.categories),
            generator=m.generator,
            models=list(m.models),
            null={k: dict(v) for k, v in m.null.items()},
            created=m.created,
        )
        w.stimuli = {s.id: s for s in m.stimuli}
        return w

    def write_file(self, rel: str, data: bytes) -> str:
        """Write ``data`` at ``rel`` inside the bank (atomically) and return its sha256."""
        norm = safe_relpath(rel)
        if norm is None or norm != rel:
            raise ValueError(f"{rel!r} is not a plain relative path inside the bank")
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return hashlib.sha256(data).hexdigest()

    def add_stimulus(self, stimulus: Stimulus, data: bytes | None = None) -> Stimulus:
        """Add (or replace) a stimulus; when ``data`` is given it is written to ``stimulus.file`` first
        and the hash is filled in."""
        if data is not None:
            sha = self.write_file(stimulus.file, data)
            stimulus = stimulus.model_copy(update={"sha256": sha})
        self.stimuli[stimulus.id] = stimulus
        return stimulus

    def add_model(self, model: ModelInfo) -> None:
        self.models = [m for m in self.models if m.name != model.name] + [model]

    def set_null(self, model: str, layer: str, summary: NullSummary) -> None:
        self.null.setdefault(model, {})[layer] = summary

    def manifest(self) -> Manifest:
        return Manifest(
            format=FORMAT,
            name=self.name,
            modality=self.modality,
            created=self.created,
            generator=self.generator,
            categories=self.categories,
            models=self.models,
            null=self.null,
            stimuli=list(self.stimuli.values()),
        )

    def save(self) -> Manifest:
        """Validate and atomically write ``manifest.json``. Raises BankError if it would be invalid."""
        try:
            manifest = Manifest.model_validate(self.manifest().model_dump())
        except ValidationError as exc:
            raise BankError(_format_validation_error(exc), self.name) from exc
        problems = manifest_problems(manifest)
        if problems:
            raise BankError(problems, self.name)
        text = manifest.model_dump_json(indent=1, exclude_none=True)
        tmp = self.root / f".{MANIFEST}.tmp{os.getpid()}"
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, self.root / MANIFEST)
        return manifest


def zip_bank(folder: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Zip a bank folder: the manifest and every file it references (nothing else), stored flat."""
    root = Path(folder)
    manifest = read_manifest(root)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(root / MANIFEST, MANIFEST)
        for rel in sorted(manifest.referenced_files()):
            # PNG and WAV gain nothing from deflate; store them to keep zipping fast.
            ctype = zipfile.ZIP_STORED if rel.endswith((".png", ".wav")) else zipfile.ZIP_DEFLATED
            zf.write(root / rel, rel, compress_type=ctype)
    os.replace(tmp, out)
    return out
