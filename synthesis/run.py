"""Run a plan into a bank: check everything, write the naturals and null, then synthesize job by job.

Order of work, so that mistakes cost nothing:

1. **Check** (no compute): the plan's schema, models and checkpoints, layer names (unknown ones
   list the valid ones), every source file (unreadable files and wrong shapes are named), ids and
   labels, and that an existing output bank was made by the same plan.
2. **Write** the natural, practice and catch stimuli, the icons and the model entries.
3. **Null** distributions per model and layer (reused when the bank already holds them).
4. **Jobs**, each saved atomically into the manifest when it finishes. A rerun skips finished
   jobs, whose files and results stay as they are; an interrupted job is redone from the start
   and, being seeded, gives the same result.

Final metrics and decisions are computed on the metamer *as saved* (8-bit PNG / 16-bit WAV).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import synthesis
from synthesis import criteria
from synthesis.bank import (
    LOCK,
    MANIFEST,
    BankError,
    BankWriter,
    Category,
    Generator,
    Metrics,
    ModelInfo,
    NullSummary,
    Stimulus,
    writer_lock,
)
from synthesis.features import FeatureExtractor, LayerError
from synthesis.models.registry import LoadedModel, ModelError, load_model
from synthesis.optimize import Problem, Settings, initial_signal, normalized_l2, prepare_device, preset, source_seed, synthesize
from synthesis.plan import Job, LoadedPlan, PlanError, SignalSource, expand_jobs, fingerprint, load_plan, metamer_id, shard_jobs
from synthesis.signals import Signal, SignalError, check_fits, check_ids, encode, from_arrays, import_factory, load_folder, wav_rate_problem


@dataclass
class Prepared:
    """A checked plan, ready to run: models loaded, signals decoded, jobs expanded."""

    lp: LoadedPlan
    models: dict[str, LoadedModel]
    extractors: dict[str, FeatureExtractor]
    layer_order: dict[str, list[str]]
    sources: list[Signal]
    practice: list[Signal]
    catch: list[Signal]
    icons: dict[str, bytes]
    categories: list[Category]
    settings: Settings
    jobs: list[Job]
    fingerprint: str

    @property
    def plan(self) -> Any:
        return self.lp.plan


@dataclass
class RunSummary:
    out: Path
    jobs_total: int
    jobs_skipped: int
    jobs_run: int
    metamers: int
    seconds: float
    pass_rates: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


def _signals(lp: LoadedPlan, src: SignalSource, sample_rate: int | None, prefix: str, what: str) -> list[Signal]:
    modality = lp.plan.modality
    if src.folder is not None:
        return load_folder(lp.resolve(src.folder), modality, prefix)
    assert src.factory is not None
    fn = import_factory(src.factory)
    try:
        items = fn(**src.kwargs)
    except TypeError as exc:
        raise SignalError(f"{what} factory {src.factory}: {exc}") from exc
    return from_arrays(items, modality, sample_rate, src.factory, prefix)


def _icons(lp: LoadedPlan, src: SignalSource) -> dict[str, bytes]:
    if src.folder is not None:
        folder = lp.resolve(src.folder)
        if not folder.is_dir():
            raise SignalError(f"icons folder {folder} does not exist")
        out = {}
        for f in sorted(folder.glob("*.png")):
            data = f.read_bytes()
            from synthesis.signals import decode

            decode(data, ".png", str(f))
            out[f.stem] = data
        return out
    assert src.factory is not None
    made = import_factory(src.factory)(**src.kwargs)
    return {str(k): encode(torch.as_tensor(np.asarray(v, dtype=np.float32)), "image")[0] for k, v in dict(made).items()}


def prepare(plan_path: str | Path, *, shard: tuple[int, int] | None = None) -> Prepared:
    """Step 1: check the whole plan without synthesizing. Raises PlanError listing problems."""
    lp = load_plan(plan_path)
    plan = lp.plan
    problems: list[str] = []
    models: dict[str, LoadedModel] = {}
    for spec in plan.models:
        try:
            ckpt = str(lp.resolve(spec.checkpoint)) if spec.checkpoint else None
            options = dict(spec.options)
            if isinstance(options.get("category_map"), str):  # a file, relative to the plan like every path
                options["category_map"] = str(lp.resolve(options["category_map"]))
            m = load_model(spec.model, ckpt, **options)
        except (ModelError, TypeError) as exc:
            problems.append(f"model {spec.name}: {exc}")
            continue
        if m.input.kind != plan.modality:
            problems.append(f"model {spec.name} takes {m.input.kind} input but the plan's modality is {plan.modality}")
        models[spec.name] = m
    extractors: dict[str, FeatureExtractor] = {}
    layer_order: dict[str, list[str]] = {}
    for spec in plan.models:
        m = models.get(spec.name)
        if m is None:
            continue
        try:
            fe = FeatureExtractor(m.module, spec.layers, torch.zeros(1, *m.input_shape), prefix=m.layer_prefix, fake_relu=plan.synthesis.fake_relu)
        except LayerError as exc:
            problems.append(f"model {spec.name}: {exc}")
            continue
        extractors[spec.name] = fe
        layer_order[spec.name] = list(fe.layers)
    sample_rate = next((m.input.sample_rate for m in models.values() if m.input.sample_rate), None)
    sources: list[Signal] = []
    extras: dict[str, list[Signal]] = {"practice": [], "catch": []}
    icons: dict[str, bytes] = {}
    try:
        sources = _signals(lp, plan.sources, sample_rate, "", "sources")
        for kind in ("practice", "catch"):
            src = getattr(plan, kind)
            if src is not None:
                extras[kind] = _signals(lp, src, sample_rate, f"{kind}-", kind)
        if plan.icons is not None:
            icons = _icons(lp, plan.icons)
    except SignalError as exc:
        problems.append(str(exc))
    if plan.categories is not None:
        categories = [Category(id=c.id, label=c.label) for c in plan.categories]
    elif models:
        first = models[plan.models[0].name]
        categories = [Category(id=c, label=c) for c in first.classes]
    else:
        categories = []
    cat_ids = {c.id for c in categories}
    all_signals = sources + extras["practice"] + extras["catch"]
    problems += check_ids(all_signals, "signal")
    for s in all_signals:
        if s.label not in cat_ids:
            problems.append(f"{s.origin}: label {s.label!r} is not a category ({', '.join(sorted(cat_ids))})")
        for name, m in models.items():
            why = check_fits(s, m.input, name) or wav_rate_problem(s, m.input)
            if why:
                problems.append(why)
                break
    for cid in icons:
        if cid not in cat_ids:
            problems.append(f"icon {cid!r} is not a category id")
    if not sources:
        problems.append("no natural sources")
    try:
        settings = preset(plan.synthesis.preset, **plan.synthesis.optimizer_overrides())
    except ValueError as exc:
        problems.append(f"synthesis: {exc}")
        settings = preset("paper")
    if plan.null.source == "model":
        for name, m in models.items():
            if m.natural_sampler is None:
                problems.append(f"null: model {name} has no sampler of its training distribution; use null.source: sources or a folder")
    if problems:
        raise PlanError(problems, str(plan_path))
    fp = fingerprint(plan.core(), {
        "engine": synthesis.__version__,
        "checkpoints": {n: m.checkpoint_sha256 for n, m in models.items()},
        "sources": {s.id: _sha(s.data) for s in all_signals},
        "icons": {k: _sha(v) for k, v in icons.items()},
        "layer_order": layer_order,
    })
    jobs = shard_jobs(expand_jobs(plan, [s.id for s in sources], layer_order), shard)
    return Prepared(lp, models, extractors, layer_order, sources, extras["practice"], extras["catch"], icons, categories, settings, jobs, fp)


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _open_writer(p: Prepared, out: Path) -> BankWriter:
    plan = p.plan
    if (out / MANIFEST).exists():
        try:
            w = BankWriter.from_existing(out)
        except BankError as exc:
            raise PlanError([f"{out} holds a manifest that cannot be read: {exc}"]) from exc
        old = w.generator.settings.get("fingerprint")
        if old != p.fingerprint:
            raise PlanError([f"{out} was built from a different plan, model or source set (fingerprint {str(old)[:12]}… ≠ {p.fingerprint[:12]}…); "
                             "write to a new --out folder"])
        return w
    if out.exists() and any(f.name != LOCK for f in out.iterdir()):
        raise PlanError([f"{out} exists, is not empty and holds no bank manifest; choose an empty or new folder"])
    generator = Generator(
        package="metamer-lab",
        version=synthesis.__version__,
        settings={"fingerprint": p.fingerprint, "plan": plan.core(), "optimizer": p.settings.to_dict(), "torch": torch.__version__},
        seed=plan.seed,
    )
    return BankWriter(out, name=plan.name, modality=plan.modality, categories=[], generator=generator)


def _write_static(p: Prepared, w: BankWriter) -> None:
    """Categories, icons, models and the natural/practice/catch stimuli (idempotent)."""
    cats = []
    for c in p.categories:
        if c.id in p.icons:
            rel = f"icons/{c.id}.png"
            cats.append(Category(id=c.id, label=c.label, icon=rel, icon_sha256=w.write_file(rel, p.icons[c.id])))
        else:
            cats.append(c)
    w.categories = cats
    for spec in p.plan.models:
        m = p.models[spec.name]
        w.add_model(ModelInfo(name=spec.name, checkpoint_sha256=m.checkpoint_sha256, layers=p.layer_order[spec.name], input=m.input,
                              description=m.description, front_end=m.front_end))
    for kind, signals in (("natural", p.sources), ("practice", p.practice), ("catch", p.catch)):
        folder = {"natural": "natural", "practice": "practice", "catch": "catch"}[kind]
        for s in signals:
            rel = f"{folder}/{s.id.removeprefix(kind + '-')}{s.ext}"
            existing = w.stimuli.get(s.id)
            if existing is not None and existing.sha256 == _sha(s.data) and (w.root / existing.file).is_file():
                continue
            w.add_stimulus(Stimulus(id=s.id, kind=kind, label=s.label, file=rel, sha256="0" * 64), s.data)  # type: ignore[arg-type]


def _batched_acts(fe: FeatureExtractor, x: torch.Tensor, device: torch.device, batch: int = 64) -> dict[str, np.ndarray]:
    outs: dict[str, list[np.ndarray]] = {la: [] for la in fe.layers}
    with torch.no_grad():
        for i in range(0, len(x), batch):
            acts = fe(x[i : i + batch].to(device))
            for la in fe.layers:
                outs[la].append(acts[la].detach().float().cpu().flatten(1).numpy())
    return {la: np.concatenate(v) for la, v in outs.items()}


def _write_null(p: Prepared, w: BankWriter, device: torch.device, log: Callable[[str], None]) -> None:
    plan = p.plan
    seed = plan.null.seed if plan.null.seed is not None else plan.seed
    if plan.null.reuse:
        _reuse_null(p, w, p.lp.resolve(plan.null.reuse), log)
    for spec in plan.models:
        missing = [la for la in p.layer_order[spec.name] if la not in w.null.get(spec.name, {})]
        if not missing:
            continue
        m = p.models[spec.name]
        if plan.null.source == "model":
            x = m.sample_naturals(plan.null.signals, seed)
            # Quantize like every other signal, so the null compares what a bank could hold.
            x = torch.stack([encode(xi, plan.modality, m.input.sample_rate)[1] for xi in x])
        elif plan.null.source == "sources":
            x = torch.stack([s.x for s in p.sources])
        else:
            x = torch.stack([s.x for s in _signals(p.lp, plan.null.source, m.input.sample_rate, "", "null")])
        log(f"null distribution for {spec.name}: {len(x)} natural signals, {plan.null.pairs} pairs per layer")
        acts = _batched_acts(p.extractors[spec.name].subset(missing), x, device)
        for la in missing:
            try:
                dist = criteria.null_distribution(acts[la], plan.null.pairs, seed)
            except ValueError as exc:
                raise PlanError([f"null for {spec.name}/{la}: {exc}"]) from exc
            rel = f"null/{spec.name}/{la}.json"
            sha = w.write_file(rel, dist.histogram_json(spec.name, la))
            w.set_null(spec.name, la, dist.summary(rel, sha))


def _reuse_null(p: Prepared, w: BankWriter, other: Path, log: Callable[[str], None]) -> None:
    """Copy null distributions from another bank where model checkpoint, layer and pair count match."""
    from synthesis.bank import read_manifest

    try:
        m = read_manifest(other)
    except (OSError, BankError) as exc:
        raise PlanError([f"null.reuse: cannot read bank {other}: {exc}"]) from exc
    theirs = {mi.name: mi for mi in m.models}
    for spec in p.plan.models:
        mine = p.models[spec.name]
        info = theirs.get(spec.name)
        if info is None or info.checkpoint_sha256 != mine.checkpoint_sha256:
            continue
        for la in p.layer_order[spec.name]:
            summary = m.null.get(spec.name, {}).get(la)
            if summary is None or la in w.null.get(spec.name, {}):
                continue
            if summary.histogram:
                sha = w.write_file(summary.histogram, (other / summary.histogram).read_bytes())
                summary = summary.model_copy(update={"histogram_sha256": sha})
            w.set_null(spec.name, la, summary)
            log(f"null for {spec.name}/{la} reused from {other} ({summary.n_pairs} pairs)")


def job_done(job: Job, w: BankWriter) -> bool:
    return all(mid in w.stimuli for mid in job.metamer_ids())


def run_job(p: Prepared, job: Job, w: BankWriter, device: torch.device, natural_pred: dict[str, dict[str, str]],
            progress: Callable[[int, int, float], None] | None = None, diagnostics: bool = False) -> list[Stimulus]:
    """Synthesize one job and add its metamers to ``w`` (the caller saves the manifest)."""
    plan = p.plan
    m = p.models[job.model]
    fe = p.extractors[job.model].subset(job.layers)
    by_id = {s.id: s for s in p.sources}
    naturals = torch.stack([by_id[s].x for s in job.sources]).to(device)
    with torch.no_grad():
        targets = fe(naturals)
    rng = m.input.range
    problems = []
    for la in job.layers:
        for i, sid in enumerate(job.sources):
            init = initial_signal(m.input_shape, plan.seed, sid, plan.modality, p.settings, rng)
            problems.append(Problem(metamer_id(sid, job.model, la), la, targets[la][i].detach(), init))
    results = synthesize(fe, problems, p.settings, rng, device=device, job=f"job {job.id}", progress=progress)
    # Quantize exactly as saved, then measure and decide on the saved signal.
    encoded = [encode(r.x, plan.modality, m.input.sample_rate) for r in results]
    xq = torch.stack([e[1] for e in encoded]).to(device)
    with torch.no_grad():
        acts_q = fe(xq)
        preds = m.decide(xq)
    null = w.null.get(job.model, {})
    stims = []
    ext = ".png" if plan.modality == "image" else ".wav"
    for k, (prob, res) in enumerate(zip(problems, results, strict=True)):
        sid = prob.key.split("/", 1)[0]
        la = prob.layer
        a_nat = prob.target.float().cpu().numpy()
        a_met = acts_q[la][k].detach().float().cpu().numpy()
        stats = criteria.compare(a_nat, a_met)
        qloss = float(normalized_l2(acts_q[la][k : k + 1].float().cpu(), prob.target.unsqueeze(0).float().cpu())[0])
        pred_nat = natural_pred[job.model][sid]
        passed, reasons = criteria.judge(stats, null.get(la), preds[k], pred_nat)
        metrics = Metrics(loss=qloss, spearman=stats.spearman, pearson=stats.pearson, snr_db=stats.snr_db,
                          pred_metamer=preds[k], pred_natural=pred_nat, steps=res.steps, seed=source_seed(plan.seed, sid))
        stim = Stimulus(
            id=prob.key, kind="metamer", source=sid, label=by_id[sid].label, file=f"metamers/{job.model}/{la}/{sid}{ext}",
            sha256="0" * 64, model=job.model, layer=la, layer_index=p.layer_order[job.model].index(la),
            metrics=metrics, passed=passed, fail_reasons=reasons,
        )
        stims.append(w.add_stimulus(stim, encoded[k][0]))
        if diagnostics:
            from synthesis.diagnostics import save_diagnostic

            save_diagnostic(w.root / "diagnostics" / job.model / la / f"{sid}.png", natural=by_id[sid].x, metamer=encoded[k][1],
                            losses=res.losses, title=f"{prob.key}: loss {qloss:.3g}, {'passed' if passed else 'FAILED'}",
                            kind=plan.modality, sample_rate=m.input.sample_rate)
    return stims


def run_plan(
    plan_path: str | Path,
    out: str | Path,
    *,
    shard: tuple[int, int] | None = None,
    device: str | None = None,
    show_progress: bool = True,
    diagnostics: bool | None = None,
    max_jobs: int | None = None,
    log: Callable[[str], None] | None = None,
) -> RunSummary:
    """Run (or resume) a plan into the bank folder ``out``. ``max_jobs`` stops after that many jobs
    (for tests and trial runs; a rerun goes on where it stopped)."""
    t0 = time.perf_counter()
    say = log or (lambda msg: print(msg, file=sys.stderr))
    p = prepare(plan_path, shard=shard)
    plan = p.plan
    dev = prepare_device(device or plan.device)
    for name, fe in p.extractors.items():
        fe.to(dev, torch.channels_last if dev.type == "cuda" and plan.modality == "image" else None)
        if plan.synthesis.compile:
            fe.compile()
        not_relu = [la for la in fe.layers if plan.synthesis.fake_relu and la not in fe.fake_relu_layers]
        if not_relu:
            say(f"note: {name}: layers {', '.join(not_relu)} are not ReLU outputs; the fake ReLU does not apply there")
    with writer_lock(out) as outp:  # one writer per bank folder
        return _run_locked(p, outp, dev, say, t0, show_progress=show_progress, diagnostics=diagnostics, max_jobs=max_jobs)


def _run_locked(p: Prepared, outp: Path, dev: torch.device, say: Callable[[str], None], t0: float, *, show_progress: bool,
                diagnostics: bool | None, max_jobs: int | None) -> RunSummary:
    """The writing part of :func:`run_plan`, under the bank folder's writer lock."""
    plan = p.plan
    w = _open_writer(p, outp)
    _write_static(p, w)
    w.save()
    _write_null(p, w, dev, say)
    w.save()
    natural_pred: dict[str, dict[str, str]] = {}
    xs = torch.stack([s.x for s in p.sources])
    for name, m in p.models.items():
        m.module.to(dev)
        preds: list[str] = []
        for i in range(0, len(xs), 64):
            preds += m.decide(xs[i : i + 64].to(dev))
        natural_pred[name] = dict(zip([s.id for s in p.sources], preds, strict=True))
    pending = [j for j in p.jobs if not job_done(j, w)]
    skipped = len(p.jobs) - len(pending)
    if skipped:
        say(f"resuming: {skipped} of {len(p.jobs)} jobs already finished in {outp}")
    if max_jobs is not None:
        pending = pending[:max_jobs]
    use_diag = plan.diagnostics if diagnostics is None else diagnostics
    total_metamers = sum(len(j.metamer_ids()) for j in pending)
    from tqdm.auto import tqdm

    # On a terminal: a bar for the whole run (metamers, with ETA) and one per job (steps). In a log
    # file, only the run's bar, updated rarely, so that logs stay readable.
    tty = sys.stderr.isatty()
    overall = tqdm(total=total_metamers, desc="metamers", unit="metamer", disable=not show_progress, position=0, dynamic_ncols=True,
                   mininterval=0.5 if tty else 30.0)
    finished = 0
    try:
        for job in pending:
            bar = tqdm(total=p.settings.max_steps, desc=job.id, unit="step", leave=False, disable=not (show_progress and tty), position=1,
                       dynamic_ncols=True, mininterval=0.2)

            def tick(n: int, active: int, loss: float, bar: Any = bar) -> None:
                bar.update(n)
                bar.set_postfix(active=active, loss=f"{loss:.3g}", refresh=False)

            try:
                run_job(p, job, w, dev, natural_pred, tick, use_diag)
            finally:
                bar.close()
            w.save()
            finished += len(job.metamer_ids())
            overall.update(len(job.metamer_ids()))
            if not tty:  # a log (a Slurm task's, say): one line per job, with or without the bar
                say(f"finished {job.id} ({finished}/{total_metamers} metamers, {time.perf_counter() - t0:.0f} s)")
    finally:
        overall.close()
    rates = criteria.pass_rates([(s.model or "", s.layer or "", bool(s.passed)) for s in w.stimuli.values() if s.kind == "metamer"])
    return RunSummary(outp, len(p.jobs), skipped, len(pending), total_metamers, time.perf_counter() - t0, rates)


__all__ = ["Prepared", "RunSummary", "job_done", "prepare", "run_job", "run_plan", "NullSummary"]
