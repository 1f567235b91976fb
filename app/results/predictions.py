"""Stimulus metadata and the models' own decisions, as the bank recorded them: each metamer's
metrics (``pred_metamer``, ``pred_natural``, loss, correlations) and, for natural stimuli, the
prediction of each model of the experiment's sets. Used for the model columns of trials.csv and
the yoked model observers of the accuracy table."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.core.schema import Experiment, ExperimentStimulusSet, Stimulus, StimulusSet


@dataclass(frozen=True)
class StimInfo:
    key: str
    kind: str
    set_name: str
    sha256: str
    passed: bool | None
    metrics: dict[str, Any]


class StimulusCache:
    """Stimulus metadata by id, loaded on demand (bounded by the size of the stimulus sets)."""

    def __init__(self) -> None:
        self.items: dict[int, StimInfo] = {}

    def load(self, session: Session, ids: Iterable[int]) -> None:
        missing = {i for i in ids if i is not None and i not in self.items}
        if not missing:
            return
        rows = session.execute(
            sa.select(Stimulus.id, Stimulus.key, Stimulus.kind, StimulusSet.name, Stimulus.media_sha256, Stimulus.passed, Stimulus.metrics)
            .join(StimulusSet, StimulusSet.id == Stimulus.set_id)
            .where(Stimulus.id.in_(missing))
        ).all()
        for sid, key, kind, set_name, sha, passed, metrics in rows:
            self.items[sid] = StimInfo(key, kind, set_name, sha, passed, metrics if isinstance(metrics, dict) else {})


def natural_predictions(session: Session, exp: Experiment) -> dict[int, dict[str, str]]:
    """Natural stimulus id → {model: the model's prediction on it} (from the models' metamers'
    ``pred_natural``), over the experiment's stimulus sets."""
    set_ids = list(session.scalars(sa.select(ExperimentStimulusSet.stimulus_set_id).where(ExperimentStimulusSet.experiment_id == exp.id)))
    naturals = {
        (set_id, key): sid
        for sid, set_id, key in session.execute(
            sa.select(Stimulus.id, Stimulus.set_id, Stimulus.key).where(Stimulus.set_id.in_(set_ids), Stimulus.kind == "natural")
        )
    }
    out: dict[int, dict[str, str]] = defaultdict(dict)
    for set_id, source, model, metrics in session.execute(
        sa.select(Stimulus.set_id, Stimulus.source, Stimulus.model, Stimulus.metrics).where(Stimulus.set_id.in_(set_ids), Stimulus.kind == "metamer")
    ):
        nat = naturals.get((set_id, source))
        if nat is not None and model and isinstance(metrics, dict) and metrics.get("pred_natural") is not None:
            out[nat].setdefault(model, str(metrics["pred_natural"]))
    return dict(out)


def model_layers(session: Session, exp: Experiment) -> dict[str, list[str]]:
    """Each model's layers in depth order, from the experiment's stimulus sets' manifests."""
    out: dict[str, list[str]] = {}
    for sset in exp.stimulus_sets:
        for m in sset.manifest.get("models", []) or []:
            if isinstance(m, dict) and m.get("name") and m["name"] not in out:
                out[m["name"]] = list(m.get("layers") or [])
    return out


def categories(exp: Experiment) -> list[dict[str, Any]]:
    return list(exp.stimulus_sets[0].manifest.get("categories", [])) if exp.stimulus_sets else []
