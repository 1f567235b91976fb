"""``metamers export``: write an experiment's results from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.core.commands import fail, migrated_sessions


def cmd_export(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from app.core.schema import Experiment
    from app.results.export import write_export
    from app.results.options import ExportOptions

    settings, sessions = migrated_sessions()
    with sessions() as s:
        exp = s.scalar(sa.select(Experiment).where(Experiment.slug == args.slug))
        if exp is None:
            return fail(f"no experiment with slug {args.slug!r}")
        s.expunge(exp)
    try:
        options = ExportOptions(
            pseudonymize=args.pseudonymize or bool(args.pseudonym_key),
            pseudonym_key=args.pseudonym_key,
            include_unanswered=args.all_trials,
            n_boot=args.bootstrap,
            n_permutations=args.permutations,
            seed=args.seed,
            scheme=args.scheme,
            sem_ddof=args.sem_ddof,
        )
        paths = write_export(sessions, exp, Path(args.out), options, secret_key=settings.resolved_secret_key(), only=args.only or None)
    except ValueError as exc:
        return fail(str(exc))
    for p in paths:
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from app.results.analysis import SEM_DDOF
    from app.results.options import FILES
    from app.results.stats import DEFAULT_PERMUTATIONS, DEFAULT_SCHEME, SCHEMES

    p = sub.add_parser("export", help="write an experiment's results: trials, participants, accuracy by layer, figure, statistics")
    p.add_argument("slug", help="the experiment's slug")
    p.add_argument("--out", default="results", help="output folder (default: ./results)")
    p.add_argument("--only", nargs="+", choices=FILES, metavar="FILE", help=f"write only these files (from: {', '.join(FILES)})")
    p.add_argument("--pseudonymize", action="store_true", help="replace platform ids by keyed-hash pseudonyms")
    p.add_argument("--pseudonym-key", help="key for the pseudonyms (default: derived from the server secret and the experiment)")
    p.add_argument("--all-trials", action="store_true", help="trials.csv: also planned trials nobody answered")
    p.add_argument("--permutations", type=int, default=DEFAULT_PERMUTATIONS, help="permutations per statistical test (default 10000)")
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples per accuracy row (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and the permutations (default 0)")
    p.add_argument(
        "--scheme", choices=list(SCHEMES), default=DEFAULT_SCHEME,
        help="human-vs-model statistics: feather2023 = Feather et al. 2023 (natural + every layer as levels; the default), "
        "centred = metamer layers only with a centred-profile interaction null",
    )
    p.add_argument(
        "--sem-ddof", type=int, choices=[0, 1], default=SEM_DDOF,
        help="SEM of accuracy_by_layer.csv and the figure: 0 = population SD / sqrt(n) (the paper's; default), 1 = sample SD / sqrt(n)",
    )
    p.set_defaults(func=cmd_export)
