"""``metamers synth ...`` sub-commands. torch is imported inside the handlers, never at module import."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    synth = sub.add_parser("synth", help="synthesize metamer banks (needs the synthesis extra: torch)")
    synth_sub = synth.add_subparsers(dest="synth_command", required=True, metavar="SYNTH_COMMAND")
    del synth_sub  # the synthesis engine registers its commands here
