"""What happens after ``Tuner.fit``: one function per job.

* :func:`child_runs` and :func:`leaderboard` — the study's MLflow trial runs and one row per trial;
* :func:`end_orphan_runs` — runs nobody will end (left RUNNING) and runs of trials a restore discarded;
* :func:`clean_registry` — registered versions of this study, de-duplicated, those of discarded trials deleted;
* :func:`pick_champion` and :func:`mark_champion` — the best final model, and the ``champion`` alias on it;
* :func:`optuna_summary` — the study's trial states and (multi-objective) its Pareto front;
* :func:`log_summary` — leaderboard/Pareto CSVs and summary metrics/tags on the parent run;
* :func:`version_test_scores` — a registered version, loaded back from the registry, on the test split;
* :func:`champion_test_scores` — the same for the champion, logged on the parent run.

``metric`` is the validation metric the search maximised: ``val_acc``, or ``val_r2`` for regression;
the leaderboard's column of that name, the champion and the Pareto front go by it.

The search and its tracking already succeeded when these run: a registry or tracking call that fails on
one run or version is reported with a warning (:class:`SummaryWarning`) and the summary goes on.
"""

from __future__ import annotations

import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from senn_automl.integrations.tune.searcher import live_records

if TYPE_CHECKING:  # MLflow and pandas are imported where they are used
    from mlflow.tracking import MlflowClient

LEADERBOARD_COLUMNS = ["trial", "policy", "val_acc", "n_params", "growth_events", "epochs", "seconds", "status", "mlflow_run_id"]


class SummaryWarning(RuntimeWarning):
    """A tracking or registry call of the summary failed after the search itself succeeded."""


def _warn(what: str, exc: Exception) -> None:
    warnings.warn(f"{what}: {type(exc).__name__}: {str(exc).strip()[:300]}", SummaryWarning, stacklevel=3)


# ----------------------------------------------------------------------------------- leaderboard
def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> tuple[list, dict[str, Any]]:
    """(every trial run under the parent run, trial id -> its latest run): a resumed trial has one
    run per attempt."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000)
    latest: dict[str, Any] = {}
    for run in runs:
        tid = run.data.tags.get("ray.trial_id")
        if tid and (tid not in latest or run.info.start_time > latest[tid].info.start_time):
            latest[tid] = run
    return runs, latest


def leaderboard(grid, latest_runs: dict[str, Any], interrupted: set[str] | None = None, metric: str = "val_acc"):
    """One row per trial of the Tune result grid, best first: complete trials, then pruned, then
    interrupted (``interrupted``: the Tune trial ids a Ctrl-C stopped before their end), then
    errored; by ``metric`` (highest first), then ``n_params`` (fewest first). Columns:
    :data:`LEADERBOARD_COLUMNS`, ``val_acc`` renamed to ``metric``."""
    import pandas as pd

    rows = []
    for r in grid:
        m = r.metrics or {}
        cfg = r.config or {}
        tid = m.get("trial_id")
        if r.error:
            status = "error"
        elif interrupted is not None and (tid in interrupted or not m):  # not m: interrupted before its first report
            status = "interrupted"
        else:
            status = "complete" if m.get("final") else "pruned"
        run = latest_runs.get(tid)
        rows.append({
            "trial": tid,
            "policy": cfg.get("policy", "natural"),
            metric: m.get(metric),
            "n_params": m.get("n_params"),
            "growth_events": m.get("n_growth_events"),
            "epochs": (int(m["epoch"]) + 1) if m.get("epoch") is not None else None,
            "seconds": m.get("time_total_s"),
            "status": status,
            "mlflow_run_id": run.info.run_id if run else None,
        })
    lb = pd.DataFrame(rows, columns=[metric if c == "val_acc" else c for c in LEADERBOARD_COLUMNS])
    if len(lb):
        lb["_rank"] = lb["status"].map({"complete": 0, "pruned": 1, "interrupted": 2, "error": 3})
        lb = lb.sort_values(["_rank", metric, "n_params"], ascending=[True, False, True], na_position="last")
        lb = lb.drop(columns="_rank").reset_index(drop=True)
    return lb


# ----------------------------------------------------------------------------------- orphan runs
def end_orphan_runs(client: MlflowClient, runs: list, trials: set) -> None:
    """End runs still RUNNING (left by a killed driver or worker: nobody will end them) as KILLED,
    and tag the runs of trials that are not in the leaderboard ``discarded_by_resume=true``: a killed
    driver may have started trials its last snapshot did not record, and the restored search re-ran
    their configurations as new trials. The runs themselves stay."""
    from mlflow.exceptions import MlflowException

    for run in runs:
        if run.info.status == "RUNNING":
            try:
                client.set_terminated(run.info.run_id, "KILLED")
            except MlflowException as exc:  # e.g. deleted meanwhile: the other runs still get ended
                _warn(f"MLflow run {run.info.run_id} left RUNNING", exc)
        tid = run.data.tags.get("ray.trial_id")
        if tid and tid not in trials:
            try:
                client.set_tag(run.info.run_id, "discarded_by_resume", "true")
            except MlflowException as exc:  # e.g. deleted meanwhile: only a marker is missing
                _warn(f"MLflow run {run.info.run_id} not tagged discarded_by_resume", exc)


# ----------------------------------------------------------------------------------- registry
def clean_registry(client: MlflowClient, name: str, runs: list, trials: set) -> list:
    """This study's registered versions of ``name`` (those of ``runs``), after deleting older
    duplicates left by resumed trials (:func:`_dedupe_versions`) and the versions of trials that are
    not in the leaderboard (stale duplicates, see :func:`end_orphan_runs`); sorted by version."""
    from mlflow.exceptions import MlflowException

    run_ids = {r.info.run_id for r in runs}
    try:
        versions = [v for v in client.search_model_versions(f"name='{name}'", max_results=10000) if v.run_id in run_ids]
    except MlflowException as exc:  # a registry that cannot be searched: summarise without versions (no champion)
        _warn(f"registered versions of {name!r} not listed", exc)
        return []
    versions = _dedupe_versions(client, name, versions)
    orphans = [v for v in versions if v.tags.get("ray.trial_id") and v.tags["ray.trial_id"] not in trials]
    for v in orphans:
        _delete_version(client, name, v.version)
    return [v for v in versions if v not in orphans]


def _dedupe_versions(client: MlflowClient, name: str, versions: list) -> list:
    """Keep one registered version per (trial, growth_step) of growth checkpoints and one final per
    trial, the newest: a trial resumed from an older checkpoint (or restarted) re-logs the growth
    events after it. Older duplicates are deleted from the registry."""
    keep: dict[tuple, Any] = {}
    for v in sorted(versions, key=lambda v: int(v.version)):
        tags = v.tags or {}
        final = str(tags.get("final", "")).lower() == "true"
        key = (tags.get("trial"), "final" if final else tags.get("growth_step"), final)
        if key in keep:
            _delete_version(client, name, keep[key].version)
        keep[key] = v
    return sorted(keep.values(), key=lambda v: int(v.version))


def _delete_version(client: MlflowClient, name: str, version) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.delete_model_version(name, version)
    except MlflowException as exc:  # e.g. deleted meanwhile: a duplicate may stay, the champion is unaffected
        _warn(f"registered version {name}/{version} not deleted", exc)


# ----------------------------------------------------------------------------------- champion
def pick_champion(lb, versions: list, metric: str = "val_acc"):
    """The champion rule, without touching the registry: the final model (registered version tagged
    ``final=true``) of the complete trial ranked first in ``lb`` (highest final ``metric``, fewest
    parameters on ties); when no complete trial has a final model (e.g. no Tune metrics, or a time
    budget that interrupted every trial after its final model was logged), the final model with the
    highest ``metric`` tag, fewest ``n_params`` on ties. Returns the version or None (no final model)."""
    finals = {v.tags.get("ray.trial_id"): v for v in versions if str(v.tags.get("final", "")).lower() == "true"}
    for _, row in lb[lb["status"] == "complete"].iterrows():
        if row["trial"] in finals:
            return finals[row["trial"]]
    if not finals:
        return None
    # fewest parameters on ties; a version without an n_params tag ranks after those with one
    return max(finals.values(), key=lambda v: (_num(v.tags.get(metric)), -_num(v.tags.get("n_params"), missing=math.inf)))


def mark_champion(client: MlflowClient, name: str, lb, versions: list, metric: str = "val_acc") -> tuple[str | None, str | None]:
    """Give the alias ``champion`` to the version :func:`pick_champion` picks; returns (version,
    trial), (None, None) when no trial logged a final model."""
    from senn_automl.integrations.tracking import set_champion

    best = pick_champion(lb, versions, metric=metric)
    if best is None:
        return None, None
    set_champion(name, str(best.version), client=client)
    return str(best.version), best.tags.get("ray.trial_id")


def _num(x, missing: float = -math.inf) -> float:
    """``x`` as a finite float, else ``missing`` (default −inf: ranks last when higher is better)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return missing
    return v if math.isfinite(v) else missing


# ----------------------------------------------------------------------------------- Pareto front
def optuna_summary(storage: str, study_name: str, multi_objective: bool, metric: str = "val_acc") -> tuple[dict[str, int], Any]:
    """(count of the study's trials per state, records that a resume superseded with a new trial
    counted as ``superseded``; its Pareto front as a DataFrame sorted by ``n_params`` when
    ``multi_objective``, else None)."""
    import pandas as pd

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # population-based training asks no Optuna study
        return {}, None
    states: dict[str, int] = {}
    # a record superseded by a later one of the same Tune trial (user attribute continues) counts apart
    live = {t.number for t in live_records(study.trials)}
    for t in study.trials:
        key = t.state.name if t.number in live else "superseded"
        states[key] = states.get(key, 0) + 1
    pareto = None
    if multi_objective:
        pareto = pd.DataFrame(
            [{"optuna_trial": t.number, metric: t.values[0], "n_params": t.values[1], **t.params} for t in study.best_trials]
        )
        if len(pareto):
            pareto = pareto.sort_values("n_params").reset_index(drop=True)
    return states, pareto


# ----------------------------------------------------------------------------------- artifacts
def log_summary(client: MlflowClient, parent_run_id: str, out: Path, lb, pareto, champion_version: str | None,
                champion_trial: str | None, metric: str = "val_acc") -> None:
    """Write ``leaderboard.csv`` (and ``pareto_front.csv``) to ``out`` and log them to the parent
    run, with the metrics ``n_trials``, ``best_<metric>`` (``best_val_acc``) and the champion's tags."""
    import mlflow

    out.mkdir(parents=True, exist_ok=True)
    lb_path = out / "leaderboard.csv"
    lb.to_csv(lb_path, index=False)
    client.log_artifact(parent_run_id, str(lb_path))
    if pareto is not None and len(pareto):
        p = out / "pareto_front.csv"
        pareto.to_csv(p, index=False)
        client.log_artifact(parent_run_id, str(p))
    now = int(time.time() * 1000)
    metrics = [mlflow.entities.Metric("n_trials", float(len(lb)), now, 0)]
    done = lb[lb["status"] == "complete"]
    if len(done):
        metrics.append(mlflow.entities.Metric(f"best_{metric}", float(done[metric].max()), now, 0))
    client.log_batch(parent_run_id, metrics=metrics)
    if champion_version:
        client.set_tag(parent_run_id, "champion_version", champion_version)
        client.set_tag(parent_run_id, "champion_trial", str(champion_trial))


def version_test_scores(tracking_uri: str, name: str, version: str, ds) -> dict[str, float]:
    """Test scores of the registered version ``name``/``version``, loaded back as an MLflow pyfunc
    model and given raw features (as a user would), on ``ds``'s test split: ``{"accuracy": ...}``
    for classification, ``{"r2": ..., "rmse": ...}`` for regression (R² averaged over targets, RMSE
    in the targets' units: the model predicts values). Logs nothing.

    Leaves MLflow's global tracking and registry URIs alone (setting them would also set
    environment variables that later Ray workers inherit). The version's artifact location is
    asked of this search's registry: ``download_artifacts("models:/<name>/<version>", registry_uri=...)``
    resolves the version's ``models:/m-<id>`` source through the ambient tracking URI instead, which
    after ``--resume`` was the default ``./mlflow.db`` of the working directory (another store)."""
    import numpy as np
    from mlflow.tracking import MlflowClient

    import mlflow

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    location = client.get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory(prefix="senn-version-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri)
        out = np.asarray(mlflow.pyfunc.load_model(local).predict(ds.raw("test")))  # raw features, as users send
    if ds.is_regression:
        from sklearn.metrics import r2_score, root_mean_squared_error

        y = ds.raw_targets("test")
        return {"r2": float(r2_score(y, out)), "rmse": float(root_mean_squared_error(y, out))}
    return {"accuracy": float((out.argmax(1) == np.asarray(ds.y_test)).mean())}


def champion_test_scores(tracking_uri: str, name: str, version: str, parent_run_id: str, ds) -> dict[str, float]:
    """:func:`version_test_scores` of the champion version, also logged as ``champion_test_acc`` (or
    ``champion_test_r2`` and ``champion_test_rmse``) on the parent run."""
    from mlflow.tracking import MlflowClient

    scores = version_test_scores(tracking_uri, name, version, ds)
    client = MlflowClient(tracking_uri=tracking_uri)
    for key, value in scores.items():
        client.log_metric(parent_run_id, f"champion_test_{'acc' if key == 'accuracy' else key}", value)
    return scores
