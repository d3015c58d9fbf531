"""Growable modules: :class:`~senn_automl.models.mlp.GrowingMLP` (SENN),
:class:`~senn_automl.models.cnn.GrowingCNN` (SECNN) and :class:`~senn_automl.models.edge_mlp.EdgeMLP`
(edge-based expansion). Each edit is function-preserving and returns the
:class:`~senn_automl.models.mlp.ParamChange` s the optimiser needs. Torch only.

Importing this package registers every model type (see :func:`~senn_automl.models.registry.model_from_spec`).
"""

from senn_automl.models.cnn import GrowingCNN
from senn_automl.models.edge_mlp import EdgeMLP
from senn_automl.models.mlp import GrowingMLP, ParamChange, RationalActivation
from senn_automl.models.registry import MODEL_TYPES, model_from_spec, register_model

__all__ = ["MODEL_TYPES", "model_from_spec", "register_model", "GrowingMLP", "ParamChange", "RationalActivation", "GrowingCNN", "EdgeMLP"]
