"""Does searching growth settings beat an ordinary search over fixed sizes, at the same budget?

    python bench/search_vs_fixed.py                                   # digits + MNIST, MLP + CNN, seeds 0-2
    python bench/search_vs_fixed.py --regime time --time-budget-s 60  # as many trials as fit in 60 s
    python bench/search_vs_fixed.py --datasets digits --models mlp --seeds 0 --trials 4 --time-budget-s 30

For every data set, model family and seed, the same ``run_search`` (what ``senn-automl tune``
runs: Ray Tune + Optuna TPE, ASHA, MLflow tracking with every growth checkpoint registered) is
given, on the same split, the same budget: with ``--regime trials`` the same number of trials
(``--trials``, with ``--time-budget-s`` as a cap), with ``--regime time`` the same wall-clock
budget for its trials (``--time-budget-s``, Tune's ``time_budget_s``) and no limit on their
number. Trials still running when the budget ends are stopped (``pruned`` on the leaderboard); the
champion is the best complete trial, a stopped one only when none completed. The arms:

* ``fixed``: fixed networks whose size is searched (``bench/spaces/fixed_mlp.yaml``: width 8-256,
  depth 1-3; ``fixed_cnn.yaml``: 8-64 channels, 2-4 blocks), learning rate and weight decay too;
* ``growth``: growth settings (``growth_mlp.yaml``: natural expansion's tau, alpha, interval and
  start width; ``growth_cnn.yaml``: SECNN's ratio threshold, block capacity, widen step, cooldown
  and start channels), the same learning-rate and weight-decay ranges, epochs and capacity;
* ``growth+pbt`` (MLPs): the growth space under population-based training (``--scheduler pbt``)
  with a population of ``--pbt-population`` members and the same wall budget: exploited members
  take a grown network and keep growing under perturbed settings.

One local Ray instance serves every search (its start is not part of any arm's time). Each row
gives the champion's test accuracy (the registered model loaded back from MLflow, given raw
features; the test split is never seen by a trial), its parameters, the complete and pruned
trials and the wall time. The plot shows, for each search, the test accuracy of the best model so
far (the champion rule applied to the final models registered by then) against
seconds since the search's start. Writes ``search_vs_fixed.{csv,json,png}`` (``--regime time``:
``search_vs_fixed_time.*``) to ``--out``.
Nothing else may compute on the machine meanwhile: the arms are compared at equal wall time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local loopback instance only

HERE = Path(__file__).resolve().parent
SPACES = HERE / "spaces"
#: model family -> (arm, search space file, scheduler)
ARMS = {
    "mlp": (("fixed", "fixed_mlp", "asha"), ("growth", "growth_mlp", "asha"), ("growth+pbt", "growth_mlp", "pbt")),
    "cnn": (("fixed", "fixed_cnn", "asha"), ("growth", "growth_cnn", "asha")),
}
UNLIMITED_TRIALS = 10_000  # --regime time: more than any budget here can run; the budget ends the search
MNIST_TARGET = 0.935  # MLPClassifier((100,)) on the same MNIST folds scores 0.934 (bench/estimator_vs_sklearn.py)


def best_so_far(res, ds) -> list[tuple[float, float, float]]:
    """[(seconds since the search started, test accuracy, parameters)] of the model a user would
    pick at each moment: among the final models registered by then, the one the search's champion
    rule picks (``pick_champion``: the complete trial ranked first on the leaderboard, else the best
    final model by its tags); one point per change, so the last point is the champion."""
    from mlflow.tracking import MlflowClient

    from senn_automl.integrations.tune.summary import pick_champion, version_test_scores

    client = MlflowClient(tracking_uri=res.tracking_uri, registry_uri=res.tracking_uri)
    t0 = client.get_run(res.parent_run_id).info.start_time
    lb = res.leaderboard
    finals = sorted((v for v in res.versions if str(v.tags.get("final", "")).lower() == "true"),
                    key=lambda v: v.creation_timestamp)
    points, current = [], None
    for i, v in enumerate(finals):
        pick = pick_champion(lb, finals[: i + 1], metric="val_acc")
        if pick is not None and pick.version != current:
            current = pick.version
            acc = version_test_scores(res.tracking_uri, res.registered_model_name, pick.version, ds)["accuracy"]
            points.append(((v.creation_timestamp - t0) / 1000.0, acc, model_facts(pick)["n_params"]))
    return points


def model_facts(version) -> dict:
    """Validation accuracy, parameters and growth events of a registered final model, from its
    version's tags: those of the epoch whose model it is (a trial that the time budget stopped has
    no final Tune report, so its leaderboard row may be from an earlier epoch)."""
    tags = version.tags or {}
    step = tags.get("growth_step", "")
    return {"val_acc": float(tags["val_acc"]) if tags.get("val_acc", "") != "" else None,
            "n_params": int(tags["n_params"]), "growth_events": int(step) + 1 if step != "" else 0}


def one_search(dataset: str, model: str, arm: str, space: str, scheduler: str, seed: int, args, work: Path) -> dict:
    from senn_automl.data import load_dataset
    from senn_automl.integrations.tune import run_search

    out = work / f"{dataset}-{model}-{arm.replace('+', '_')}-s{seed}"
    trials = args.pbt_population if scheduler == "pbt" else (args.trials if args.regime == "trials" else UNLIMITED_TRIALS)
    t0 = time.perf_counter()
    res = run_search(
        dataset, SPACES / f"{space}.yaml", num_samples=trials, max_concurrent=args.max_concurrent,
        tracking_uri=f"sqlite:///{out / 'mlflow.db'}", out=out, study_name=f"svf-{out.name}", seed=seed,
        progress=False, scheduler=scheduler, time_budget_s=args.time_budget_s,
    )
    wall = time.perf_counter() - t0
    lb = res.leaderboard
    champ = next((model_facts(v) for v in res.versions if str(v.version) == str(res.champion_version)), None)
    curve = best_so_far(res, load_dataset(dataset, seed=seed)) if champ is not None else []
    statuses = lb["status"].value_counts().to_dict()
    return {
        "regime": args.regime, "dataset": dataset, "model": model, "arm": arm, "seed": seed, "trials": trials,
        "test_acc": None if res.champion_test_acc is None else round(res.champion_test_acc, 4),
        "val_acc": None if champ is None or champ["val_acc"] is None else round(champ["val_acc"], 4),
        "n_params": None if champ is None else champ["n_params"],
        "growth_events": None if champ is None else champ["growth_events"],
        "complete": int(statuses.get("complete", 0)), "pruned": int(statuses.get("pruned", 0)),
        "errors": int(statuses.get("error", 0)), "started": int(len(lb)),
        "fit_s": round(res.timings.get("fit_s", float("nan")), 1), "wall_s": round(wall, 1),
        "curve": [[round(t, 1), round(a, 4), p] for t, a, p in curve],
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over seeds per (regime, dataset, model, arm) (``champions``: seeds whose search had a
    champion, i.e. a trial that logged its final model; the means are over those), with the targets
    of each growth arm against the fixed arm."""
    import pandas as pd

    df = pd.DataFrame(rows)
    mean = df.groupby(["regime", "dataset", "model", "arm"], sort=False).agg(
        seeds=("seed", "count"), champions=("test_acc", "count"), test_acc=("test_acc", "mean"), n_params=("n_params", "mean"),
        complete=("complete", "mean"), pruned=("pruned", "mean"), fit_s=("fit_s", "mean")).reset_index()
    out = []
    for _, r in mean.iterrows():
        fixed = mean[(mean["regime"] == r["regime"]) & (mean["dataset"] == r["dataset"]) & (mean["model"] == r["model"])
                     & (mean["arm"] == "fixed")]
        row = {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in r.items()}
        if r["arm"] != "fixed" and len(fixed):
            f = fixed.iloc[0]
            row["vs_fixed_pt"] = round(100 * (r["test_acc"] - f["test_acc"]), 2)
            row["params_ratio"] = round(r["n_params"] / f["n_params"], 2)
            met = r["test_acc"] >= f["test_acc"] and r["n_params"] < f["n_params"]
            if r["dataset"] == "mnist":
                met = met and r["test_acc"] >= MNIST_TARGET
            row["target_met"] = bool(met)
        out.append(row)
    return out


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # a script: no display
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["dataset"], r["model"]) for r in rows))
    colours = {"fixed": "tab:gray", "growth": "tab:blue", "growth+pbt": "tab:orange"}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (dataset, model) in zip(axes[0], panels):
        seen = set()
        for r in rows:
            if (r["dataset"], r["model"]) != (dataset, model) or not r["curve"]:
                continue
            t = [p[0] for p in r["curve"]] + [r["fit_s"]]
            a = [p[1] for p in r["curve"]] + [r["curve"][-1][1]]
            ax.step(t, a, where="post", color=colours[r["arm"]], alpha=0.8, lw=1.4,
                    label=None if r["arm"] in seen else r["arm"])
            seen.add(r["arm"])
        ax.set_title(f"{dataset}, {model}", fontsize=10)
        ax.set_xlabel("seconds since the search started")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0][0].set_ylabel("test accuracy of the best model so far")
    budget = "equal trials" if rows[0].get("regime", "trials") == "trials" else "equal wall time"
    fig.suptitle(f"Search over growth settings against search over fixed sizes, {budget} (each line one seed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist"])
    ap.add_argument("--models", nargs="+", choices=sorted(ARMS), default=["mlp", "cnn"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--regime", choices=["trials", "time"], default="trials",
                    help="trials: every arm the same --trials (the budget a cap); time: the same --time-budget-s, trials unlimited")
    ap.add_argument("--trials", type=int, default=12, help="--regime trials: trials per search (every arm the same)")
    ap.add_argument("--time-budget-s", type=float, default=90.0, help="wall-clock seconds for each search's trials")
    ap.add_argument("--max-concurrent", type=int, default=2)
    ap.add_argument("--pbt-population", type=int, default=4, help="members of the growth+pbt arm's population")
    ap.add_argument("--no-pbt", action="store_true", help="leave out the growth+pbt arm")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import optuna
    import ray
    from _common import report

    from senn_automl.integrations.tracking import quiet_mlflow
    from senn_automl.integrations.tune.run import ray_env_defaults

    quiet_mlflow()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ray_env_defaults()
    ray_tmp = tempfile.mkdtemp(prefix="svf", dir="/tmp")  # short: Ray socket paths
    work = Path(tempfile.mkdtemp(prefix="senn-svf-"))
    rows = []
    ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR", object_store_memory=256 * 1024**2, _temp_dir=ray_tmp)
    try:
        for seed in args.seeds:
            for dataset in args.datasets:
                for model in args.models:
                    for arm, space, scheduler in ARMS[model]:
                        if arm == "growth+pbt" and args.no_pbt:
                            continue
                        row = one_search(dataset, model, arm, space, scheduler, seed, args, work)
                        rows.append(row)
                        print(f"  {dataset:6s} {model} {arm:10s} seed {seed}: test {row['test_acc']}, "
                              f"{row['n_params']} params, {row['complete']} complete / {row['pruned']} pruned, "
                              f"{row['wall_s']} s", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(rows)
    name = "search_vs_fixed" if args.regime == "trials" else "search_vs_fixed_time"
    report(name, summary, args.out, extra={
        "when_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "regime": args.regime, "trials": args.trials,
        "time_budget_s": args.time_budget_s, "max_concurrent": args.max_concurrent, "per_search": rows,
    })
    print(f"wrote {plot(rows, args.out / f'{name}.png')}")
    return {"rows": rows, "summary": summary}


if __name__ == "__main__":
    main()
