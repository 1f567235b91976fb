"""Train the demo word model: ``python -m synthesis.train.words [--out demo/models/words.pt]``.

Generates spoken words with eSpeak NG in the training voices, with augmentation (time shifts,
background noise at −10 to +10 dB SNR; :mod:`synthesis.train.word_clips`), trains
:class:`synthesis.models.words.WordNet` on the CPU and evaluates on HELD-OUT voices (variants never
heard in training), clean and in noise. It refuses to save a model below ``--min-accuracy`` (90 %
by default) on clean held-out-voice clips. Writes the weights and a JSON sidecar with the
measured figures.

The cochleagram front end has no trainable parameters, so each clip's cochleagram is computed
once and the CNN is trained on those (the saved model still takes waveforms). Reproducible: fixed
seeds, a fixed number of threads, and each utterance synthesized in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine two spinning threads
# made each training step 3× slower. Must be set before torch loads its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import nn

from synthesis.models.words import DEFAULT_CHECKPOINT, WORDS, WordNet
from synthesis.train.word_clips import (
    HELDOUT_VARIANTS,
    SNR_DB,
    ClipSpec,
    babble_pool,
    random_specs,
    render,
    speak,
    train_variants,
)


@torch.no_grad()
def cochleagrams(net: WordNet, specs: list[ClipSpec], babble: list[np.ndarray], workers: int, chunk: int = 500) -> torch.Tensor:
    """Render the clips of ``specs`` chunk by chunk (to bound memory) and return their cochleagrams."""
    spoken = speak([s.utterance for s in specs], workers)
    out = []
    for i in range(0, len(specs), chunk):
        clips = torch.from_numpy(render(specs[i : i + chunk], babble, spoken=spoken))
        # Small batches: the front end's intermediates (≈2 MB per clip) then stay in cache.
        out += [net.cochleagram(clips[j : j + 10]) for j in range(0, len(clips), 10)]
    return torch.cat(out)


@torch.no_grad()
def predict(net: WordNet, coch: torch.Tensor) -> np.ndarray:
    net.eval()
    return torch.cat([net.body(coch[i : i + 500]).argmax(1) for i in range(0, len(coch), 500)]).numpy()


def mask(coch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment-style masking: one band of up to 8 channels and one stretch of up to 12 bins
    (120 ms) per example are set to the example's mean, so no single cue decides."""
    b, c, t = coch.shape
    out = coch.clone()
    mean = coch.mean(dim=(1, 2))
    f0 = torch.randint(0, c, (b,), generator=gen)
    fw = torch.randint(0, 9, (b,), generator=gen)
    t0 = torch.randint(0, t, (b,), generator=gen)
    tw = torch.randint(0, 13, (b,), generator=gen)
    ch = torch.arange(c).view(1, c, 1)
    tt = torch.arange(t).view(1, 1, t)
    m = ((ch >= f0.view(b, 1, 1)) & (ch < (f0 + fw).view(b, 1, 1))) | ((tt >= t0.view(b, 1, 1)) & (tt < (t0 + tw).view(b, 1, 1)))
    return torch.where(m, mean.view(b, 1, 1), out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m synthesis.train.words", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--train-size", type=int, default=8_000, help="training clips")
    p.add_argument("--clips-per-utterance", type=int, default=2, help="differently augmented clips per synthesized utterance")
    p.add_argument("--test-size", type=int, default=1_000, help="held-out-voice test clips, clean and again in noise")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="speech synthesis processes")
    p.add_argument("--min-accuracy", type=float, default=0.90, help="clean held-out-voice accuracy required to save")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    net = WordNet()
    tv = train_variants()
    print(f"voices: {len(tv)} training variants, {len(HELDOUT_VARIANTS)} held out, 8 accents", flush=True)
    train_specs = random_specs(args.train_size, tv, seed=args.seed, clips_per_utterance=args.clips_per_utterance)
    clean_specs = random_specs(args.test_size, HELDOUT_VARIANTS, seed=args.seed + 1, augment=False)
    noisy_specs = random_specs(args.test_size, HELDOUT_VARIANTS, seed=args.seed + 2, noisy_fraction=1.0)
    n_babble = min(32, max(4, args.train_size // 100))  # sentences mixed into babble noise (32 by default)
    babble_train = babble_pool(tv, seed=args.seed + 3, n=n_babble, workers=args.workers)
    babble_test = babble_pool(HELDOUT_VARIANTS, seed=args.seed + 4, n=n_babble, workers=args.workers)
    print(f"synthesizing and rendering {len(train_specs)} training clips and 2 × {args.test_size} test clips...", flush=True)
    x_train = cochleagrams(net, train_specs, babble_train, args.workers)
    x_clean = cochleagrams(net, clean_specs, babble_test, args.workers)
    x_noisy = cochleagrams(net, noisy_specs, babble_test, args.workers)
    y_train = torch.tensor([s.label for s in train_specs])
    y_clean = np.array([s.label for s in clean_specs])
    y_noisy = np.array([s.label for s in noisy_specs])
    snr = np.array([s.snr_db for s in noisy_specs], dtype=float)
    t_data = time.perf_counter() - t0
    n_utt = len({s.utterance for s in train_specs + clean_specs + noisy_specs})
    print(f"{n_utt} utterances synthesized, {len(train_specs) + 2 * args.test_size} clips and cochleagrams "
          f"{tuple(x_train.shape[1:])} in {t_data:.0f} s", flush=True)

    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-3)
    steps_per_epoch = len(x_train) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(x_train), generator=gen)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * args.batch_size : (s + 1) * args.batch_size]
            loss = loss_fn(net.body(mask(x_train[idx], gen)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        acc = float((predict(net, x_clean) == y_clean).mean())
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {total / steps_per_epoch:.4f}, held-out-voice accuracy "
              f"{acc:.4f} clean ({time.perf_counter() - t0:.0f} s)", flush=True)
    t_train = time.perf_counter() - t0 - t_data

    net.eval()
    ok_clean = predict(net, x_clean) == y_clean
    ok_noisy = predict(net, x_noisy) == y_noisy
    bands = [(-10, -5), (-5, 0), (0, 5), (5, 10)]
    in_band = {f"{lo:+d}..{hi:+d} dB": ok_noisy[(snr >= lo) & (snr < hi) if hi < bands[-1][1] else (snr >= lo)] for lo, hi in bands}
    by_snr = {k: round(float(v.mean()), 4) if len(v) else None for k, v in in_band.items()}
    elapsed = time.perf_counter() - t0
    report = {
        "words": WORDS,
        "heldout_variants": list(HELDOUT_VARIANTS),
        "train_variants": len(tv),
        "heldout_accuracy_clean": round(float(ok_clean.mean()), 4),
        "heldout_accuracy_noisy": round(float(ok_noisy.mean()), 4),
        "heldout_accuracy_noisy_by_snr": by_snr,
        "snr_range_db": list(SNR_DB),
        "train_accuracy": round(float((predict(net, x_train[:3000]) == y_train[:3000].numpy()).mean()), 4),
        "train_clips": len(train_specs),
        "test_clips_each": args.test_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "threads": args.threads,
        "seconds_data": round(t_data, 1),
        "seconds_training": round(t_train, 1),
        "seconds": round(elapsed, 1),
        "parameters": sum(p.numel() for p in net.parameters()),
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=1))
    if report["heldout_accuracy_clean"] < args.min_accuracy:
        print(f"clean held-out-voice accuracy {report['heldout_accuracy_clean']:.4f} is below {args.min_accuracy}; not saving", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), args.out)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
