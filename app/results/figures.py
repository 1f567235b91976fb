"""The accuracy-by-layer figure in the style of Feather et al.: one panel per model, the natural
condition then the layers in depth order on x, human accuracy (mean ± SEM across participants)
and the model's (yoked observers, mean ± SEM) on y, chance as a dashed line; one legend on the right.

Pure: takes accuracy rows, returns bytes. Uses matplotlib's object API with the Agg/SVG canvases
(no pyplot global state), so it is safe in a threaded web server.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from app.results.analysis import AccuracyRow

HUMAN_COLOR = "#1d2330"
MODEL_COLOR = "#2456c9"
CHANCE_COLOR = "#8a8f99"


def _nan_to_none(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def accuracy_figure(rows: Sequence[AccuracyRow], *, title: str = "", fmt: str = "svg", dpi: int = 150) -> bytes:
    """Render the figure as ``fmt`` ("svg" or "png") bytes."""
    if fmt not in ("svg", "png"):
        raise ValueError("fmt must be 'svg' or 'png'")
    models: list[str] = []
    for r in rows:
        if r.model not in models:
            models.append(r.model)
    n = max(1, len(models))
    fig = Figure(figsize=(3.4 * n + 1.6, 3.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    if not rows:
        axes[0].text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes[0].transAxes)
    for ax, model in zip(axes, models or [""]):
        mine = [r for r in rows if r.model == model]
        x = list(range(len(mine)))
        labels = [r.layer for r in mine]
        hm = [_nan_to_none(r.human_mean) for r in mine]
        hs = [_nan_to_none(r.human_sem) or 0.0 for r in mine]
        ax.errorbar(
            [xi for xi, v in zip(x, hm) if v is not None],
            [v for v in hm if v is not None],
            yerr=[s for s, v in zip(hs, hm) if v is not None],
            color=HUMAN_COLOR, marker="o", ms=5, lw=1.8, capsize=3, label="Humans",
        )
        if model:
            mm = [_nan_to_none(r.model_yoked_mean) for r in mine]
            ms = [_nan_to_none(r.model_yoked_sem) or 0.0 for r in mine]
            ax.errorbar(
                [xi for xi, v in zip(x, mm) if v is not None],
                [v for v in mm if v is not None],
                yerr=[s for s, v in zip(ms, mm) if v is not None],
                color=MODEL_COLOR, marker="s", ms=4.5, lw=1.8, capsize=3, label="Model",
            )
        chance = next((r.chance for r in mine if r.chance and not math.isnan(r.chance)), None)
        if chance is not None:
            ax.axhline(chance, color=CHANCE_COLOR, ls="--", lw=1, label="Chance")
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45, ha="right")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(-0.5, max(len(mine) - 0.5, 0.5))
        ax.set_title(model or "natural")
        ax.spines[["top", "right"]].set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # one legend for all panels, outside the data
        fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize=9)
    axes[0].set_ylabel("Proportion correct")
    fig.supxlabel("Metamer generation layer", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    buf = io.BytesIO()
    if fmt == "svg":
        FigureCanvasSVG(fig)
        fig.savefig(buf, format="svg", metadata={"Date": None})
    else:
        FigureCanvasAgg(fig)
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()
