"""Train the demo digit model: ``python -m synthesis.train.digits [--out demo/models/digits.pt]``.

Renders digits from the training fonts with augmentation (:mod:`synthesis.train.digit_images`),
trains :class:`synthesis.models.digits.DigitNet` on the CPU, and evaluates on HELD-OUT fonts (never
seen in training). It refuses to save a model below ``--min-accuracy`` (97 % by default) on the
held-out fonts. Reproducible: a fixed seed, a fixed number of threads, data rendered from
package-shipped fonts. Writes the weights and a JSON sidecar with the measured figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from synthesis.models.digits import DEFAULT_CHECKPOINT, DigitNet
from synthesis.train.digit_images import CLEAN, HELDOUT_FONTS, TRAIN_FONTS, render, render_batch


@torch.no_grad()
def accuracy(net: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    net.eval()
    x = torch.from_numpy(images).unsqueeze(1)
    pred = torch.cat([net(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return float((pred.numpy() == labels).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m synthesis.train.digits", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument("--train-size", type=int, default=48_000, help="rendered training images")
    p.add_argument("--test-size", type=int, default=3_000, help="rendered held-out-font test images")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-accuracy", type=float, default=0.97, help="held-out accuracy required to save")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    # Denormal floats make x86 CPUs crawl as weights and gradients get small; flush them to zero.
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    print(f"rendering {args.train_size} training images from {len(TRAIN_FONTS)} fonts...", flush=True)
    x_train, y_train = render_batch(args.train_size, TRAIN_FONTS, seed=args.seed, augment=True)
    x_test, y_test = render_batch(args.test_size, HELDOUT_FONTS, seed=args.seed + 1, augment=True)
    x_clean = np.stack([render(d, f, CLEAN) for f in HELDOUT_FONTS for d in range(10)])
    y_clean = np.array([d for _ in HELDOUT_FONTS for d in range(10)])
    t_render = time.perf_counter() - t0
    print(f"rendered in {t_render:.0f} s", flush=True)

    net = DigitNet()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = args.train_size // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    xt = torch.from_numpy(x_train).unsqueeze(1)
    yt = torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(args.seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for s in range(steps_per_epoch):
            idx = order[s * args.batch_size : (s + 1) * args.batch_size]
            loss = loss_fn(net(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        acc = accuracy(net, x_test, y_test)
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {total / steps_per_epoch:.4f}, held-out-font accuracy {acc:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    net.eval()
    acc = accuracy(net, x_test, y_test)
    acc_clean = accuracy(net, x_clean, y_clean)
    acc_train = accuracy(net, x_train[:5000], y_train[:5000])
    elapsed = time.perf_counter() - t0
    report = {
        "heldout_fonts": [f.name for f in HELDOUT_FONTS],
        "train_fonts": [f.name for f in TRAIN_FONTS],
        "heldout_accuracy_augmented": acc,
        "heldout_accuracy_clean": acc_clean,
        "train_accuracy": acc_train,
        "train_size": args.train_size,
        "test_size": args.test_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "threads": args.threads,
        "seconds": round(elapsed, 1),
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=1))
    if acc < args.min_accuracy or acc_clean < args.min_accuracy:
        print(f"held-out accuracy {acc:.4f} (clean {acc_clean:.4f}) is below {args.min_accuracy}; not saving", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), args.out)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
