"""Run a job set with plenoptic's ``Metamer`` (inside the benchmark's own venv, .bench-venv).

plenoptic synthesizes one image at a time (its batches share one loss and one convergence check,
so they are not independent problems). It gets the same model *truncated at the layer*, the same
natural images and the same initial noise as the other methods, its default optimizer (Adam, lr
0.01, amsgrad), loss (MSE), range penalty and convergence check, and the same step budget.
Usage: python -m benchmarks.synthesis.plenoptic_worker JOBSET OUT.pt THREADS [quick]
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> int:
    import plenoptic as po
    import torch

    from benchmarks.synthesis.jobsets import discover, quick
    from synthesis.features import FeatureExtractor
    from synthesis.optimize import initial_signal

    name, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    torch.set_flush_denormal(True)
    js = discover()[name]()
    if len(sys.argv) > 4 and sys.argv[4] == "quick":
        js = quick(js)
    m = js.model
    example = torch.zeros(1, *m.input_shape)
    results: dict[str, torch.Tensor] = {}
    steps: dict[str, list[int]] = {}
    t0 = time.perf_counter()
    c0 = time.process_time()
    for layer in js.layers:
        fe = FeatureExtractor(m.module, [layer], example, prefix=m.layer_prefix)

        class LayerModel(torch.nn.Module):
            def forward(self, x: torch.Tensor, fe: FeatureExtractor = fe, layer: str = layer) -> torch.Tensor:
                return fe(x)[layer]

        model = LayerModel().eval()
        xs, ns = [], []
        for i, sid in enumerate(js.source_ids):
            init = initial_signal(m.input_shape, js.seed, sid, m.input.kind, js.settings, m.input.range)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # Its range penalty defaults to images' [0, 1]; waveforms live in [-1, 1].
                penalty = functools.partial(po.regularize.penalize_range, allowed_range=tuple(m.input.range))
                met = po.Metamer(js.sources[i : i + 1], model, penalty_function=penalty)
                met.setup(initial_image=init.unsqueeze(0))
                met.synthesize(max_iter=js.settings.max_steps)
            xs.append(met.metamer.detach().clamp(*m.input.range)[0])
            ns.append(len(met.losses))
        results[layer] = torch.stack(xs)
        steps[layer] = ns
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    torch.save({"seconds": seconds, "cpu": cpu, "metamers": results, "steps": steps, "version": po.__version__}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
