"""One simulated participant: the same requests, in the same order, as the browser runner
(``static/participant/runner.js``), with the same retry rules as its outbox (``api.js``).

Arrive through the study link, load the state, consent, finish the instructions, then for every
trial fetch its media (once, as a browser cache would) and post the answer on a fixed clock (one
every ``interval_s``), reload the state at the main-part checkpoint, and complete.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from benchmarks.load.wire import Browser, Reply, WireError

KINDS = ("enter", "state", "consent", "save", "media", "complete")


@dataclass
class Recorder:
    """Everything the simulated participants observed. Times are seconds (perf_counter)."""

    latency: dict[str, array] = field(default_factory=lambda: {k: array("d") for k in KINDS})
    # Completion time of each save, to cut out the steady-state window afterwards.
    save_done_at: array = field(default_factory=lambda: array("d"))
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    network_errors: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    refused: list[tuple[str, int, int, str]] = field(default_factory=list)
    # (token, body as sent) of every answer the server confirmed (201 saved or 200 identical
    # retry). Bodies are kept as the bytes sent: tuples of strings and bytes are not tracked by
    # the garbage collector, whereas 150,000 dicts made its full collections pause this process
    # (and so every request in flight) for up to 0.2 s, which the latencies then included.
    confirmed: list[tuple[str, bytes]] = field(default_factory=list)
    # (token, body as sent) of every answer sent at least once, confirmed or not.
    attempted: list[tuple[str, bytes]] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    completed: int = 0
    active: int = 0
    active_samples: list[tuple[float, int]] = field(default_factory=list)
    # How late each answer left relative to its schedule (s): the previous answer's save still
    # in flight (the outbox sends one at a time), or the generator itself falling behind.
    lag: array = field(default_factory=lambda: array("d"))


def retryable(status: int) -> bool:
    """The outbox's rule (api.js ``isRetryable``): 5xx, 429 and 408 are retried."""
    return status >= 500 or status in (429, 408)


def backoff_s(attempt: int) -> float:
    """api.js ``backoff``: 0.5 s doubling to at most 15 s, jittered to [half, full]."""
    base = min(15.0, 0.5 * 2 ** min(attempt - 1, 5))
    return base / 2 + random.random() * base / 2


async def persistent(rec: Recorder, browser: Browser, kind: str, method: str, path: str, body: bytes | None = None, headers: str = "") -> Reply:
    """Send until an HTTP answer that is not retryable arrives (like ``Api.persistent``)."""
    attempt = 0
    while True:
        t0 = time.perf_counter()
        try:
            reply = await browser.request(method, path, body, headers)
        except WireError as exc:
            rec.network_errors[f"{kind}: {str(exc)[:60]}"] += 1
        else:
            rec.statuses[(kind, reply.status)] += 1
            if not retryable(reply.status):
                rec.latency[kind].append(time.perf_counter() - t0)
                return reply
        attempt += 1
        rec.retries += 1
        await asyncio.sleep(backoff_s(attempt))


@dataclass
class Plan:
    host: str
    port: int
    slug: str
    interval_s: float = 2.0  # one answer every interval_s per participant
    jitter: float = 0.25  # answer times vary by ±jitter × interval_s
    fetch_media: bool = True


TOKEN = re.compile(r"#t=([A-Za-z0-9_-]+)$")


async def run_participant(plan: Plan, rec: Recorder, pid: str) -> None:
    browser = Browser(plan.host, plan.port)
    rec.active += 1
    try:
        await _session(plan, rec, browser, pid)
    finally:
        rec.active -= 1
        browser.close()


async def _session(plan: Plan, rec: Recorder, browser: Browser, pid: str) -> None:
    loop = asyncio.get_running_loop()
    link = f"/e/{plan.slug}?PROLIFIC_PID={pid}&STUDY_ID=load&SESSION_ID=s-{pid}"
    reply = await persistent(rec, browser, "enter", "GET", link)
    m = TOKEN.search(reply.headers.get("location", "")) if reply.status == 303 else None
    if m is None:
        raise RuntimeError(f"study link answered {reply.status}: {reply.body[:200]!r}")
    token = m.group(1)
    rec.tokens.append(token)
    auth = f"Authorization: Bearer {token}\r\nAccept: application/json\r\n"

    async def state() -> dict[str, Any]:
        r = await persistent(rec, browser, "state", "GET", "/api/session", None, auth)
        if r.status != 200:
            raise RuntimeError(f"state answered {r.status}: {r.body[:200]!r}")
        return json.loads(r.body)

    st = await state()
    categories = [c["id"] for c in st["experiment"]["categories"]]
    next_at = loop.time() + plan.interval_s * random.uniform(0.5, 1.0)
    await asyncio.sleep(max(0.0, next_at - loop.time()))
    await persistent(rec, browser, "consent", "POST", "/api/session/consent", b'{"agree":true,"browser":{"frame_ms":16.7}}', auth)
    await persistent(rec, browser, "consent", "POST", "/api/session/instructions", b"", auth)
    answered = set(st["answered"])
    seen_media: set[str] = set()
    main_checked = False
    for t in st["trials"]:
        if t["index"] in answered:
            continue
        if t["phase"] in ("main", "catch") and not main_checked:
            main_checked = True
            if (await state())["stage"] == "ended":
                return
        if plan.fetch_media and t["media"] not in seen_media:
            seen_media.add(t["media"])
            await persistent(rec, browser, "media", "GET", t["media"])
        next_at += plan.interval_s * (1 + random.uniform(-plan.jitter, plan.jitter)) if plan.interval_s else 0.0
        delay = next_at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif plan.interval_s:
            rec.lag.append(-delay)
        now_ms = time.time() * 1000
        body = {
            "trial_index": t["index"],
            "answer": t.get("answer") or random.choice(categories),
            "rt_ms": round(random.uniform(300, 1500), 2),
            "shown_at": round(now_ms - 1500, 1),
            "responded_at": round(now_ms, 1),
            "durations": {"fixation_ms": 300.0, "stimulus_ms": 300.1, "mask_ms": 299.9},
            "client": {"frame_ms": 16.67},
        }
        sent = json.dumps(body).encode()
        rec.attempted.append((token, sent))
        r = await persistent(rec, browser, "save", "POST", "/api/session/responses", sent, auth)
        rec.save_done_at.append(time.perf_counter())
        if r.status in (200, 201):
            rec.confirmed.append((token, sent))
            if json.loads(r.body).get("stage") == "ended":
                return
        else:
            rec.refused.append((token, t["index"], r.status, r.body[:200].decode(errors="replace")))
    r = await persistent(rec, browser, "complete", "POST", "/api/session/complete", b"", auth)
    if r.status == 200:
        rec.completed += 1
    else:
        rec.refused.append((token, -1, r.status, r.body[:200].decode(errors="replace")))
