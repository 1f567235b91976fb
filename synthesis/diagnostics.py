"""Per-metamer diagnostics: the loss curve, and the metamer beside its natural signal.

Written as PNG figures under ``<bank>/diagnostics/<model>/<layer>/<source>.png`` when a plan sets
``diagnostics: true`` (or ``--diagnostics``). They are not part of the bank's manifest, so readers
ignore them and ``zip_bank``/merge leave them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def save_diagnostic(
    path: Path,
    *,
    natural: torch.Tensor,
    metamer: torch.Tensor,
    losses: Sequence[float],
    title: str,
    kind: str,
    sample_rate: int | None = None,
) -> Path:
    """Write one figure: loss per step (log scale) | natural | metamer (images) or their cochleagrams (audio)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3), dpi=100)
    ax = fig.add_subplot(1, 3, 1)
    if losses:
        ax.semilogy(np.arange(1, len(losses) + 1), np.maximum(np.asarray(losses, dtype=float), 1e-12))
    ax.set_xlabel("step")
    ax.set_ylabel("normalized L2 loss")
    ax.set_title("loss")
    for col, (name, sig) in enumerate((("natural", natural), ("metamer (as saved)", metamer)), start=2):
        a = fig.add_subplot(1, 3, col)
        x = sig.detach().float().cpu().numpy()
        if kind == "image":
            img = np.moveaxis(x, 0, -1) if x.ndim == 3 else x
            if img.ndim == 3 and img.shape[-1] == 1:
                img = img[..., 0]
            a.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            a.set_xticks([])
            a.set_yticks([])
        else:  # audio: the cochleagram, so natural and metamer can be compared band by band
            from synthesis.cochleagram import display

            image, hz, env_rate = display(x.reshape(-1), int(sample_rate or 16_000))
            a.imshow(image, origin="lower", aspect="auto", cmap="magma", extent=(0, image.shape[1] / env_rate, 0, image.shape[0]))
            ticks = np.linspace(0, len(hz) - 1, 5).astype(int)
            a.set_yticks(ticks + 0.5, [f"{hz[i]:.0f}" for i in ticks])
            a.set_xlabel("time (s)")
            a.set_ylabel("channel (Hz)")
        a.set_title(name)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
