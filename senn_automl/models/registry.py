"""Registry of growable model types: a spec's ``"type"`` -> class (torch only).

A growable model class has ``spec() -> dict`` (JSON-able, with ``"type"`` its class name) and
``from_spec(spec)``; it registers itself with :func:`register_model`. Checkpoints, pickles and
MLflow models store the spec and rebuild the model with :func:`model_from_spec`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["MODEL_TYPES", "register_model", "model_from_spec"]

#: spec "type" -> growable model class, in registration order
MODEL_TYPES: dict[str, type[nn.Module]] = {}


def register_model(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator: make ``cls`` buildable by :func:`model_from_spec` under its class name.

    Raises ``ValueError`` if another class already holds that name."""
    if MODEL_TYPES.get(cls.__name__, cls) is not cls:
        raise ValueError(f"model type {cls.__name__!r} is already registered by {MODEL_TYPES[cls.__name__].__module__}")
    MODEL_TYPES[cls.__name__] = cls
    return cls


def model_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Build the growable model described by ``spec`` (any type in :data:`MODEL_TYPES`).

    Weights are freshly initialised without touching the global RNG; load a state_dict next.
    Raises ``ValueError`` for a spec of unknown type.
    """
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in MODEL_TYPES:
        raise ValueError(f"spec type {kind!r} is unknown; known model types: {', '.join(MODEL_TYPES)}")
    with torch.random.fork_rng(devices=[]):
        return MODEL_TYPES[kind].from_spec(spec)
