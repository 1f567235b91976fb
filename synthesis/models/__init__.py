"""Model registry for synthesis (needs torch). See :mod:`synthesis.models.registry`."""

from synthesis.models.registry import (
    CategoryMap,
    LoadedModel,
    ModelError,
    Normalize,
    Normalized,
    load_model,
    register_model,
    registered_models,
)

__all__ = ["CategoryMap", "LoadedModel", "ModelError", "Normalize", "Normalized", "load_model", "register_model", "registered_models"]
