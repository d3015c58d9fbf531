"""Ray Tune + Optuna search over growth hyperparameters, with every growth checkpoint in MLflow.

One module per job:

* :mod:`~senn_automl.integrations.tune.trainable` — :func:`train_senn`, the function trainable (a
  trial rebuilt from its Tune checkpoint or built from the flat trial config, trained with an MLflow
  callback, then :class:`TuneReportCallback`: one ``ray.tune.report`` per epoch, a Tune checkpoint
  when the epoch grew the network or is the last one);
* :mod:`~senn_automl.integrations.tune.searcher` — :class:`PruneAwareOptunaSearch` (Optuna is told
  PRUNED for ASHA-stopped trials) and the study bookkeeping of ``--resume``;
* :mod:`~senn_automl.integrations.tune.progress` — :class:`ProgressView`, the live view;
* :mod:`~senn_automl.integrations.tune.summary` — leaderboard, orphan runs, registry clean-up,
  champion, Pareto front and artifacts after the search;
* :mod:`~senn_automl.integrations.tune.run` — :func:`run_search`, the engine behind
  ``senn-automl tune``: validates every input before any trial starts, starts or joins a Ray
  cluster, runs the search with ASHA, resumes interrupted searches, summarises;
* :mod:`~senn_automl.integrations.tune.search_space` — YAML search spaces;
* :mod:`~senn_automl.integrations.tune._internals` — the only reads of Ray's private attributes.

This package imports Ray Tune and Optuna (the core modules never import it); MLflow and pandas are
imported where they are used. The Pareto front of a comparison is
:func:`senn_automl.integrations.compare.pareto_front`.
"""

# (``X as X``: the module constants stay importable from here, outside ``__all__`` as before)
from senn_automl.integrations.tune.progress import ProgressView
from senn_automl.integrations.tune.run import DEFAULT_EXPERIMENT as DEFAULT_EXPERIMENT
from senn_automl.integrations.tune.run import DEFAULT_RAY_TMPDIR as DEFAULT_RAY_TMPDIR
from senn_automl.integrations.tune.run import (
    SearchResult,
    SearchSetupError,
    ray_env_defaults,
    run_search,
)
from senn_automl.integrations.tune.searcher import OverriddenSpace, PruneAwareOptunaSearch
from senn_automl.integrations.tune.trainable import PLUMBING_KEYS, TuneReportCallback, split_config, train_senn
from senn_automl.integrations.tune.trainable import REPORTED_METRICS as REPORTED_METRICS

__all__ = [
    "PLUMBING_KEYS",
    "TuneReportCallback",
    "train_senn",
    "split_config",
    "PruneAwareOptunaSearch",
    "ProgressView",
    "OverriddenSpace",
    "run_search",
    "SearchResult",
    "SearchSetupError",
    "ray_env_defaults",
]
