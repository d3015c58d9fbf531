"""One flat configuration dict → model, growth policy and training settings (torch only).

The keys of this dict are the vocabulary shared by ``senn-automl fit``, the search spaces in
``search_spaces/*.yaml`` and the Ray Tune trainable. Unknown keys raise ``ValueError``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .modules import GrowingMLP
from .policies import POLICIES, GrowthPolicy, make_policy, policy_class, policy_params
from .trainer import TrainConfig

__all__ = ["DEFAULTS", "POLICY_KEYS", "TRAIN_KEYS", "MODEL_KEYS", "build", "resolve"]

MODEL_KEYS = ("start_width", "start_depth", "max_width", "max_depth")

def _policy_defaults() -> dict[str, Any]:
    """Defaults of every policy parameter; a key shared by several policies takes the natural
    policy's default (each policy receives only its own keys, see :func:`build`)."""
    out: dict[str, Any] = {}
    for name in reversed(list(POLICIES)):
        try:
            cls = policy_class(name)
        except ImportError:  # policy module not available in this build
            continue
        for f in dataclasses.fields(cls):
            if f.name in policy_params(name):
                out[f.name] = f.default
    return out


_POLICY_DEFAULTS = _policy_defaults()
POLICY_KEYS = tuple(_POLICY_DEFAULTS)
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))

#: Defaults of every key. Model: one hidden layer of 10 neurons, capacity 64 wide × 3 deep.
DEFAULTS: dict[str, Any] = {
    "policy": "natural",
    "start_width": 10,
    "start_depth": 1,
    "max_width": 64,
    "max_depth": 3,
    **_POLICY_DEFAULTS,
    **{f.name: f.default for f in dataclasses.fields(TrainConfig)},
}


def resolve(config: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Merge ``config`` and ``overrides`` over :data:`DEFAULTS`.

    Raises ``ValueError`` naming unknown keys.
    """
    merged = {**(config or {}), **overrides}
    unknown = sorted(set(merged) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown configuration key(s) {unknown}; valid keys: {', '.join(sorted(DEFAULTS))}")
    return {**DEFAULTS, **merged}


def build(config: dict[str, Any], n_features: int, n_classes: int) -> tuple[GrowingMLP, GrowthPolicy, TrainConfig]:
    """Build ``(model, policy, train_config)`` from a flat config (see :func:`resolve`).

    The model has ``start_depth`` hidden layers of ``start_width`` neurons (``start_depth=0`` is
    a linear model). Raises ``ValueError`` for any invalid value, naming the key.
    """
    c = resolve(config)
    for key in ("start_width", "start_depth"):
        if not isinstance(c[key], int) or c[key] < (1 if key == "start_width" else 0):
            raise ValueError(f"{key}={c[key]!r} is invalid: use a whole number >= {1 if key == 'start_width' else 0}")
    policy = make_policy(c["policy"], **{k: c[k] for k in policy_params(c["policy"])})
    train = TrainConfig(**{k: c[k] for k in TRAIN_KEYS})
    with torch.random.fork_rng(devices=[]):  # weight init seeded without touching the global RNG
        torch.manual_seed(int(c["seed"]))
        model = GrowingMLP(
            n_features,
            n_classes,
            (c["start_width"],) * c["start_depth"],
            max_width=c["max_width"],
            max_depth=c["max_depth"],
        )
    return model, policy, train
