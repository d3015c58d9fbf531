"""What does the search machinery cost? N trainings through `run_search` against the same N in a loop.

    python bench/search_overhead.py --trials 4

Samples N configurations of the ``quick`` search space once (seeded), then times

1. a plain loop: ``config.build`` + ``Trainer.fit`` for each, in this process, one torch thread
   (as a trial of one CPU), no tracking;
2. ``run_search`` with exactly those configs (Optuna ``points_to_evaluate``), FIFO scheduler (so
   every trial trains the same epochs as in the loop), one CPU (one torch thread) per trial as in the
   loop, MLflow sqlite tracking with a registered version per growth check, ``max_concurrent=1``;
3. the same with ``max_concurrent=2``;
4. where the tracking part of a trial's time goes: the plain loop with the trainable's MLflow
   callback (sqlite store, a registered version per growth check and per final model, the growth
   plot), then without the plot, then with MLflow's asynchronous logging of metrics and params
   (``mlflow.config.enable_async_logging``), each in this process, one thread.

Each ``run_search`` wall time includes starting and stopping a local Ray instance. Prints the
table and writes ``search_overhead.{csv,json,png}`` to ``--out``. The box is
shared, so repeat a run before trusting a small difference.
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


def sample_configs(n: int, seed: int, space_name: str = "quick"):
    """N (searched params, full config) pairs drawn from the search space with a seeded sampler."""
    import optuna

    from senn_automl.integrations.tune.search_space import load_search_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_search_space(space_name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        t = study.ask()
        consts = space(t)
        out.append((dict(t.params), {**consts, **t.params}))
    return out


def plain_loop(configs, dataset: str, seed: int) -> tuple[float, list[float]]:
    import torch

    from senn_automl.data import load_dataset
    from senn_automl.training.config import build, resolve
    from senn_automl.training.trainer import Trainer

    torch.set_num_threads(1)  # as a trial of 1 CPU (senn_automl.integrations.tune.trainable.train_senn)
    ds = load_dataset(dataset, seed=seed)
    t0 = time.perf_counter()
    accs = []
    for _, conf in configs:
        model, policy, train = build(resolve({**conf, "device": "cpu"}), ds.n_features, ds.n_classes)
        tr = Trainer(model, policy, train)
        tr.fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
        accs.append(tr.history[-1]["val_acc"])
    return time.perf_counter() - t0, accs


def tracked_loop(configs, dataset: str, seed: int, work: Path, *, plot: bool = True, async_logging: bool = False) -> float:
    """The plain loop with :class:`MLflowCallback` as the trainable sets it up (one run per training
    under a parent run, every growth checkpoint and final model registered); wall seconds."""
    import torch

    import mlflow
    from senn_automl.data import load_dataset
    from senn_automl.integrations.tracking import MLflowCallback, quiet_mlflow, start_parent_run
    from senn_automl.training.config import build, resolve
    from senn_automl.training.trainer import Trainer

    quiet_mlflow()
    torch.set_num_threads(1)
    ds = load_dataset(dataset, seed=seed)
    store = Path(tempfile.mkdtemp(prefix="track-", dir=work))
    uri = f"sqlite:///{store / 'mlflow.db'}"
    experiment_id, parent = start_parent_run(uri, "bench-tracking", "bench-tracking", {})
    mlflow.config.enable_async_logging(async_logging)
    try:
        t0 = time.perf_counter()
        for i, (_, conf) in enumerate(configs):
            model, policy, train = build(resolve({**conf, "device": "cpu"}), ds.n_features, ds.n_classes)
            mlf = MLflowCallback(uri, experiment_id, parent_run_id=parent, run_name=f"t{i}", params=conf,
                                 registered_model_name="bench-tracking", feature_offset=ds.feature_offset,
                                 feature_scale=ds.feature_scale, input_example=ds.raw("train", 2), plot=plot,
                                 metrics_every=1)  # as train_senn sets it
            Trainer(model, policy, train, [mlf]).fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
        return time.perf_counter() - t0
    finally:
        mlflow.config.enable_async_logging(False)


def through_search(configs, dataset: str, seed: int, max_concurrent: int, work: Path) -> dict:
    from senn_automl.integrations.tracking import quiet_mlflow
    from senn_automl.integrations.tune import run_search

    quiet_mlflow()  # as `senn-automl tune` does: no MLflow INFO lines or download bars
    out = work / f"mc{max_concurrent}"
    ray_tmp = tempfile.mkdtemp(prefix="srb", dir="/tmp")  # short: Ray socket paths
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        res = run_search(
            dataset, "quick", max_concurrent=max_concurrent, tracking_uri=f"sqlite:///{out / 'mlflow.db'}", out=out,
            study_name=f"bench-mc{max_concurrent}", seed=seed, progress=False, scheduler="fifo", cpus_per_trial=1,
            fixed_configs=[p for p, _ in configs], ray_temp_dir=ray_tmp,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    lb = res.leaderboard
    return {
        "wall_s": wall,
        "driver_cpu_s": cpu,
        "trial_seconds_sum": float(lb["seconds"].sum()),
        "statuses": lb["status"].value_counts().to_dict(),
        "registered_versions": len(res.versions),
        "timings": res.timings,
    }


def plot(rows: list[dict], path: Path) -> Path:
    """Horizontal stacked bars: where the wall time of each way of running the N trainings goes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = (("validate_s", "search-space checks", "tab:gray"), ("ray_start_s", "Ray start", "tab:orange"),
             ("tuner_fit_s", "Tuner.fit (trials, tracking)", "tab:blue"),
             ("model_flush_s", "driver's MLflow backlog after Tuner.fit", "tab:red"), ("summary_s", "summary", "tab:purple"),
             ("ray_stop_s", "Ray stop", "tab:olive"))
    fig, ax = plt.subplots(figsize=(10, 2.6))
    for y, row in enumerate(rows):
        if "validate_s" not in row:  # a loop in this process, plain or with tracking
            plain = row["how"] == "plain loop"
            ax.barh(y, row["wall_s"], color="tab:green" if plain else "tab:cyan",
                    label="plain training loop" if plain else ("loop with MLflow tracking" if y == 3 else None))
            continue
        left = 0.0
        for key, label, colour in parts:
            ax.barh(y, row[key], left=left, color=colour, label=label if y == 1 else None)
            left += row[key]
        ax.barh(y, row["wall_s"] - left, left=left, color="tab:brown", label="other" if y == 1 else None)
    ax.set_yticks(range(len(rows)), [f"{r['how']}\n{r['wall_s']:.1f} s" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"wall-clock seconds for {rows[0]['trials']} trainings of the 'quick' space")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from _common import report

    configs = sample_configs(args.trials, args.seed)
    work = Path(tempfile.mkdtemp(prefix="senn-bench-"))
    try:
        loop_s, _ = plain_loop(configs, args.dataset, args.seed)
        s1 = through_search(configs, args.dataset, args.seed, 1, work)
        s2 = through_search(configs, args.dataset, args.seed, 2, work)
        tracked = [(how, tracked_loop(configs, args.dataset, args.seed, work, **kw)) for how, kw in (
            ("loop + MLflow tracking", {}), ("loop + tracking, no growth plot", {"plot": False}),
            ("loop + tracking, async logging", {"async_logging": True}))]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [{"how": "plain loop", "trials": args.trials, "wall_s": round(loop_s, 2)}]
    for mc, r in ((1, s1), (2, s2)):
        t = r["timings"]
        rows.append({
            "how": f"run_search, {mc} concurrent", "trials": args.trials, "wall_s": round(r["wall_s"], 2),
            "validate_s": round(t["validate_s"], 2), "ray_start_s": round(t["ray_init_s"], 2),
            "tuner_fit_s": round(t["fit_s"], 2), "model_flush_s": round(t["model_flush_s"], 2),
            "summary_s": round(t["summary_s"], 2), "ray_stop_s": round(t["ray_stop_s"], 2),
            "overhead_s": round(r["wall_s"] - loop_s, 2), "overhead_per_trial_s": round((r["wall_s"] - loop_s) / args.trials, 2),
            "trial_seconds_sum": round(r["trial_seconds_sum"], 2), "driver_cpu_s": round(r["driver_cpu_s"], 2),
            "registered_versions": r["registered_versions"],
        })
    rows += [{"how": how, "trials": args.trials, "wall_s": round(t, 2), "overhead_s": round(t - loop_s, 2),
              "overhead_per_trial_s": round((t - loop_s) / args.trials, 2)} for how, t in tracked]
    summary = {
        "speedup_mc1_to_mc2": round(s1["wall_s"] / s2["wall_s"], 3),
        "speedup_mc1_to_mc2_tuner_fit": round(s1["timings"]["fit_s"] / s2["timings"]["fit_s"], 3),
        "run_search_over_plain_loop_mc1": round(s1["wall_s"] / loop_s, 3),
    }
    report("search_overhead", rows, args.out, extra={
        "when_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "dataset": args.dataset,
        "search_space": "quick", "configs": [c for _, c in configs], "summary": summary,
        "statuses": {"mc1": s1["statuses"], "mc2": s2["statuses"]},
    })
    print("  " + ", ".join(f"{k} = {v}" for k, v in summary.items()))
    print(f"wrote {plot(rows, args.out / 'search_overhead.png')}")
    return {"rows": rows, **summary}


if __name__ == "__main__":
    main()
