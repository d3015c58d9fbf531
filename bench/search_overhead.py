"""What does the search machinery cost? N trainings through `run_search` against the same N in a loop.

    python bench/search_overhead.py --trials 4

Samples N configurations of the ``quick`` search space once (seeded), then times

1. a plain loop: ``config.build`` + ``Trainer.fit`` for each, in this process, no tracking;
2. ``run_search`` with exactly those configs (Optuna ``points_to_evaluate``), FIFO scheduler (so
   every trial trains the same epochs as in the loop), MLflow sqlite tracking with a registered
   version per growth check, ``max_concurrent=1``;
3. the same with ``max_concurrent=2``.

Each ``run_search`` wall time includes starting and stopping a local Ray instance. Prints the
figures and writes them as JSON to ``bench/results/search_overhead-<UTC time>.json``. The box is
shared, so repeat a run before trusting a small difference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
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

    from senn_automl.search_space import load_search_space

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

    from senn_automl.config import build, resolve
    from senn_automl.data import load_dataset
    from senn_automl.trainer import Trainer

    torch.set_num_threads(os.cpu_count() or 1)
    ds = load_dataset(dataset, seed=seed)
    t0 = time.perf_counter()
    accs = []
    for _, conf in configs:
        model, policy, train = build(resolve({**conf, "device": "cpu"}), ds.n_features, ds.n_classes)
        tr = Trainer(model, policy, train)
        tr.fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
        accs.append(tr.history[-1]["val_acc"])
    return time.perf_counter() - t0, accs


def through_search(configs, dataset: str, seed: int, max_concurrent: int, work: Path) -> dict:
    from senn_automl.tune import run_search

    out = work / f"mc{max_concurrent}"
    ray_tmp = tempfile.mkdtemp(prefix="srb", dir="/tmp")  # short: Ray socket paths
    t0 = time.perf_counter()
    try:
        res = run_search(
            dataset, "quick", max_concurrent=max_concurrent, tracking_uri=f"sqlite:///{out / 'mlflow.db'}", out=out,
            study_name=f"bench-mc{max_concurrent}", seed=seed, progress=False, scheduler="fifo",
            fixed_configs=[p for p, _ in configs], ray_temp_dir=ray_tmp,
        )
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    lb = res.leaderboard
    return {
        "wall_s": wall,
        "trial_seconds_sum": float(lb["seconds"].sum()),
        "statuses": lb["status"].value_counts().to_dict(),
        "registered_versions": len(res.versions),
        "timings": res.timings,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)

    configs = sample_configs(args.trials, args.seed)
    work = Path(tempfile.mkdtemp(prefix="senn-bench-"))
    try:
        loop_s, _ = plain_loop(configs, args.dataset, args.seed)
        print(f"plain loop           : {args.trials} trainings in {loop_s:7.1f} s", flush=True)
        s1 = through_search(configs, args.dataset, args.seed, 1, work)
        print(f"run_search, 1 at once: {args.trials} trials    in {s1['wall_s']:7.1f} s "
              f"(overhead {s1['wall_s'] - loop_s:+.1f} s, {(s1['wall_s'] - loop_s) / args.trials:+.1f} s/trial; "
              f"{s1['registered_versions']} model versions)", flush=True)
        s2 = through_search(configs, args.dataset, args.seed, 2, work)
        print(f"run_search, 2 at once: {args.trials} trials    in {s2['wall_s']:7.1f} s", flush=True)
        speedup = s1["wall_s"] / s2["wall_s"]
        fit_speedup = s1["timings"]["fit_s"] / s2["timings"]["fit_s"]
        for name, r in (("1 at once", s1), ("2 at once", s2)):
            t = r["timings"]
            print(f"  {name}: validate {t['validate_s']:.1f} s, Ray start {t['ray_init_s']:.1f} s, "
                  f"Tuner.fit {t['fit_s']:.1f} s, summary {t['summary_s']:.1f} s")
        print(f"speed-up from max_concurrent 1 -> 2: {speedup:.2f}x whole run_search, {fit_speedup:.2f}x Tuner.fit   "
              f"(run_search / plain loop at 1: {s1['wall_s'] / loop_s:.2f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "when_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "trials": args.trials,
        "dataset": args.dataset,
        "search_space": "quick",
        "configs": [c for _, c in configs],
        "plain_loop_s": loop_s,
        "run_search_mc1": s1,
        "run_search_mc2": s2,
        "overhead_s_mc1": s1["wall_s"] - loop_s,
        "overhead_s_per_trial_mc1": (s1["wall_s"] - loop_s) / args.trials,
        "speedup_mc1_to_mc2": speedup,
        "speedup_mc1_to_mc2_fit_only": fit_speedup,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"search_overhead-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
