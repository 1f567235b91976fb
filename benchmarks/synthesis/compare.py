"""Synthesis throughput on the CPU: this engine vs one metamer at a time vs plenoptic, in one run.

The same job set (model, layers, natural sources, initial noise, step budget) is solved three ways:

1. **one at a time** — the paper's way: batch of 1, full forward pass, the fixed schedule of
   normalized-gradient steps (8 rounds, step halved each round), last iterate kept;
2. **this engine** — all sources of a layer in one batch, forward pass truncated at the layer,
   every example leaving its rounds on its own plateau, best iterate kept;
3. **plenoptic** ``Metamer`` — one image at a time with its defaults (Adam, MSE, range penalty,
   its own convergence check), given the model truncated at the layer.

Methods stop at different losses, so speed is compared at equal quality too: the engine is run
again with each example stopping as soon as it reaches the loss that the other method reached for
that metamer. Speed is CPU time of one thread (the machine may be shared; wall time is printed too).

Every final signal is scored the same way: the normalized L2 loss ‖A(x) − A₀‖/‖A₀‖ at its layer.
plenoptic runs in its own virtual environment (.bench-venv, created on first use with
``pip install plenoptic==2.1.1``); it is never a dependency of the project.

Usage: python -m benchmarks.synthesis [--jobset digits] [--threads 1] [--no-plenoptic]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.synthesis.jobsets import JobSet, discover, quick
from synthesis.features import FeatureExtractor
from synthesis.optimize import Problem, initial_signal, normalized_l2, synthesize

ROOT = Path(__file__).resolve().parents[2]
BENCH_VENV = ROOT / ".bench-venv"
PLENOPTIC = "plenoptic==2.1.1"


def losses_at(js: JobSet, layer: str, xs: torch.Tensor) -> list[float]:
    """The common score: normalized L2 loss of each signal at ``layer`` against its natural source."""
    m = js.model
    fe = FeatureExtractor(m.module, [layer], torch.zeros(1, *m.input_shape), prefix=m.layer_prefix)
    with torch.no_grad():
        return normalized_l2(fe(xs)[layer], fe(js.sources)[layer]).tolist()


Run = tuple[float, float, dict[str, torch.Tensor], dict[str, list[int]]]  # wall s, CPU s, signals, steps


def one_at_a_time(js: JobSet) -> Run:
    """Reference-style synthesis: batch 1, full forward (hook at the layer), fixed schedule, last iterate."""
    m = js.model
    s = js.settings
    lo, hi = m.input.range
    out: dict[str, torch.Tensor] = {}
    steps: dict[str, list[int]] = {}
    module = m.module
    t0, c0 = time.perf_counter(), time.process_time()
    for layer in js.layers:
        captured: dict[str, torch.Tensor] = {}
        handle = module.get_submodule(m.layer_prefix + layer).register_forward_hook(lambda _m, _i, o: captured.__setitem__("a", o))
        xs = []
        for i, sid in enumerate(js.source_ids):
            with torch.no_grad():
                module(js.sources[i : i + 1])
                target = captured["a"].detach()
            x = initial_signal(m.input_shape, js.seed, sid, m.input.kind, s, m.input.range).unsqueeze(0)
            for r in range(s.rounds):
                lr = s.lr * s.lr_decay**r
                for _ in range(s.round_steps):
                    x.requires_grad_(True)
                    module(x)  # the whole model, as the reference code runs it
                    loss = normalized_l2(captured["a"], target).sum()
                    (g,) = torch.autograd.grad(loss, x)
                    x = (x.detach() - lr * g / g.norm().clamp_min(1e-30)).clamp(lo, hi)
            xs.append(x.detach()[0])
        handle.remove()
        out[layer] = torch.stack(xs)
        steps[layer] = [s.max_steps] * len(xs)
    return time.perf_counter() - t0, time.process_time() - c0, out, steps


def engine(js: JobSet, stop_loss: dict[str, list[float]] | None = None) -> Run:
    """This engine: one batched, truncated job per layer with per-example stopping.

    With ``stop_loss`` (per layer, per source), each example also stops as soon as it reaches that
    loss: the time this engine needs to match another method's result, metamer by metamer.
    """
    m = js.model
    out: dict[str, torch.Tensor] = {}
    steps: dict[str, list[int]] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for layer in js.layers:
        fe = FeatureExtractor(m.module, [layer], torch.zeros(1, *m.input_shape), prefix=m.layer_prefix, fake_relu=js.settings.fake_relu)
        with torch.no_grad():
            targets = fe(js.sources)[layer]
        problems = [
            Problem(f"{sid}/{layer}", layer, targets[i], initial_signal(m.input_shape, js.seed, sid, m.input.kind, js.settings, m.input.range),
                    stop_loss=stop_loss[layer][i] if stop_loss else None)
            for i, sid in enumerate(js.source_ids)
        ]
        res = synthesize(fe, problems, js.settings, m.input.range, record_losses=False)
        out[layer] = torch.stack([r.x for r in res])
        steps[layer] = [r.steps for r in res]
    return time.perf_counter() - t0, time.process_time() - c0, out, steps


def ensure_plenoptic_venv() -> Path | None:
    """Create .bench-venv (seeing this venv's packages) with plenoptic installed; None if impossible."""
    py = BENCH_VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import plenoptic"], capture_output=True).returncode == 0:
        return py
    print(f"creating {BENCH_VENV} with {PLENOPTIC} (once)...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                      capture_output=True, text=True, check=True).stdout.strip())
        # The benchmark venv sees this environment's torch and the project through a .pth hook.
        (purelib / "_metamer_lab_venv.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
        subprocess.run([str(py), "-m", "pip", "install", "-q", PLENOPTIC], check=True)
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"cannot set up plenoptic ({exc}); skipping it", file=sys.stderr)
        return None
    return py


def plenoptic(js: JobSet, threads: int, is_quick: bool = False) -> Run | None:
    py = ensure_plenoptic_venv()
    if py is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plenoptic.pt"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1"}
        proc = subprocess.run([str(py), "-m", "benchmarks.synthesis.plenoptic_worker", js.name, str(out), str(threads)] + (["quick"] if is_quick else []), cwd=ROOT, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"plenoptic run failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return None
        data = torch.load(out, weights_only=False)
    return data["seconds"], data["cpu"], data["metamers"], data["steps"]


def _median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.synthesis", description=__doc__.split("\n\n")[0])
    p.add_argument("--jobset", default="digits", help="job set (see benchmarks/synthesis/jobsets.py)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads, the same for every method")
    p.add_argument("--no-plenoptic", action="store_true")
    p.add_argument("--quick", action="store_true", help="a seconds-long smoke test (3 sources, short rounds), not a measurement")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    jobsets = discover()
    if args.jobset not in jobsets:
        print(f"unknown job set {args.jobset!r}; available: {', '.join(jobsets)}", file=sys.stderr)
        return 2
    js = jobsets[args.jobset]()
    if args.quick:
        js = quick(js)
    s = js.settings
    print(f"job set {js.name}: {len(js.source_ids)} sources × {len(js.layers)} layers = {js.n_metamers} metamers; "
          f"budget {s.rounds} rounds × {s.round_steps} steps; {args.threads} CPU thread(s)", flush=True)
    runs: dict[str, Run] = {}
    for name, fn in (("engine (batched, truncated)", lambda: engine(js)), ("one at a time (paper)", lambda: one_at_a_time(js))):
        print(f"running {name}...", flush=True)
        runs[name] = fn()
    if not args.no_plenoptic:
        print("running plenoptic Metamer...", flush=True)
        r = plenoptic(js, args.threads, args.quick)
        if r is not None:
            runs["plenoptic Metamer"] = r
    eng = "engine (batched, truncated)"
    # Equal-quality throughput: the engine again, each example stopping once it matches the loss
    # that a baseline reached for that same metamer (or at the end of its own schedule).
    matched: dict[str, str] = {}
    for name in [n for n in runs if n != eng]:
        target = {la: losses_at(js, la, runs[name][2][la]) for la in js.layers}
        label = "engine, to " + ("paper loss" if name.startswith("one") else "plenoptic loss")
        print(f"running {label}...", flush=True)
        runs[label] = engine(js, stop_loss=target)
        matched[name] = label
    print()
    print("Speed: metamers per CPU second (1 thread; CPU time, because wall time on a shared machine also counts other")
    print("tenants' load; wall seconds are shown too). Loss: normalized L2 at the layer, mean over sources (median).")
    header = (f"{'method':<28} {'wall s':>7} {'CPU s':>7} {'metamers/CPU s':>14} {'mean steps':>10}  "
              f"final loss per layer: {', '.join(js.layers)}")
    print(header)
    print("-" * len(header))
    summary: dict[str, dict[str, float]] = {}
    for name, (wall, cpu, xs, steps) in runs.items():
        per_layer = {la: losses_at(js, la, xs[la]) for la in js.layers}
        mean_steps = sum(sum(v) for v in steps.values()) / js.n_metamers
        summary[name] = {la: sum(v) / len(v) for la, v in per_layer.items()}
        cells = "  ".join(f"{sum(v) / len(v):.3g} ({_median(v):.3g})" for v in per_layer.values())
        print(f"{name:<28} {wall:>7.1f} {cpu:>7.1f} {js.n_metamers / cpu:>14.2f} {mean_steps:>10.0f}  {cells}")
    print()
    ok = True
    for name, label in matched.items():
        base_cpu = runs[name][1]
        full = base_cpu / runs[eng][1]
        same = base_cpu / runs[label][1]
        higher_full = [la for la in js.layers if summary[eng][la] > summary[name][la]]
        higher_same = [la for la in js.layers if summary[label][la] > summary[name][la]]
        met = (full >= 2.0 and not higher_full) or (same >= 2.0 and not higher_same)
        print(f"engine vs {name}:")
        print(f"  whole schedule:  {full:5.2f}× faster, mean loss " + ("equal or lower at every layer" if not higher_full else "higher at " + ", ".join(higher_full)))
        print(f"  to the same loss: {same:5.2f}× faster, mean loss " + ("equal or lower at every layer" if not higher_same else "higher at " + ", ".join(higher_same)))
        print("  target (≥ 2× at equal or lower loss): " + ("met" if met else "NOT met"))
        ok = ok and met
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
