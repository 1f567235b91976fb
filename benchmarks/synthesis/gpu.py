"""GPU throughput check: one metamer at a time vs this engine's batches, on CUDA, in a few minutes.

Skips cleanly (exit 0) where torch sees no CUDA GPU. The model is an ImageNet-sized convolutional
network with random weights (throughput does not depend on what the weights learned), input
3×224×224, so no download is needed. For each layer depth it times a fixed number of synthesis
steps at batch 1 with the full forward pass (the paper's way) and at batch B with the engine
(truncated, channels-last, TF32, optionally torch.compile), and prints metamer-steps per second.

Usage: python -m benchmarks.synthesis.gpu [--batch 64] [--steps 30] [--compile]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import OrderedDict

import torch
from torch import nn

from synthesis.features import FeatureExtractor
from synthesis.optimize import Problem, initial_signal, prepare_device, preset, synthesize


def make_net() -> nn.Module:
    """A VGG-like stack: 5 stages of conv-ReLU pairs with pooling, then a classifier (random weights)."""
    layers: list[tuple[str, nn.Module]] = []
    cin = 3
    for stage, (cout, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for k in range(1, convs + 1):
            layers += [(f"conv{stage}_{k}", nn.Conv2d(cin, cout, 3, padding=1)), (f"relu{stage}_{k}", nn.ReLU())]
            cin = cout
        layers.append((f"pool{stage}", nn.MaxPool2d(2)))
    layers += [("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(512, 1000))]
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(layers)).eval()


def _time(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.synthesis.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="synthesis steps timed per configuration")
    p.add_argument("--layers", default="relu2_2,relu3_3,relu4_3,relu5_3,fc")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the truncated graph")
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.add_argument("--device", default="cuda", help="cuda (default); cpu only to smoke-test this script")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: GPU benchmark skipped")
        return 0
    dev = prepare_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}, batch {args.batch}, {args.steps} steps per timing, {args.size}×{args.size} images")
    net = make_net().to(dev)
    shape = (3, args.size, args.size)
    s = preset("paper", rounds=1, round_steps=args.steps, fake_relu=True)
    rows = []
    for layer in args.layers.split(","):
        # One at a time: full forward, batch 1 (hook on the layer).
        captured: dict[str, torch.Tensor] = {}
        h = net.get_submodule(layer).register_forward_hook(lambda _m, _i, o: captured.__setitem__("a", o))
        x0 = torch.rand(1, *shape, device=dev)
        with torch.no_grad():
            net(x0)
            target = captured["a"].detach()

        def single() -> None:
            x = torch.rand(1, *shape, device=dev)
            for _ in range(args.steps):
                x.requires_grad_(True)
                net(x)
                loss = ((captured["a"] - target).norm() / target.norm())
                (g,) = torch.autograd.grad(loss, x)
                x = (x.detach() - g / g.norm()).clamp(0, 1)

        single()  # warm-up (cuDNN autotuning)
        t_single = _time(single, dev)
        h.remove()
        rate_single = args.steps / t_single

        def batched(fe: FeatureExtractor) -> None:
            nat = torch.rand(args.batch, *shape, device=dev).contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                tg = fe(nat)[layer]
            probs = [Problem(f"s{i}", layer, tg[i], initial_signal(shape, 0, f"s{i}", "image", s, (0.0, 1.0))) for i in range(args.batch)]
            synthesize(fe, probs, s, (0.0, 1.0), device=dev, record_losses=False)

        fe = FeatureExtractor(net, [layer], torch.zeros(1, *shape), fake_relu=True).to(dev, torch.channels_last)
        batched(fe)  # warm-up
        t_batch = _time(lambda: batched(fe), dev)
        rate_batch = args.batch * args.steps / t_batch
        row = [layer, rate_single, rate_batch, rate_batch / rate_single]
        if args.compile:
            fec = FeatureExtractor(net, [layer], torch.zeros(1, *shape), fake_relu=True).to(dev, torch.channels_last).compile()
            batched(fec)
            t_c = _time(lambda: batched(fec), dev)
            row.append(args.batch * args.steps / t_c)
        rows.append(row)
        print(f"{layer:>8}: one at a time {rate_single:8.1f} metamer-steps/s | engine batch {args.batch} {rate_batch:9.1f} "
              f"({rate_batch / rate_single:5.1f}×)" + (f" | compiled {row[4]:9.1f} ({row[4] / rate_single:5.1f}×)" if args.compile else ""),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
