"""``python -m benchmarks.load``: run the load benchmark once and print the report (and JSON)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import fields
from pathlib import Path

from benchmarks.load.run import Config, format_report, run


def main(argv: list[str] | None = None) -> int:
    defaults = Config()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__)
    for f in fields(Config):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)), default=getattr(defaults, f.name))
    ap.add_argument("--json", type=Path, help="also write the full report as JSON here")
    args = ap.parse_args(argv)
    cfg = Config(**{f.name: getattr(args, f.name) for f in fields(Config)})
    # On SIGTERM still run the clean-up (stop uvicorn, drop the throwaway database).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(cfg)
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0 if report["audit"]["ok"] and report["open_loop"]["n_failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
