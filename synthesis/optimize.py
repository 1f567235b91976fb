"""The metamer optimizer: many independent metamer problems solved in one batched, truncated pass.

Each :class:`Problem` asks for a signal whose activations at one layer match a target. Problems
are solved together in one batch, yet each is an **independent** problem with its own loss, its
own gradient normalization (or Adam state), its own step-size schedule, its own best iterate and
its own stopping. A finished problem leaves the batch, and when the deepest layer still being
matched gets shallower, the forward pass is truncated earlier. On a CPU that is where the speed
comes from (docs/science.md §8): few problems need the full step budget, and shallow layers cost little.

Presets (docs/science.md §1):

``paper``
    Loss ‖A(x) − A₀‖₂ / ‖A₀‖₂. Each step moves x by ``lr`` along its gradient normalized to unit
    L2 norm (per example), then clamps x to the input range. ``lr`` starts at 1 and is halved over
    ``rounds`` (8) rounds of ``round_steps`` (3000) steps. With ``patience`` set, an example whose
    best loss has not improved (by ``rtol`` relative plus ``atol`` absolute) for ``patience`` steps moves to its next round
    early, and its last round may use every step that its earlier rounds left unused; it stops
    when it plateaus in its last round or when the whole budget (rounds × round_steps) is spent.
    ``patience=None`` gives the fixed published schedule.
``adam``
    Same loss and schedule shape, with a per-example Adam step (lr 0.01 halved per round).

The best iterate (lowest loss) is returned, not the last. Initial noise is N(0.5, 0.05) for
images and N(0, 1e-7) for waveforms, clamped to the range, and is drawn from a generator seeded by
(seed, source id) only, so every layer of a source starts from the same noise and results do not
depend on batch composition or device. On a CPU a seeded run is reproducible bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from synthesis.features import FeatureExtractor


class SynthesisError(RuntimeError):
    """Synthesis cannot go on (for example the loss became NaN); the message names the job."""


@dataclass(frozen=True)
class Settings:
    """Optimizer settings. Build them with :func:`preset`; every field is recorded in the bank."""

    preset: Literal["paper", "adam"] = "paper"
    lr: float = 1.0
    rounds: int = 8
    round_steps: int = 3000
    lr_decay: float = 0.5
    patience: int | None = None  # steps without relative improvement > rtol before the next round
    rtol: float = 1e-3
    # Improvements smaller than this (absolute, in normalized loss) do not count either: a loss that
    # decays geometrically towards 0 always improves relatively, long after the saved 8-bit or
    # 16-bit signal stopped changing.
    atol: float = 1e-5
    target_loss: float | None = None  # stop an example once its loss is at or below this
    init_mean: float | None = None  # None: 0.5 for images, 0 for audio
    init_std: float | None = None  # None: 0.05 for images, 1e-7 for audio
    fake_relu: bool = True
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8

    @property
    def max_steps(self) -> int:
        return self.rounds * self.round_steps

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"preset": "paper", "lr": 1.0, "rounds": 8, "round_steps": 3000, "lr_decay": 0.5},
    "adam": {"preset": "adam", "lr": 0.01, "rounds": 8, "round_steps": 3000, "lr_decay": 0.5},
}


def preset(name: str, **overrides: Any) -> Settings:
    """Settings of a named preset with some fields replaced (``None`` values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(Settings)}
    bad = set(overrides) - fields
    if bad:
        raise ValueError(f"unknown optimizer setting(s) {', '.join(sorted(bad))}; valid: {', '.join(sorted(fields))}")
    values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    if "adam_betas" in values:
        values["adam_betas"] = tuple(values["adam_betas"])
    s = Settings(**values)
    if s.rounds < 1 or s.round_steps < 1:
        raise ValueError("rounds and round_steps must be at least 1")
    if s.lr <= 0:
        raise ValueError("lr must be positive")
    return s


def source_seed(seed: int, source_id: str) -> int:
    """The 63-bit seed of a source's initial noise: a function of (seed, source id) only."""
    digest = hashlib.sha256(f"{int(seed)}\x00{source_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def initial_signal(shape: Sequence[int], seed: int, source_id: str, kind: str, settings: Settings, value_range: tuple[float, float]) -> torch.Tensor:
    """The starting noise for every metamer of ``source_id`` (CPU, float32, clamped to the range)."""
    mean = settings.init_mean if settings.init_mean is not None else (0.5 if kind == "image" else 0.0)
    std = settings.init_std if settings.init_std is not None else (0.05 if kind == "image" else 1e-7)
    g = torch.Generator().manual_seed(source_seed(seed, source_id))
    x = torch.randn(tuple(shape), generator=g, dtype=torch.float32) * std + mean
    return x.clamp_(*value_range)


@dataclass
class Problem:
    """One metamer to make: match ``target`` (the natural signal's activation) at ``layer``."""

    key: str
    layer: str
    target: torch.Tensor  # activation, without batch dimension
    init: torch.Tensor  # starting signal, without batch dimension
    stop_loss: float | None = None  # stop this example at this loss (overrides Settings.target_loss)


@dataclass
class Result:
    key: str
    layer: str
    x: torch.Tensor  # best iterate, CPU float32
    loss: float  # its loss (on the unquantized signal)
    steps: int
    stop_reason: str  # "converged" (plateau through all rounds), "schedule", "target"
    losses: list[float] = field(default_factory=list)  # loss per step


def normalized_l2(act: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """‖act − target‖₂ / ‖target‖₂ per example, over the flattened activation (no batch mixing)."""
    a = act.flatten(1)
    t = target.flatten(1)
    return (a - t).norm(dim=1) / t.norm(dim=1).clamp_min(1e-12)


ProgressFn = Callable[[int, int, float], None]  # (steps done this call, active examples, mean loss)


def synthesize(
    extractor: FeatureExtractor,
    problems: Sequence[Problem],
    settings: Settings,
    value_range: tuple[float, float],
    *,
    device: torch.device | str = "cpu",
    job: str = "job",
    progress: ProgressFn | None = None,
    record_losses: bool = True,
) -> list[Result]:
    """Solve every problem; returns one :class:`Result` per problem, in order.

    All problems run in one batch (several layers allowed). Raises :class:`SynthesisError` naming
    ``job`` and the problem if a loss becomes NaN or infinite.
    """
    if not problems:
        return []
    device = torch.device(device)
    n = len(problems)
    lo, hi = value_range
    layers = list(dict.fromkeys(p.layer for p in problems))
    unknown = [la for la in layers if la not in extractor.layers]
    if unknown:
        raise SynthesisError(f"{job}: the extractor does not read layer(s) {unknown}")
    memory_format = _memory_format(problems[0].init, device)
    # Problem state on the device; per-problem arrays are indexed by original problem number.
    x = torch.stack([p.init for p in problems]).to(device=device, dtype=torch.float32)
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    layer_of = [p.layer for p in problems]
    targets = [p.target.to(device=device, dtype=torch.float32) for p in problems]
    best_x = x.clone()
    best_loss = torch.full((n,), math.inf, device=device)
    round_best = torch.full((n,), math.inf, device=device)
    since = torch.zeros(n, dtype=torch.long, device=device)
    in_round = torch.zeros(n, dtype=torch.long, device=device)
    rnd = torch.zeros(n, dtype=torch.long, device=device)
    steps = torch.zeros(n, dtype=torch.long, device=device)
    reason = ["schedule"] * n
    history: list[tuple[torch.Tensor, torch.Tensor]] = []
    adam_m = torch.zeros_like(x) if settings.preset == "adam" else None
    adam_v = torch.zeros_like(x) if settings.preset == "adam" else None
    no_target = settings.target_loss if settings.target_loss is not None else -math.inf
    stop_at = torch.tensor([p.stop_loss if p.stop_loss is not None else no_target for p in problems], device=device)
    lr_of_round = torch.tensor([settings.lr * settings.lr_decay**r for r in range(settings.rounds)], device=device)

    active = torch.arange(n, device=device)
    xa = x.clone()
    while active.numel() > 0:
        idx_list = active.tolist()
        act_layers = [layer_of[i] for i in idx_list]
        sub = extractor.subset(sorted(set(act_layers)))
        groups: dict[str, list[int]] = {}
        for pos, la in enumerate(act_layers):
            groups.setdefault(la, []).append(pos)
        group_pos = {la: torch.tensor(ps, device=device) for la, ps in groups.items()}
        group_tgt = {la: torch.stack([targets[idx_list[p]] for p in ps]) for la, ps in groups.items()}
        masks = None
        if sub.fake_relu_layers:
            masks = {}
            for la in sub.fake_relu_layers:
                m = torch.zeros(len(idx_list), dtype=torch.bool, device=device)
                if la in group_pos:
                    m[group_pos[la]] = True
                masks[la] = m
        # Run until some example finishes, then compact the batch. One host sync per step.
        while True:
            xa.requires_grad_(True)
            acts = sub(xa, masks)
            if len(group_pos) == 1:
                (la,) = group_pos
                loss = normalized_l2(acts[la], group_tgt[la])
            else:
                loss = torch.empty(xa.shape[0], device=device)
                for la, pos in group_pos.items():
                    loss[pos] = normalized_l2(acts[la][pos], group_tgt[la])
            (grad,) = torch.autograd.grad(loss.sum(), xa)
            xa = xa.detach()
            lossd = loss.detach()
            finite = torch.isfinite(lossd).all()
            if record_losses:
                history.append((active, lossd))
            improved = lossd < best_loss[active]
            best_loss[active] = torch.where(improved, lossd, best_loss[active])
            best_x[active] = torch.where(improved.view(-1, *([1] * (xa.dim() - 1))), xa, best_x[active])
            steps[active] += 1
            better = lossd < round_best[active] * (1.0 - settings.rtol) - settings.atol
            round_best[active] = torch.where(better, lossd, round_best[active])
            since_a = torch.where(better, torch.zeros_like(since[active]), since[active] + 1)
            in_round_a = in_round[active] + 1
            plateau = since_a >= settings.patience if settings.patience is not None else torch.zeros_like(better)
            # The last round has no length of its own: it gets whatever budget earlier rounds left
            # unused (they may end early on a plateau), so early rounds never cost final quality.
            last = rnd[active] >= settings.rounds - 1
            advance = ((in_round_a >= settings.round_steps) & ~last) | plateau
            rnd_a = rnd[active] + advance.long()
            rnd[active] = rnd_a
            in_round[active] = torch.where(advance, torch.zeros_like(in_round_a), in_round_a)
            since[active] = torch.where(advance, torch.zeros_like(since_a), since_a)
            round_best[active] = torch.where(advance, best_loss[active], round_best[active])
            hit = lossd <= stop_at[active]
            done = (rnd_a >= settings.rounds) | (steps[active] >= settings.max_steps) | hit
            bad, any_done, mean_loss = torch.stack([(~finite).float(), done.any().float(), lossd.mean()]).tolist()
            if bad:
                nonfinite = torch.nonzero(~torch.isfinite(lossd)).flatten().tolist()
                keys = [problems[idx_list[i]].key for i in nonfinite]
                raise SynthesisError(f"{job}: loss became NaN or infinite for {', '.join(keys[:5])} "
                                     f"(step {int(steps[active].max())}); check the model and the input range")
            if progress is not None:
                progress(1, len(idx_list), mean_loss)
            # Step the examples that go on (the step of a finishing example is simply dropped).
            lr = lr_of_round[rnd_a.clamp(max=settings.rounds - 1)].view(-1, *([1] * (xa.dim() - 1)))
            if settings.preset == "paper":
                gnorm = grad.flatten(1).norm(dim=1).clamp_min(1e-30).view_as(lr)
                xa = xa - lr * (grad / gnorm)
            else:
                assert adam_m is not None and adam_v is not None
                b1, b2 = settings.adam_betas
                m = adam_m[active] * b1 + grad * (1 - b1)
                v = adam_v[active] * b2 + grad * grad * (1 - b2)
                adam_m[active], adam_v[active] = m, v
                t = steps[active].to(torch.float32).view_as(lr)
                xa = xa - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + settings.adam_eps)
            xa = xa.clamp(lo, hi)
            if any_done:
                hit_l, plateau_l, done_l = hit.tolist(), plateau.tolist(), done.tolist()
                for i, d in enumerate(done_l):
                    if d:
                        reason[idx_list[i]] = "target" if hit_l[i] else ("converged" if plateau_l[i] else "schedule")
                keep = ~done
                active = active[keep]
                xa = xa[keep]
                break
    results = []
    per_problem: list[list[float]] = [[] for _ in range(n)]
    if record_losses:
        for idx, lossd in history:
            for i, v in zip(idx.tolist(), lossd.tolist(), strict=True):
                per_problem[i].append(v)
    bx = best_x.detach().to("cpu", memory_format=torch.contiguous_format).float()
    for i, p in enumerate(problems):
        results.append(Result(p.key, p.layer, bx[i].clone(), float(best_loss[i]), int(steps[i]), reason[i], per_problem[i]))
    return results


def _memory_format(example: torch.Tensor, device: torch.device) -> torch.memory_format | None:
    """Channels-last for image batches on CUDA, where convolutions run faster in it."""
    if device.type == "cuda" and example.dim() == 3:
        return torch.channels_last
    return None


def prepare_device(device: str = "auto", *, tf32: bool = True) -> torch.device:
    """Pick the device (``auto``: CUDA if available, else CPU) and set the fast math it allows.

    TF32 matmuls/convolutions on Ampere+ GPUs are ~an order of magnitude faster than FP32 and the
    10-bit mantissa is far below the precision that 8-bit PNGs and 16-bit WAVs keep.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cpu":
        # Denormal floats slow x86 CPUs by orders of magnitude when losses and gradients get tiny.
        torch.set_flush_denormal(True)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SynthesisError("device cuda was asked for, but torch sees no CUDA GPU")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
    return dev


class Timer:
    """Wall-clock seconds, synchronizing CUDA so that queued kernels are counted."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.start = 0.0

    def __enter__(self) -> Timer:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start
