"""Run the project's benchmarks: ``python -m benchmarks [NAME ...] [-- ARGS for a single benchmark]``.

Each benchmark is a module with ``main(argv) -> int``. To add one, add a line to BENCHMARKS.
"""

from __future__ import annotations

import importlib
import sys

# name -> module whose main(argv) runs it. Other areas of the project add their benchmarks here.
BENCHMARKS: dict[str, str] = {
    "synthesis": "benchmarks.synthesis.compare",
    "synthesis-gpu": "benchmarks.synthesis.gpu",
    "load": "benchmarks.load.__main__",
}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in args:
        i = args.index("--")
        args, extra = args[:i], args[i + 1 :]
    names = args or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    status = 0
    for name in names:
        print(f"\n=== benchmark: {name} ===", flush=True)
        rc = importlib.import_module(BENCHMARKS[name]).main(extra)
        status = status or rc
    return status


if __name__ == "__main__":
    sys.exit(main())
