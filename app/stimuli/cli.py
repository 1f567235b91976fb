"""``metamers bank import|validate``: stimulus banks from the command line."""

from __future__ import annotations

import argparse

from app.core.commands import fail, migrated_sessions


def cmd_bank_import(args: argparse.Namespace) -> int:
    from app.core.media_store import MediaStore
    from app.stimuli.importer import SetImportError, import_bank
    from synthesis.bank import BankError

    settings, sessions = migrated_sessions()
    try:
        set_id = import_bank(sessions, MediaStore(settings.media_dir), args.path, args.name, imported_by="cli")
    except (BankError, SetImportError) as exc:
        return fail(str(exc))
    print(f"imported {args.path} as stimulus set {args.name!r} (id {set_id})")
    return 0


def cmd_bank_validate(args: argparse.Namespace) -> int:
    from synthesis.bank import BankError, open_bank

    try:
        with open_bank(args.path) as bank:
            m = bank.manifest
            kinds: dict[str, int] = {}
            for s in m.stimuli:
                kinds[s.kind] = kinds.get(s.kind, 0) + 1
            passed = sum(1 for s in m.stimuli if s.kind == "metamer" and s.passed)
            print(f"{args.path}: valid {m.modality} bank {m.name!r}: " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items())))
            if kinds.get("metamer"):
                print(f"  metamers passing the validity criteria: {passed}/{kinds['metamer']}")
    except BankError as exc:
        return fail(str(exc))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bank = sub.add_parser("bank", help="stimulus banks").add_subparsers(dest="bank_command", required=True, metavar="BANK_COMMAND")
    p = bank.add_parser("import", help="validate a bank (folder or .zip) and import it as a stimulus set")
    p.add_argument("path")
    p.add_argument("--name", required=True, help="name of the new stimulus set")
    p.set_defaults(func=cmd_bank_import)
    p = bank.add_parser("validate", help="check a bank without importing it")
    p.add_argument("path")
    p.set_defaults(func=cmd_bank_validate)
