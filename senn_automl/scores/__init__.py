"""Curvature statistics and expansion scores: K-FAC factors and the natural expansion score
(:mod:`~senn_automl.scores.curvature`), SENN's candidate neurons and layers
(:mod:`~senn_automl.scores.candidates`), conv K-FAC for SECNN (:mod:`~senn_automl.scores.conv`)
and per-edge metrics (:mod:`~senn_automl.scores.edge_metrics`). Torch only; nothing here edits a
model or decides to grow.
"""
