"""The only places that read private attributes of third-party classes.

:class:`ray.tune.search.optuna.OptunaSearch` keeps its Optuna study, its map from Tune trial ids to
Optuna trials and its set of finished Tune trial ids in private attributes, with no public accessor;
:class:`~senn_automl.integrations.tune.searcher.PruneAwareOptunaSearch` needs all three (to tell
Optuna that a trial was pruned, and to adopt orphaned trials after a restore). Each access is one
function here, so a Ray upgrade that renames them breaks in one file.

Tested with ray 2.60.0 (optuna 5.1.0); ``pyproject.toml`` pins ``ray[tune]>=2.50,<2.61`` for this
reason: check these attributes (``python/ray/tune/search/optuna/optuna_search.py``) before raising it.

Everything else uses public APIs: Optuna trials are named by their public ``number`` (the storage
maps numbers to ids with ``get_trial_id_from_study_id_trial_number``), studies are told with
``Study.tell(..., skip_if_finished=True)``, and a restored
:class:`~senn_automl.integrations.tune.progress.ProgressView` gets its writer while it is unpickled
(:func:`~senn_automl.integrations.tune.progress.restored_views_write_to`) instead of through the
Tuner's private run config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    from ray.tune.search.optuna import OptunaSearch


def optuna_search_study(searcher: OptunaSearch) -> optuna.Study:
    """The Optuna study an ``OptunaSearch`` asks and tells (``OptunaSearch._ot_study``)."""
    return searcher._ot_study


def optuna_search_trials(searcher: OptunaSearch) -> dict[str, optuna.trial.Trial]:
    """Tune trial id -> the Optuna trial suggested for it (``OptunaSearch._ot_trials``); mutable."""
    return searcher._ot_trials


def optuna_search_finished(searcher: OptunaSearch) -> set[str]:
    """Tune trial ids the searcher has already told Optuna about (``OptunaSearch._completed_trials``);
    mutable: adding an id makes ``OptunaSearch`` ignore later results and completions of that trial."""
    return searcher._completed_trials
