"""Integrations on top of the core: the scikit-learn estimator (:mod:`~senn_automl.integrations.estimator`),
Ray Tune + Optuna searches (:mod:`~senn_automl.integrations.tune`), MLflow tracking and the model
registry (:mod:`~senn_automl.integrations.tracking`), comparison of policies
(:mod:`~senn_automl.integrations.compare`) and plots (:mod:`~senn_automl.integrations.plotting`).
Each imports its third-party library; the core never imports this package.
"""
