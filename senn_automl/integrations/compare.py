"""Compare growth policies across tuning runs recorded in MLflow (``senn-automl compare``).

Reads the child runs (one per trial, see :mod:`senn_automl.integrations.tune`) of an experiment, summarises
them per growth policy (best and median final validation score, median parameter count,
median run time, number of runs) and draws the score against parameters, one colour per policy,
with the Pareto front (most accurate for its size) as a step line. The figure and the summary are
logged to the study's parent run, or to a new ``compare`` run when the runs belong to several
studies.

The score is the validation accuracy (``val_acc``) of classification studies and the validation R²
(``val_r2``) of regression studies: the final model's (metric ``final_val_acc`` / ``final_val_r2``,
logged by the Tune trainable after the best-model restore; else the last epoch's). A run counts as *complete* when it logged
its final model (metric ``final_n_params``); runs that
ASHA stopped early are counted but their truncated accuracy is left out of the statistics, unless
no run of that policy completed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["load_child_runs", "summarise_policies", "pareto_front", "plot_accuracy_vs_params", "compare", "CompareResult",
           "METRICS"]

DEFAULT_EXPERIMENT = "senn-automl"
#: validation scores a study can have maximised: accuracy (classification), R² (regression)
METRICS = ("val_acc", "val_r2")
_LABELS = {"val_acc": "final validation accuracy", "val_r2": "final validation R²"}
_TASK_OF_METRIC = {"val_acc": "classification", "val_r2": "regression"}
_METRIC_OF_TASK = {task: metric for metric, task in _TASK_OF_METRIC.items()}


@dataclasses.dataclass
class CompareResult:
    """``summary``: DataFrame, one row per policy. ``runs``: the child runs used. ``png``/``csv``:
    written files. ``logged_to``: run id the figure was logged to. ``metric``: the score compared
    (``val_acc`` or ``val_r2``)."""

    summary: Any
    runs: Any
    png: str
    csv: str
    logged_to: str | None
    experiment_id: str
    metric: str = "val_acc"


def load_child_runs(tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT, parent_run_id: str | None = None,
                    metric: str | None = None):
    """(child runs (trials) of ``experiment`` as a DataFrame with columns ``run_id, parent_run_id,
    trial, policy, <metric>, n_params, seconds, complete, status``, the experiment id, the metric).

    ``metric``: ``val_acc`` or ``val_r2``; ``None`` takes the one the runs logged (``val_acc`` when
    there are no runs). Raises ``ValueError`` if the experiment does not exist, for an unknown
    metric, and when ``metric`` is None and the runs are of classification and regression studies
    alike (their scores do not share an axis).
    """
    import pandas as pd
    from mlflow.tracking import MlflowClient

    import mlflow

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ValueError(f"experiment {experiment!r} not found in {tracking_uri}; experiments there: {names or 'none'}")
    mlflow.set_tracking_uri(tracking_uri)
    filt = f"tags.mlflow.parentRunId = '{parent_run_id}'" if parent_run_id else ""
    df = mlflow.search_runs(experiment_ids=[exp.experiment_id], filter_string=filt, max_results=50000, output_format="pandas")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric={metric!r} is unknown; use one of {', '.join(METRICS)} (or leave it out: the one the runs logged)")
    if df is not None and len(df) and "tags.mlflow.parentRunId" in df:
        df = df[df["tags.mlflow.parentRunId"].notna() & (df["tags.mlflow.parentRunId"] != "")]

    def col(name, default=float("nan")):
        return df[name] if name in df else pd.Series(default, index=df.index)

    tasks = col("params.task", "classification").fillna("classification") if df is not None and len(df) else None
    if metric is None:
        present = sorted(set(tasks)) if tasks is not None else []
        if len(present) > 1:
            raise ValueError(f"the runs of experiment {experiment!r} are of classification (val_acc) and regression (val_r2) "
                             f"studies alike; choose one with --metric val_acc or --metric val_r2, or one study with --parent-run-id")
        metric = _METRIC_OF_TASK.get(present[0], "val_acc") if present else "val_acc"
    if tasks is not None:  # only the runs of the metric's task (the trainable logs the task as a param)
        df = df[tasks == _TASK_OF_METRIC[metric]]
    cols = ["run_id", "parent_run_id", "trial", "policy", metric, "n_params", "seconds", "complete", "status"]
    if df is None or len(df) == 0 or "tags.mlflow.parentRunId" not in df:
        return pd.DataFrame(columns=cols), exp.experiment_id, metric

    n_params = col("metrics.final_n_params").fillna(col("metrics.n_params"))
    seconds = (col("end_time") - col("start_time")).dt.total_seconds() if "end_time" in df else col("x")
    out = pd.DataFrame({
        "run_id": df["run_id"],
        "parent_run_id": df["tags.mlflow.parentRunId"],
        "trial": col("tags.mlflow.runName", ""),
        "policy": col("params.policy", "natural").fillna("natural"),
        metric: pd.to_numeric(col(f"metrics.final_{metric}").fillna(col(f"metrics.{metric}")), errors="coerce"),
        "n_params": pd.to_numeric(n_params, errors="coerce"),
        "seconds": pd.to_numeric(seconds, errors="coerce"),
        "complete": col("metrics.final_n_params").notna(),
        "status": col("status", ""),
    })
    return out.reset_index(drop=True), exp.experiment_id, metric


def summarise_policies(runs, metric: str = "val_acc"):
    """Per policy: ``runs, complete, best_<metric>, median_<metric>, median_n_params, median_seconds``
    (statistics over complete runs when a policy has any, else over all of its runs)."""
    import pandas as pd

    rows = []
    for policy, g in runs.groupby("policy", sort=True):
        use = g[g["complete"]] if g["complete"].any() else g
        rows.append({
            "policy": policy,
            "runs": int(len(g)),
            "complete": int(g["complete"].sum()),
            f"best_{metric}": float(use[metric].max()),
            f"median_{metric}": float(use[metric].median()),
            "median_n_params": float(use["n_params"].median()),
            "median_seconds": float(use["seconds"].median()),
        })
    cols = ["policy", "runs", "complete", f"best_{metric}", f"median_{metric}", "median_n_params", "median_seconds"]
    return pd.DataFrame(rows, columns=cols).sort_values(f"best_{metric}", ascending=False).reset_index(drop=True)


def pareto_front(df, x: str = "n_params", y: str = "val_acc"):
    """Rows of ``df`` not dominated in (min ``x``, max ``y``), sorted by ``x``."""
    d = df.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    keep, best = [], -math.inf
    for idx, row in d.iterrows():
        if row[y] > best:
            keep.append(idx)
            best = row[y]
    return d.loc[keep]


def plot_accuracy_vs_params(runs, path: str | os.PathLike, title: str = "accuracy against parameters",
                            metric: str = "val_acc") -> Path:
    """Scatter of the final validation score (``metric`` column: accuracy or R²) against parameters,
    one colour per policy (filled: complete runs, hollow: stopped early by ASHA), and the Pareto front
    of the complete runs as a step line."""
    import matplotlib as mpl
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(7.5, 5), dpi=120)
    ax = fig.subplots()
    colours = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    data = runs.dropna(subset=[metric, "n_params"])
    for i, (policy, g) in enumerate(data.groupby("policy", sort=True)):
        c = colours[i % len(colours)]
        done = g[g["complete"]]
        early = g[~g["complete"]]
        ax.scatter(done["n_params"], done[metric], color=c, s=36, label=f"{policy} ({len(done)} complete)", zorder=3)
        if len(early):
            ax.scatter(early["n_params"], early[metric], facecolors="none", edgecolors=c, s=36,
                       label=f"{policy} ({len(early)} stopped early)", zorder=3)
    base = data[data["complete"]] if data["complete"].any() else data
    front = pareto_front(base, y=metric)
    if len(front):
        xs, ys = list(front["n_params"]), list(front[metric])
        right = float(data["n_params"].max())
        if right > xs[-1]:  # carry the last step to the right edge: nothing beyond it is better
            xs.append(right)
            ys.append(ys[-1])
        ax.step(xs, ys, where="post", color="black", lw=1.2, ls="--", label="Pareto front (complete runs)", zorder=2)
    ax.set_xlabel("parameters")
    ax.set_ylabel(_LABELS[metric])
    if len(data) and data["n_params"].max() / max(data["n_params"].min(), 1) > 20:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(data):
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path)
    return path


def compare(tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT, out: str | os.PathLike = "runs/compare",
            parent_run_id: str | None = None, log: bool = True, metric: str | None = None) -> CompareResult:
    """Summarise policies, write ``<out>/policies.csv`` and ``<out>/accuracy_vs_params.png`` and
    log both to the parent run (when all runs share one) or a new ``compare`` run. ``metric``: the
    score compared, ``val_acc`` or ``val_r2`` (None: the one the runs logged, see :func:`load_child_runs`)."""
    from mlflow.tracking import MlflowClient

    from senn_automl.integrations.tracking import check_tracking_uri, resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(tracking_uri)
    try:
        check_tracking_uri(tracking_uri, must_exist=True)  # compare reads: never create an empty store
    except ValueError as exc:
        raise ValueError(f"tracking URI: {exc}") from None
    if parent_run_id is not None and not re.fullmatch(r"[0-9a-f]{32}", parent_run_id):
        raise ValueError(f"parent_run_id={parent_run_id!r} is not an MLflow run id (32 hex digits); copy it from "
                         f"the tune summary ('also an artifact of MLflow run ...')")
    runs, experiment_id, metric = load_child_runs(tracking_uri, experiment, parent_run_id, metric)
    summary = summarise_policies(runs, metric)
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "policies.csv"
    summary.to_csv(csv, index=False)
    png = plot_accuracy_vs_params(runs, out / "accuracy_vs_params.png",
                                  title=f"{experiment}: {len(runs)} runs, {int(runs['complete'].sum()) if len(runs) else 0} complete",
                                  metric=metric)
    logged_to = None
    if log:
        client = MlflowClient(tracking_uri=tracking_uri)
        parents = sorted(set(runs["parent_run_id"])) if len(runs) else []
        if len(parents) == 1:
            logged_to = parents[0]
        else:
            logged_to = client.create_run(experiment_id, run_name="compare", tags={"senn.kind": "compare"}).info.run_id
        client.log_artifact(logged_to, str(png), "compare")
        client.log_artifact(logged_to, str(csv), "compare")
        if len(parents) != 1:
            client.set_terminated(logged_to, "FINISHED")
    return CompareResult(summary=summary, runs=runs, png=str(png), csv=str(csv), logged_to=logged_to, experiment_id=str(experiment_id),
                         metric=metric)
