"""``metamers synth ...`` sub-commands. torch is imported inside the handlers, never at module import.

* ``layers MODEL``                 list a model's layers with output shapes (and where the fake ReLU applies)
* ``check PLAN``                   check a plan completely without computing anything; list its jobs
* ``run PLAN --out BANK``          run or resume a plan into a bank (``--shard i/N`` for one shard)
* ``slurm PLAN --out DIR``         write a Slurm job-array script, one GPU per shard
* ``progress DIR``                 which shards of that array finished; the sbatch line for the rest
* ``merge OUT SHARD...``           merge shard banks into one bank
* ``report BANK``                  pass rate per model and layer of a bank (no torch needed)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    synth = sub.add_parser("synth", help="synthesize metamer banks (needs the synthesis extra: torch)")
    synth_sub = synth.add_subparsers(dest="synth_command", required=True, metavar="SYNTH_COMMAND")

    p = synth_sub.add_parser("layers", help="list a model's layers and their output shapes")
    p.add_argument("model", help="registered name (e.g. digits), torchvision:NAME or package.module:factory")
    p.add_argument("--checkpoint", help="weights file (state dict)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="loader option (YAML value); repeatable")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_layers)

    p = synth_sub.add_parser("check", help="check a plan (models, layers, sources) without computing; list its jobs")
    p.add_argument("plan", type=Path)
    p.add_argument("--shard", help="i/N: only this shard's jobs (0-based)")
    p.set_defaults(func=_check)

    p = synth_sub.add_parser("run", help="run or resume a plan into a bank folder")
    p.add_argument("plan", type=Path)
    p.add_argument("--out", type=Path, required=True, help="bank folder (created, or resumed if it holds this plan's bank)")
    p.add_argument("--shard", help="i/N: run only shard i of N (0-based); job k belongs to shard k mod N")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (overrides the plan)")
    p.add_argument("--diagnostics", action="store_true", default=None, help="write loss curves and side-by-side figures")
    p.add_argument("--max-jobs", type=int, help="stop after this many jobs (0: only naturals and null); rerun to go on")
    p.add_argument("--threads", type=int, help="CPU threads for torch (small models run fastest with 1-2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (batch systems)")
    p.set_defaults(func=_run)

    p = synth_sub.add_parser("slurm", help="write a Slurm job-array script (one GPU per shard)")
    p.add_argument("plan", type=Path)
    p.add_argument("--out", type=Path, help="folder for the shard banks, logs and merged bank (default: runs/<plan name>)")
    p.add_argument("--shards", type=int, help="number of array tasks (default: one per job)")
    p.add_argument("--time", default="24:00:00")
    p.add_argument("--partition")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--cpus", type=int, default=4)
    p.add_argument("--mem", default="32G")
    p.add_argument("--setup", action="append", default=[], help="shell line run first in each task (e.g. module load, "
                   "source .venv/bin/activate); repeatable")
    p.add_argument("--script", type=Path, help="where to write the script (default: OUT/synth.sbatch)")
    p.set_defaults(func=_slurm)

    p = synth_sub.add_parser("progress", help="which shards of a Slurm array have finished; how to resubmit the others")
    p.add_argument("out", type=Path, help="the --out folder of `metamers synth slurm`")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_progress)

    p = synth_sub.add_parser("merge", help="merge shard banks of one plan into one bank")
    p.add_argument("out", type=Path)
    p.add_argument("shards", type=Path, nargs="+")
    p.set_defaults(func=_merge)

    p = synth_sub.add_parser("report", help="pass rate per model and layer of a bank")
    p.add_argument("bank", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_report)


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _input_errors() -> tuple[type[Exception], ...]:
    from synthesis.bank import BankError
    from synthesis.features import LayerError
    from synthesis.models.registry import ModelError
    from synthesis.optimize import SynthesisError
    from synthesis.plan import PlanError
    from synthesis.signals import SignalError

    return (BankError, LayerError, ModelError, PlanError, SignalError, SynthesisError, ValueError)


def _options(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option {item!r} must be KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def _layers(args: argparse.Namespace) -> int:
    try:
        import torch

        from synthesis.features import list_layers
        from synthesis.models.registry import load_model

        m = load_model(args.model, args.checkpoint, **_options(args.option))
        layers = list_layers(m.module, torch.zeros(1, *m.input_shape), prefix=m.layer_prefix)
    except _input_errors() as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps([{"name": la.name, "kind": la.kind, "op": la.op, "shape": list(la.shape), "fake_relu": la.relu, "calls": la.calls} for la in layers], indent=1))
        return 0
    shape = "×".join(str(s) for s in m.input_shape)
    print(f"{m.name}: input {m.input.kind} {shape}, range {list(m.input.range)}, {len(m.classes)} classes")
    w = max(len(la.name) for la in layers)
    print(f"{'layer':<{w}}  {'kind':<6}  {'op':<16}  {'output shape':<16}  fake ReLU")
    for la in layers:
        note = "yes" if la.relu else ""
        if la.calls > 1:
            note += f" (called {la.calls}×; last call)"
        print(f"{la.name:<{w}}  {la.kind:<6}  {la.op:<16}  {'×'.join(map(str, la.shape)):<16}  {note}")
    return 0


def _check(args: argparse.Namespace) -> int:
    try:
        from synthesis.plan import parse_shard
        from synthesis.run import prepare

        p = prepare(args.plan, shard=parse_shard(args.shard) if args.shard else None)
    except _input_errors() as exc:
        return _fail(exc)
    print(f"plan {p.plan.name}: OK")
    print(f"  sources: {len(p.sources)}, practice: {len(p.practice)}, catch: {len(p.catch)}, icons: {len(p.icons)}")
    for name, layers in p.layer_order.items():
        print(f"  model {name}: layers {', '.join(layers)}")
    s = p.settings
    print(f"  optimizer: {s.preset}, lr {s.lr}, {s.rounds} rounds × {s.round_steps} steps, patience {s.patience}")
    print(f"  jobs: {len(p.jobs)} ({sum(len(j.metamer_ids()) for j in p.jobs)} metamers)")
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        import torch

        from synthesis.plan import parse_shard
        from synthesis.run import run_plan

        if args.threads:
            torch.set_num_threads(args.threads)
        summary = run_plan(args.plan, args.out, shard=parse_shard(args.shard) if args.shard else None, device=args.device,
                           show_progress=not args.no_progress, diagnostics=args.diagnostics, max_jobs=args.max_jobs)
    except _input_errors() as exc:
        return _fail(exc)
    print(f"{summary.out}: {summary.jobs_run} jobs run, {summary.jobs_skipped} skipped (finished before), "
          f"{summary.metamers} metamers in {summary.seconds:.1f} s")
    for (model, layer), (ok, total) in summary.pass_rates.items():
        print(f"  {model}/{layer}: {ok}/{total} passed")
    return 0


def _slurm(args: argparse.Namespace) -> int:
    try:
        from synthesis.plan import load_plan, slurm_script

        load_plan(args.plan)
        if args.out is None:
            args.out = Path("runs") / args.plan.stem
        shards = args.shards
        if shards is None:
            # One task per job; the source count comes from the plan's folder or factory.
            from synthesis.run import prepare

            shards = len(prepare(args.plan).jobs)
        text = slurm_script(args.plan.resolve(), args.out.resolve(), shards, time=args.time, partition=args.partition, gpus=args.gpus,
                            cpus=args.cpus, mem=args.mem, setup=args.setup)
    except _input_errors() as exc:
        return _fail(exc)
    from synthesis.shards import ArrayLayout, write_layout

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)  # Slurm opens the task logs before the script runs
    script = args.script or (args.out / "synth.sbatch")
    script.write_text(text, encoding="utf-8")
    write_layout(args.out, ArrayLayout(plan=str(args.plan.resolve()), shards=shards, script=str(script.resolve())))
    print(f"wrote {script} ({shards} array tasks). Submit: sbatch {script}")
    print(f"watch: metamers synth progress {args.out}")
    print(f"then merge: metamers synth merge {args.out}/bank {args.out}/shard-*")
    return 0


def _progress(args: argparse.Namespace) -> int:
    """Exit status 0 when every shard has finished, 1 while some have not, 2 on errors."""
    try:
        from synthesis.shards import resubmit_command, shard_progress

        layout, rows = shard_progress(args.out)
    except _input_errors() as exc:
        return _fail(exc)
    rest = [r.index for r in rows if r.state in ("stopped", "not started")]
    if args.json:
        print(json.dumps({"plan": layout.plan, "shards": [{"shard": r.index, "folder": str(r.folder), "jobs_done": r.jobs_done,
                          "jobs": r.jobs, "state": r.state, "writer": r.writer} for r in rows],
                          "resubmit": resubmit_command(layout, rest) if rest else None}, indent=1))
        return 0 if all(r.finished for r in rows) else 1
    done, total = sum(r.jobs_done for r in rows), sum(r.jobs for r in rows)
    print(f"{args.out}: {layout.shards} shards of {layout.plan}; {done} of {total} jobs finished")
    print(f"{'shard':>5}  {'jobs':>9}  state")
    for r in rows:
        print(f"{r.index:>5}  {f'{r.jobs_done}/{r.jobs}':>9}  {r.state}" + (f" ({r.writer})" if r.writer else ""))
    if all(r.finished for r in rows):
        print(f"Every shard has finished. Merge them: metamers synth merge {args.out}/bank {args.out}/shard-*")
        return 0
    if rest:
        print("Shards neither finished nor running (a task still pending in `squeue --me` is not started either).")
        print("Resubmit only these; each skips the jobs it finished:")
        print(f"  {resubmit_command(layout, rest)}")
    return 1


def _merge(args: argparse.Namespace) -> int:
    try:
        from synthesis.merge import merge_banks

        out = merge_banks(args.out, args.shards)
    except _input_errors() as exc:
        return _fail(exc)
    print(f"merged {len(args.shards)} shards into {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from synthesis.bank import BankError, open_bank

    try:
        with open_bank(args.bank) as bank:
            m = bank.manifest
    except BankError as exc:
        return _fail(exc)
    rows = []
    for model in m.models:
        for i, layer in enumerate(model.layers):
            st = [s for s in m.stimuli if s.kind == "metamer" and s.model == model.name and s.layer == layer]
            ok = sum(1 for s in st if s.passed)
            losses = sorted(s.metrics.loss for s in st if s.metrics and s.metrics.loss is not None)
            median = losses[len(losses) // 2] if losses else None
            rows.append({"model": model.name, "layer": layer, "layer_index": i, "passed": ok, "total": len(st),
                         "pass_rate": ok / len(st) if st else None, "median_loss": median})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{m.name}: {sum(1 for s in m.stimuli if s.kind == 'natural')} natural sources")
    print("| model | layer | passed | pass rate | median loss |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        rate = f"{100 * r['pass_rate']:.0f}%" if r["pass_rate"] is not None else "-"
        loss = f"{r['median_loss']:.3g}" if r["median_loss"] is not None else "-"
        print(f"| {r['model']} | {r['layer']} | {r['passed']}/{r['total']} | {rate} | {loss} |")
    return 0
