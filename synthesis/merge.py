"""Merge shard banks (``--shard i/N`` outputs of one plan) into one bank.

Shards of one plan share their naturals, extras, models and null distributions (all are written
by every shard, deterministically) and differ in their metamers. Merging checks that the shards
come from the same plan (same fingerprint), that shared entries agree, and that no metamer is
claimed twice with different content; then it copies the files and validates the result with the
bank reader. A shard that another process is still writing is refused (see ``writer_lock``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from synthesis.bank import LOCK, MANIFEST, BankError, BankWriter, open_bank, writer_lock


def merge_banks(out: str | Path, shards: Sequence[str | Path]) -> Path:
    """Write the union of ``shards`` into the new folder ``out``; returns it. Raises BankError, and
    BankBusy when a shard is still being written (it would be merged half done) or another merge
    writes ``out``. Each shard's writer lock is held while it is read, so none starts meanwhile."""
    if not shards:
        raise BankError(["no shard banks given"], "merge")
    outp = Path(out)
    _check_empty(outp)
    with contextlib.ExitStack() as held:
        for folder in dict.fromkeys(Path(s).resolve() for s in shards):
            if folder.is_dir() and os.access(folder, os.W_OK):  # a folder nobody may write has no writer
                held.enter_context(writer_lock(folder))
        return _merge(outp, shards, held)


def _check_empty(outp: Path) -> None:
    if outp.exists() and any(f.name != LOCK for f in outp.iterdir()):
        raise BankError([f"{outp} exists and is not empty"], "merge")


def _merge(outp: Path, shards: Sequence[str | Path], held: contextlib.ExitStack) -> Path:
    problems: list[str] = []
    manifests = []
    for s in shards:
        with open_bank(s) as bank:  # full validation of every shard first
            manifests.append((Path(s), bank.manifest))
    first_path, first = manifests[0]
    fp = first.generator.settings.get("fingerprint")
    for path, m in manifests[1:]:
        if m.generator.settings.get("fingerprint") != fp:
            problems.append(f"{path} was made from a different plan than {first_path}")
        if m.categories != first.categories:
            problems.append(f"{path}: categories differ from {first_path}")
        if m.models != first.models:
            problems.append(f"{path}: models differ from {first_path}")
    if problems:
        raise BankError(problems, "merge")
    held.enter_context(writer_lock(outp))
    _check_empty(outp)  # again, under the lock: another merge may have filled it meanwhile
    writer = BankWriter(outp, name=first.name, modality=first.modality, categories=list(first.categories), generator=first.generator,
                        models=list(first.models), created=first.created)
    owner: dict[str, tuple[Path, str]] = {}
    for path, m in manifests:
        for model, layers in m.null.items():
            for layer, summary in layers.items():
                have = writer.null.get(model, {}).get(layer)
                if have is not None and have != summary:
                    problems.append(f"{path}: null for {model}/{layer} differs from another shard's")
                writer.set_null(model, layer, summary)
                if summary.histogram:
                    _copy(path, outp, summary.histogram)
        for c in m.categories:
            if c.icon:
                _copy(path, outp, c.icon)
        for s in m.stimuli:
            if s.id in owner and owner[s.id][1] != s.sha256:
                problems.append(f"{s.id} differs between {owner[s.id][0]} and {path}")
                continue
            if s.id in owner:
                continue
            owner[s.id] = (path, s.sha256)
            _copy(path, outp, s.file)
            writer.add_stimulus(s)
    if problems:
        raise BankError(problems, "merge")
    writer.save()
    with open_bank(outp):
        pass
    return outp


def _copy(src_root: Path, dst_root: Path, rel: str) -> None:
    dst = dst_root / rel
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src_root / rel, dst)


__all__ = ["merge_banks", "MANIFEST"]
