"""The Optuna side of a search (senn_automl.integrations.tune.searcher), driven the way Tune drives
it (suggest, on_trial_result, on_trial_complete), on a real sqlite Optuna storage; no Ray cluster."""

from __future__ import annotations

import optuna
import pytest

pytest.importorskip("ray.tune")

from senn_automl.integrations.tune.searcher import make_searcher  # noqa: E402


def _space(trial):
    trial.suggest_float("tau", 1e-3, 1e-1, log=True)
    return {"max_epochs": 10}


@pytest.fixture
def storage(tmp_path):
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")


def test_scheduler_stopped_trial_is_pruned_with_its_last_value(storage):
    """Tune passes the result on which ASHA stops a trial to on_trial_complete only: Optuna's PRUNED
    value must be that result's val_acc (the leaderboard's), not the previous report's."""
    searcher = make_searcher(_space, storage=storage, study_name="s", seed=0, max_t=10, multi_objective=False,
                             points_to_evaluate=None)
    assert searcher.suggest("t1")["max_epochs"] == 10
    searcher.on_trial_result("t1", {"val_acc": 0.80, "training_iteration": 1, "final": 0, "mlflow_run_id": "r1"})
    searcher.on_trial_complete("t1", {"val_acc": 0.84, "training_iteration": 2, "final": 0, "mlflow_run_id": "r1"})
    (trial,) = optuna.load_study(study_name="s", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.value == pytest.approx(0.84) and trial.intermediate_values == {1: 0.80, 2: 0.84}
    assert trial.user_attrs["mlflow_run_id"] == "r1"


def test_trial_that_reaches_its_last_epoch_is_complete(storage):
    searcher = make_searcher(_space, storage=storage, study_name="s", seed=0, max_t=10, multi_objective=False,
                             points_to_evaluate=None)
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"val_acc": 0.80, "training_iteration": 1, "final": 0})
    searcher.on_trial_complete("t1", {"val_acc": 0.90, "training_iteration": 4, "final": 1})  # its own patience
    (trial,) = optuna.load_study(study_name="s", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == pytest.approx(0.90)
