"""senn_automl: neural networks that grow while they train, and tuning of how they grow.

The core (``modules``, ``curvature``, ``candidates``, ``policies``, ``surgery``, ``trainer``)
imports only torch and numpy. Integrations (scikit-learn estimator, Ray Tune, MLflow) are
imported lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "GrowingMLP": "senn_automl.modules",
    "RationalActivation": "senn_automl.modules",
    "NaturalExpansionPolicy": "senn_automl.policies",
    "FixedPolicy": "senn_automl.policies",
    "GrowthEvent": "senn_automl.policies",
    "make_policy": "senn_automl.policies",
    "Trainer": "senn_automl.trainer",
    "TrainConfig": "senn_automl.trainer",
    "Callback": "senn_automl.trainer",
    "load_checkpoint": "senn_automl.trainer",
    "SENNClassifier": "senn_automl.estimator",
    "load_dataset": "senn_automl.data",
    "DATASETS": "senn_automl.data",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'senn_automl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
