"""The ``metamers`` command line.

Sub-commands are registered by the module that owns them. The synthesis commands live in
``synthesis.cli`` and import torch only when they run, so ``metamers bank import`` and the web
app work without the synthesis extras.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metamers", description="Metamer Lab: model metamer experiments end to end.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from synthesis import cli as synth_cli

    synth_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
