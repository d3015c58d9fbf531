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


def test_interrupted_trial_continued_by_a_resume_is_recorded_anew(storage, tmp_path):
    """Ctrl-C: the driver FAILs the running Optuna trial (marked interrupted); the restored searcher
    continues its Tune trial and records the outcome as a new trial with the same parameters and
    the intermediate values of both parts, so Optuna agrees with the leaderboard and nothing stays RUNNING."""
    from senn_automl.integrations.tune.searcher import PruneAwareOptunaSearch, fail_running_trials, running_trial_ids

    searcher = make_searcher(_space, storage=storage, study_name="s", seed=0, max_t=10, multi_objective=False,
                             points_to_evaluate=None)
    searcher.suggest("t1")
    searcher.suggest("t2")
    searcher.on_trial_result("t1", {"val_acc": 0.5, "training_iteration": 1, "final": 0, "mlflow_run_id": "r1"})
    searcher.on_trial_complete("t2", {"val_acc": 0.9, "training_iteration": 10, "final": 1, "mlflow_run_id": "r2"})
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune's experiment snapshot
    assert running_trial_ids(storage, "s") == {"t1"}
    fail_running_trials(storage, "s", interrupted={"t1"})
    first = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in first] == ["FAIL", "COMPLETE"] and first[0].user_attrs["interrupted"] is True

    restored = PruneAwareOptunaSearch(_space, metric="val_acc", mode="max", storage=storage, study_name="s", max_t=10)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("t1", {"val_acc": 0.7, "training_iteration": 2, "final": 0, "mlflow_run_id": "r1b"})
    restored.on_trial_complete("t1", {"val_acc": 0.8, "training_iteration": 3, "final": 0, "mlflow_run_id": "r1b"})
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "PRUNED"]
    new = trials[2]
    assert new.params == trials[0].params and new.value == pytest.approx(0.8)
    assert new.intermediate_values == {1: 0.5, 2: 0.7, 3: 0.8}
    assert new.user_attrs["continues"] == 0 and new.user_attrs["mlflow_run_id"] == "r1b"
    assert "interrupted" not in new.user_attrs and new.user_attrs["ray.trial_id"] == "t1"


def test_fail_running_trials_marks_only_the_interrupted(storage):
    from senn_automl.integrations.tune.searcher import fail_running_trials

    searcher = make_searcher(_space, storage=storage, study_name="s", seed=0, max_t=10, multi_objective=False,
                             points_to_evaluate=None)
    searcher.suggest("t1")
    optuna.load_study(study_name="s", storage=storage).ask()  # asked by a killed driver: no Tune trial
    fail_running_trials(storage, "s", interrupted={"t1"})
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert [t.user_attrs.get("interrupted") for t in trials] == [True, None]


def test_study_bookkeeping_of_a_study_that_does_not_exist(storage):
    """Population-based training asks no Optuna study: the bookkeeping after Tuner.fit (and its
    time budget) must not raise on the missing study."""
    from senn_automl.integrations.tune.searcher import fail_running_trials, prune_running_trials, running_trial_ids

    assert running_trial_ids(storage, "none") == set()
    fail_running_trials(storage, "none", interrupted={"t1"})
    prune_running_trials(storage, "none", {"t1"})
    assert optuna.get_all_study_names(storage) == []


def test_trial_told_before_the_snapshot_and_run_again_is_recorded_anew(storage, tmp_path):
    """A killed driver can leave a searcher snapshot that lists a trial as told (PRUNED) while Tune's
    trial snapshot still has it running: the restored search runs it again, and its new outcome
    (another value: a rerun from scratch) must become the trial's newest Optuna record."""
    from senn_automl.integrations.tune.searcher import PruneAwareOptunaSearch, live_records

    searcher = make_searcher(_space, storage=storage, study_name="s", seed=0, max_t=10, multi_objective=False,
                             points_to_evaluate=None)
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"val_acc": 0.60, "training_iteration": 1, "final": 0})
    searcher.on_trial_complete("t1", {"val_acc": 0.68, "training_iteration": 2, "final": 0})  # ASHA stop
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = PruneAwareOptunaSearch(_space, metric="val_acc", mode="max", storage=storage, study_name="s", max_t=10)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("t1", {"val_acc": 0.35, "training_iteration": 1, "final": 0})
    restored.on_trial_complete("t1", {"val_acc": 0.41, "training_iteration": 2, "final": 0})
    trials = optuna.load_study(study_name="s", storage=storage).trials
    (live,) = live_records(trials)
    assert live.number == 1 and live.user_attrs["continues"] == 0 and live.user_attrs["ray.trial_id"] == "t1"
    assert live.state == optuna.trial.TrialState.PRUNED and live.value == pytest.approx(0.41)
    assert live.intermediate_values == {1: 0.35, 2: 0.41}
    # a second completion call in the same process is not recorded again
    restored.on_trial_complete("t1", {"val_acc": 0.41, "training_iteration": 2, "final": 0})
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2


def test_reconcile_records_a_rerun_the_searcher_never_heard_of(storage):
    """The leaderboard says pruned at 0.41 (a rerun after a restore), Optuna still holds the first
    run's PRUNED 0.68: reconcile adds the leaderboard's outcome as the newest record; a second call adds nothing."""
    import pandas as pd

    from senn_automl.integrations.tune.searcher import live_records, reconcile_with_leaderboard

    searcher = make_searcher(_space, storage=storage, study_name="s", seed=0, max_t=10, multi_objective=False,
                             points_to_evaluate=None)
    for tid in ("t1", "t2"):
        searcher.suggest(tid)
    searcher.on_trial_result("t1", {"val_acc": 0.60, "training_iteration": 1, "final": 0})
    searcher.on_trial_complete("t1", {"val_acc": 0.68, "training_iteration": 2, "final": 0})
    searcher.on_trial_complete("t2", {"val_acc": 0.90, "training_iteration": 10, "final": 1})
    lb = pd.DataFrame([{"trial": "t1", "val_acc": 0.41, "n_params": 790, "epochs": 2, "status": "pruned", "mlflow_run_id": "r9"},
                       {"trial": "t2", "val_acc": 0.90, "n_params": 790, "epochs": 10, "status": "complete", "mlflow_run_id": "r2"}])
    assert reconcile_with_leaderboard(storage, "s", lb, multi_objective=False) == 1
    live = {t.user_attrs["ray.trial_id"]: t for t in live_records(optuna.load_study(study_name="s", storage=storage).trials)}
    assert live["t1"].value == pytest.approx(0.41) and live["t1"].user_attrs["continues"] == 0
    assert live["t1"].user_attrs["mlflow_run_id"] == "r9" and live["t1"].intermediate_values == {1: 0.60, 2: 0.41}
    assert live["t2"].number == 1  # agreed already: untouched
    assert reconcile_with_leaderboard(storage, "s", lb, multi_objective=False) == 0


def test_a_trial_that_finished_as_the_time_budget_ran_out_ends_complete(storage):
    """Tune records a trial complete (its final result) while its Optuna trial is still RUNNING when
    the time budget ends the run; the budget's pruning marks it PRUNED, and reconciling with the
    leaderboard (which the search's summary always does) makes its newest record COMPLETE."""
    import pandas as pd

    from senn_automl.integrations.tune.searcher import live_records, prune_running_trials, reconcile_with_leaderboard

    searcher = make_searcher(_space, storage=storage, study_name="s", seed=0, max_t=10, multi_objective=False,
                             points_to_evaluate=None)
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"val_acc": 0.95, "training_iteration": 10, "final": 1})  # completion never told
    prune_running_trials(storage, "s", {"t1"})
    (pruned,) = optuna.load_study(study_name="s", storage=storage).trials
    assert pruned.state == optuna.trial.TrialState.PRUNED
    lb = pd.DataFrame([{"trial": "t1", "val_acc": 0.95, "n_params": 790, "epochs": 10, "status": "complete",
                        "mlflow_run_id": "r1"}])
    assert reconcile_with_leaderboard(storage, "s", lb, multi_objective=False) == 1
    (live,) = live_records(optuna.load_study(study_name="s", storage=storage).trials)
    assert live.state == optuna.trial.TrialState.COMPLETE and live.value == pytest.approx(0.95)
