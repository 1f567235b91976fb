"""The load benchmark: phases, measurements and the report.

1. **Open loop** (the target): ``participants`` simulated participants arrive evenly over
   ``ramp_s`` seconds and each answers a trial every ``interval_s`` seconds (±25 %), fetching
   each stimulus once, as the browser runner does. Latencies of the save and state endpoints
   are reported over the whole run and over the steady window in which every participant is in
   the session at once.
2. **Saturation**: ``sat_clients`` participants answer as fast as the server confirms (no
   waiting), which gives the most saves per second the app sustains.
3. **Ceiling**: the same number of connections post to a bare FastAPI endpoint
   (``benchmarks.load.bare``) under the same uvicorn settings; the ratio of 2. to 3. is printed.
4. **Audit**: every answer the clients saw confirmed must be in the database exactly once,
   with the payload they sent.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load import stack
from benchmarks.load.participant import Plan, Recorder, run_participant
from benchmarks.load.verify import Audit, audit
from benchmarks.load.wire import Browser


@dataclass
class Config:
    participants: int = 1000
    interval_s: float = 2.0
    ramp_s: float = 60.0
    sources: int = 60
    workers: int = 2
    pool_size: int = 10
    max_overflow: int = 5
    sat_clients: int = 64
    ceiling_s: float = 8.0
    pg: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    seed: int = 1


def pct(values: Any, q: float) -> float:
    a = np.array(values, dtype=float)
    return float(np.percentile(a, q) * 1000) if a.size else float("nan")  # ms


def summary(values: Any) -> dict[str, float]:
    return {"n": len(values), "p50_ms": pct(values, 50), "p95_ms": pct(values, 95), "p99_ms": pct(values, 99), "max_ms": pct(values, 100)}


def _cpu_of_tree(root_pid: int) -> float:
    """User + system CPU seconds of a process and its children (uvicorn and its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if pid == root_pid or ppid == root_pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _cpu_of_command(name: str) -> float:
    """CPU seconds of every process whose command name is ``name`` (e.g. all PostgreSQL backends;
    on a shared server this includes other clients' work), plus the CPU of its exited children
    (the postmaster reaps backends whose connections closed, e.g. a pool's overflow)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        if comm == name or comm.startswith(name + ":"):
            fields = raw.rsplit(")", 1)[1].split()
            total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick  # utime, stime, cutime, cstime
    return total


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def open_loop(cfg: Config, port: int, slug: str, rec: Recorder) -> dict[str, Any]:
    plan = Plan("127.0.0.1", port, slug, interval_s=cfg.interval_s)
    gap = cfg.ramp_s / max(1, cfg.participants)
    t0 = time.perf_counter()
    tasks = []
    sampler_stop = asyncio.Event()

    async def sample() -> None:
        while not sampler_stop.is_set():
            rec.active_samples.append((time.perf_counter() - t0, rec.active))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(cfg.participants):
        delay = start + i * gap - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(run_participant(plan, rec, f"L{i:06d}")))
    # A participant retries forever, as the runner does; the benchmark does not wait forever.
    n_trials = 12 + cfg.sources
    budget = cfg.ramp_s + n_trials * cfg.interval_s * 1.5 + 120
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, budget - (time.perf_counter() - t0)))
    for t in pending:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    sampler_stop.set()
    await sampler
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    elapsed = time.perf_counter() - t0
    full = [t for t, n in rec.active_samples if n >= 0.95 * cfg.participants]
    window = (t0 + full[0], t0 + full[-1]) if full else None
    return {"elapsed_s": elapsed, "failures": failures[:5], "n_failures": len(failures), "steady_window": window}


async def saturate(cfg: Config, port: int, slug: str, rec: Recorder) -> dict[str, Any]:
    plan = Plan("127.0.0.1", port, slug, interval_s=0.0, fetch_media=False)
    n0 = len(rec.save_done_at)
    tasks = [asyncio.create_task(run_participant(plan, rec, f"S{i:06d}")) for i in range(cfg.sat_clients)]
    _, pending = await asyncio.wait(tasks, timeout=300)
    for t in pending:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    done = np.array(rec.save_done_at[n0:])
    lat = rec.latency["save"][-len(done) :] if len(done) else []
    # Throughput over the middle 80 % of saves, to leave out the staggered start and finish.
    done.sort()
    lo, hi = int(len(done) * 0.1), int(len(done) * 0.9)
    rate = (hi - lo) / (done[hi] - done[lo]) if hi > lo and done[hi] > done[lo] else float("nan")
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    return {"saves_per_s": rate, "saves": int(len(done)), "latency": summary(lat), "n_failures": len(failures), "failures": failures[:3]}


async def ceiling(cfg: Config, port: int) -> dict[str, Any]:
    body = json.dumps({"trial_index": 3, "answer": "7", "rt_ms": 612.5, "shown_at": 1.7e12, "responded_at": 1.7e12, "durations": {"stimulus_ms": 300.1}, "client": {"frame_ms": 16.67}}).encode()
    stop_at = time.perf_counter() + cfg.ceiling_s
    lat: list[float] = []
    done_at: list[float] = []

    async def worker() -> None:
        b = Browser("127.0.0.1", port)
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            r = await b.request("POST", "/bare", body, "Authorization: Bearer x\r\n")
            assert r.status == 201, r.status
            now = time.perf_counter()
            lat.append(now - t)
            done_at.append(now)
        b.close()

    await asyncio.gather(*(worker() for _ in range(cfg.sat_clients)))
    d = np.sort(np.array(done_at))
    lo, hi = int(len(d) * 0.1), int(len(d) * 0.9)
    return {"requests_per_s": (hi - lo) / (d[hi] - d[lo]), "requests": len(d), "latency": summary(lat)}


class CpuMeter:
    """CPU used since creation by the app (uvicorn and workers), PostgreSQL and this generator."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.t0 = time.perf_counter()
        self.start = self._now()

    def _now(self) -> dict[str, float]:
        return {"app": _cpu_of_tree(self.pid), "postgres": _cpu_of_command("postgres"), "generator": _self_cpu()}

    def seconds(self) -> dict[str, float]:
        now = self._now()
        return {k: now[k] - self.start[k] for k in now}

    def cores(self) -> dict[str, float]:
        dt = time.perf_counter() - self.t0
        return {k: v / dt for k, v in self.seconds().items()}


def run(cfg: Config) -> dict[str, Any]:
    import uvloop

    random.seed(cfg.seed)
    report: dict[str, Any] = {"config": asdict(cfg), "loadavg_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="metamers-load-") as tmp, stack.throwaway_database(cfg.pg) as url:
        work = Path(tmp)
        media = work / "media"
        print(f"[load] database ready; importing a bank with {cfg.sources} sources", flush=True)
        slug = stack.prepare_study(url, media, work, sources=cfg.sources)
        env = stack.server_env(url, media, work, pool_size=cfg.pool_size, max_overflow=cfg.max_overflow)
        rec = Recorder()
        log = work / "uvicorn.log"
        with stack.uvicorn_server("app.asgi:app", workers=cfg.workers, env=env, log=log) as server:
            port, pids = server.port, server.pid
            print(f"[load] app on :{port} with {cfg.workers} workers; {cfg.participants} participants arriving over {cfg.ramp_s:.0f} s", flush=True)
            meter = CpuMeter(pids)
            # The generator's own full garbage collections (its heap holds numpy, the app's models
            # and the bank tools imported above) paused every simulated participant for up to
            # 0.1 s, which the measured latencies then included. Nothing built so far is garbage.
            gc.freeze()
            report["open_loop"] = uvloop.run(open_loop(cfg, port, slug, rec))
            report["open_loop"]["cpu_cores"] = meter.cores()
            n_save = len(rec.latency["save"])
            n_state = len(rec.latency["state"])
            report["open_loop"]["save"] = summary(rec.latency["save"])
            report["open_loop"]["state"] = summary(rec.latency["state"])
            report["open_loop"]["media"] = summary(rec.latency["media"])
            report["open_loop"]["enter"] = summary(rec.latency["enter"])
            report["open_loop"]["responses_per_s"] = n_save / report["open_loop"]["elapsed_s"]
            report["open_loop"]["max_active"] = max((n for _, n in rec.active_samples), default=0)
            w = report["open_loop"].pop("steady_window")
            if w:
                done = np.array(rec.save_done_at)
                mask = (done >= w[0]) & (done <= w[1])
                report["open_loop"]["steady"] = {
                    "seconds": w[1] - w[0],
                    "responses_per_s": float(mask.sum() / (w[1] - w[0])) if w[1] > w[0] else float("nan"),
                    "save": summary(np.array(rec.latency["save"])[mask]),
                }
            report["open_loop"]["lag"] = summary(rec.lag)
            report["open_loop"]["retries"] = rec.retries
            report["open_loop"]["network_errors"] = dict(rec.network_errors)
            report["open_loop"]["statuses"] = {f"{k} {s}": n for (k, s), n in sorted(rec.statuses.items())}
            print("[load] open loop done; saturating the save endpoint", flush=True)
            meter = CpuMeter(pids)
            n0 = len(rec.latency["save"])
            report["saturation"] = uvloop.run(saturate(cfg, port, slug, rec))
            used = meter.seconds()
            n_sat = max(1, len(rec.latency["save"]) - n0)
            report["saturation"]["cpu_ms_per_save"] = {k: v / n_sat * 1000 for k, v in used.items()}
            assert len(rec.latency["save"]) >= n_save and len(rec.latency["state"]) >= n_state
        with stack.uvicorn_server("benchmarks.load.bare:app", workers=cfg.workers, env=env, log=log) as server:
            print("[load] measuring the bare-endpoint ceiling", flush=True)
            report["ceiling"] = uvloop.run(ceiling(cfg, server.port))
        report["ceiling"]["ratio"] = report["saturation"]["saves_per_s"] / report["ceiling"]["requests_per_s"]
        print("[load] auditing the database", flush=True)
        a: Audit = audit(url, rec.confirmed, rec.attempted)
        report["audit"] = {**asdict(a), "ok": a.ok, "refused": rec.refused[:5], "n_refused": len(rec.refused)}
        report["completed_by_clients"] = rec.completed
        report["participants"] = cfg.participants + cfg.sat_clients
        text = log.read_text()
        report["server_tracebacks"] = text.count("Traceback")
        # The last line of each traceback (the exception), counted, for the report.
        last_lines: dict[str, int] = {}
        for block in text.split("Traceback (most recent call last):")[1:]:
            lines = [ln for ln in block.strip().splitlines() if ln and not ln.startswith(" ")]
            if lines:
                last_lines[lines[-1][:200]] = last_lines.get(lines[-1][:200], 0) + 1
        report["server_errors"] = last_lines
    report["loadavg_after"] = os.getloadavg()
    return report


def format_report(r: dict[str, Any]) -> str:
    ol, sat, ceil, au = r["open_loop"], r["saturation"], r["ceiling"], r["audit"]
    cfg = r["config"]

    def lat(s: dict[str, float]) -> str:
        return f"p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms (n={s['n']})"

    lines = [
        f"Load benchmark: {cfg['participants']} participants, one answer every {cfg['interval_s']} s each, "
        f"{cfg['workers']} uvicorn workers, PostgreSQL; load average {r['loadavg_before'][0]:.1f} before, {r['loadavg_after'][0]:.1f} after",
        f"  open loop     {ol['responses_per_s']:.0f} responses/s over {ol['elapsed_s']:.0f} s (peak {ol['max_active']} in session at once)",
    ]
    if "steady" in ol:
        st = ol["steady"]
        lines.append(f"  steady        {st['responses_per_s']:.0f} responses/s for {st['seconds']:.0f} s with everyone in session; save {lat(st['save'])}")
    lines += [
        f"  save          {lat(ol['save'])}",
        f"  state         {lat(ol['state'])}",
        f"  media         {lat(ol['media'])}",
        f"  enter         {lat(ol['enter'])}",
        f"  CPU (cores)   app {ol['cpu_cores']['app']:.2f}, PostgreSQL {ol['cpu_cores']['postgres']:.2f} (all clients of the server), "
        f"generator {ol['cpu_cores']['generator']:.2f}; "
        + (f"answers behind schedule: {ol['lag']['n']}, p99 {ol['lag']['p99_ms']:.0f} ms" if ol["lag"]["n"] else "no answer left behind schedule"),
        f"  retries {ol['retries']}, network errors {sum(ol['network_errors'].values())}, session failures {ol['n_failures']}",
        f"  saturation    {sat['saves_per_s']:.0f} saves/s with {cfg['sat_clients']} clients (save {lat(sat['latency'])}); "
        f"CPU per save: app {sat['cpu_ms_per_save']['app']:.2f} ms, PostgreSQL {sat['cpu_ms_per_save']['postgres']:.2f} ms",
        f"  ceiling       {ceil['requests_per_s']:.0f} requests/s on a bare FastAPI endpoint; ratio {ceil['ratio']:.2f}",
        f"  audit         confirmed {au['confirmed']}, stored {au['stored']}, lost {au['lost']}, duplicated {au['duplicated']}, "
        f"mismatched {au['mismatched']}, unexpected {au['unexpected']}, refused {au['n_refused']}, "
        f"stored but unconfirmed when the run stopped {au['unconfirmed']}; "
        f"completed {au['completed']}/{r['participants']}; server tracebacks {r['server_tracebacks']}",
        f"  verdict       save p99 {'<' if ol['save']['p99_ms'] < 200 else '>='} 200 ms; "
        f"{'no' if au['ok'] else 'SOME'} lost, duplicated or altered responses; "
        f"{ol['n_failures'] + sat['n_failures']} sessions unfinished at the time limit",
    ]
    return "\n".join(lines)
