"""Growth overhead: a growing run against a fixed network of its final architecture (MLP and CNN).

    python bench/growth_overhead.py                       # every case, 1 thread, median of 3 runs
    python bench/growth_overhead.py --cases mlp-mnist --set tau=0.003 --repeats 1
    python bench/growth_overhead.py --device cuda         # on a GPU

For each case, two runs with the same data, split, epochs (no early stopping), optimiser and
seed, each in a fresh process (so one run's imports, caches and allocator do not help the other),
each repeated ``--repeats`` times, the two sides alternating (the median wall time of each side is
reported; on a shared 2-core machine single runs vary by about ±10 %, at times more):

1. the growing run, from the case's start model with its growth policy;
2. the fixed run: a network of the grown run's final architecture, fresh weights, policy "fixed".

Both processes first train a throw-away copy of the start model for one epoch on 256 rows
(warm-up: imports, thread pools, allocator), then time ``Trainer.fit``. Reported per case:
wall-time ratio growing / fixed (target <= 1.3); ``ratio_in_run``, the growing run's wall time over
its own time outside growth checks (median over the repeats): an upper bound of the ratio, as the
growing network is never larger than the final one, taken inside one process with checks and
epochs interleaved, so a busy machine moves it much less than the ratio of two separate runs;
the share of the growing run spent in growth
checks (``Trainer.timings["growth"]``: statistics, candidate search, edits), and peak memory
(CPU: peak resident set size of the process, and its rise during the fit; CUDA: peak allocated).
Writes ``growth_overhead.{csv,json,png}`` to ``--out``.

Cases (``--cases``): ``mlp-digits`` (natural policy, defaults, 60 epochs), ``mlp-digits-fast``
(plus stochastic candidate ascent, ``FAST`` below), ``mlp-mnist`` (natural policy with the README's
MNIST settings, 40 epochs), ``mlp-mnist-north`` (the north policy, width cap 128: its checks are
an SVD of the scoring rows' activations per hidden layer and step of the rank loop), ``cnn-mnist`` (SECNN policy on 1×28×28 images, 20 epochs).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_common_args, pick_device, report

#: the candidate search setting of the "-fast" case: stochastic ascent on 256 scoring rows per step
FAST = {"candidate_batch_size": 256}
#: the README's MNIST command
_MNIST = {"max_width": 128, "max_depth": 1, "weight_decay": 1e-3, "accept_on": "scoring", "tau": 0.01}

#: case -> (dataset, epochs, config overrides)
CASES: dict[str, tuple[str, int, dict]] = {
    "mlp-digits": ("digits", 60, {}),
    "mlp-digits-fast": ("digits", 60, FAST),
    "mlp-mnist": ("mnist", 40, _MNIST),
    "mlp-mnist-north": ("mnist", 40, {"policy": "north", "max_width": 128}),
    "cnn-mnist": ("mnist", 20, {"policy": "secnn"}),
}


def _rss_mb() -> float:
    """Current resident set size of this process, MiB (Linux /proc)."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _measure(dataset: str, epochs: int, overrides: dict, seed: int, threads: int, device: str, spec=None) -> dict:
    """One timed fit in this (fresh) process; ``spec`` given: a fixed network of that architecture."""
    import torch
    from _common import peak_rss_mb

    from senn_automl.data import load_dataset
    from senn_automl.growth.fixed import FixedPolicy
    from senn_automl.models.registry import model_from_spec
    from senn_automl.training import config
    from senn_automl.training.trainer import Trainer

    torch.set_num_threads(threads)
    ds = load_dataset(dataset, seed=seed)
    conf = config.resolve(overrides, max_epochs=epochs, patience=None, restore_best=False, seed=seed,
                          device=device, progress=False)
    model, policy, train = config.build(conf, ds.n_features, ds.n_classes, ds.image_shape)
    warm, _, _ = config.build(conf, ds.n_features, ds.n_classes, ds.image_shape)
    Trainer(warm, FixedPolicy(), train).fit(ds.X_train[:256], ds.y_train[:256], epochs=1)
    if spec is not None:
        torch.manual_seed(seed)
        model, policy = model_from_spec(spec), FixedPolicy()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start_params = model.n_params()
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    tr = Trainer(model, policy, train).fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    Xt = torch.as_tensor(ds.X_test, device=tr.device)
    yt = torch.as_tensor(ds.y_test, device=tr.device)
    return {
        "spec": tr.model.spec(),
        "hidden": tr.model.hidden,
        "start_params": start_params,
        "n_params": tr.model.n_params(),
        "events": sum(e.kind != "prune" for e in tr.growth_log),
        "seconds": seconds,
        "train_s": tr.timings["train"],
        "growth_s": tr.timings["growth"],
        "eval_s": tr.timings["eval"],
        "test_acc": tr.evaluate(Xt, yt)[1],
        "peak_rss_mb": peak_rss_mb(),
        "rss_rise_mb": peak_rss_mb() - rss0,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "device": str(tr.device),
    }


def _in_fresh_process(*args, **kwargs) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_measure, args, kwargs)


def _median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2]


def run_case(name: str, seed: int, threads: int, device: str, extra: dict, epochs: int | None = None,
             repeats: int = 3) -> dict:
    dataset, default_epochs, overrides = CASES[name]
    overrides = {**overrides, **extra}
    epochs = epochs or default_epochs
    # growing and fixed runs alternate, so that a slow spell of a shared machine hits both sides
    grows, fixeds = [], []
    for _ in range(repeats):
        grows.append(_in_fresh_process(dataset, epochs, overrides, seed, threads, device))
        if grows[-1]["spec"] != grows[0]["spec"]:
            raise RuntimeError(f"{name}: repeated growing runs with seed {seed} grew different networks; the run is not reproducible")
        fixeds.append(_in_fresh_process(dataset, epochs, overrides, seed, threads, device, spec=grows[0]["spec"]))
    grow, fixed = _median_run(grows), _median_run(fixeds)
    return {
        "case": name,
        "dataset": dataset,
        "epochs": epochs,
        "device": grow["device"],
        "start_params": grow["start_params"],
        "final_hidden": grow["hidden"],
        "final_params": grow["n_params"],
        "events": grow["events"],
        "growing_s": round(grow["seconds"], 2),
        "fixed_s": round(fixed["seconds"], 2),
        "ratio": round(grow["seconds"] / fixed["seconds"], 3),
        "ratio_in_run": round(statistics.median(g["seconds"] / (g["seconds"] - g["growth_s"]) for g in grows), 3),
        "repeats": repeats,
        "growing_s_all": [round(g["seconds"], 2) for g in grows],
        "fixed_s_all": [round(f["seconds"], 2) for f in fixeds],
        "checks_s": round(grow["growth_s"], 2),
        "checks_share": round(grow["growth_s"] / grow["seconds"], 3),
        "acc_growing": round(grow["test_acc"], 4),
        "acc_fixed": round(fixed["test_acc"], 4),
        "peak_rss_growing_mb": round(grow["peak_rss_mb"]),
        "peak_rss_fixed_mb": round(fixed["peak_rss_mb"]),
        "rss_rise_growing_mb": round(grow["rss_rise_mb"], 1),
        "rss_rise_fixed_mb": round(fixed["rss_rise_mb"], 1),
        "cuda_peak_growing_mb": grow["cuda_peak_mb"] and round(grow["cuda_peak_mb"], 1),
        "cuda_peak_fixed_mb": fixed["cuda_peak_mb"] and round(fixed["cuda_peak_mb"], 1),
        "config": overrides,
        "grow_parameter": grow,
        "_fixed": fixed,
    }


def plot(rows: list[dict], path: Path) -> Path:
    """One panel per case (its own time axis): stacked bars of training, growth checks,
    validation and the rest, for the fixed final network and the growing run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 0.6 + 1.45 * len(rows)), squeeze=False)
    parts = (("train_s", "training steps", "tab:blue"), ("growth_s", "growth checks", "tab:red"),
             ("eval_s", "validation", "tab:gray"))
    for i, (row, ax) in enumerate(zip(rows, axes[:, 0])):
        labels = []
        for y, which in enumerate(("_fixed", "grow_parameter")):
            run, left = row[which], 0.0
            for key, label, colour in parts:
                ax.barh(y, run[key], left=left, color=colour, label=label if (i, y) == (0, 1) else None)
                left += run[key]
            ax.barh(y, run["seconds"] - left, left=left, color="tab:olive", label="other" if (i, y) == (0, 1) else None)
            what = "fixed final" if which == "_fixed" else "growing"
            labels.append(f"{what}: {run['n_params']:,} params, test acc {run['test_acc']:.3f}")
        ax.set_yticks([0, 1], labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{row['case']} ({row['epochs']} epochs): ratio {row['ratio']:.2f}, within the growing run {row['ratio_in_run']:.2f}",
                     fontsize=9, loc="left")
        ax.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel(f"wall-clock seconds ({rows[0]['device']}, median of {rows[0]['repeats']} runs per side)")
    fig.suptitle("Growth overhead: growing run vs a fixed network of its final architecture", fontsize=10)
    fig.legend(loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--epochs", type=int, default=None, help="override every case's epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="fresh-process runs per side; the median is reported (default 3)")
    ap.add_argument("--set", dest="set_", action="append", default=[], help="KEY=VALUE config override for every case")
    add_common_args(ap)
    args = ap.parse_args(argv)

    from senn_automl.cli import parse_overrides

    device = str(pick_device(args.device))
    extra = parse_overrides(args.set_)
    if args.repeats < 1:
        ap.error(f"--repeats {args.repeats} is invalid: use at least 1 run per side")
    rows = [run_case(c, args.seed, args.threads, device, extra, args.epochs, args.repeats) for c in args.cases]
    shown = ["case", "epochs", "final_hidden", "start_params", "final_params", "events", "growing_s", "fixed_s", "ratio", "ratio_in_run",
             "checks_s", "checks_share", "acc_growing", "acc_fixed", "peak_rss_growing_mb", "peak_rss_fixed_mb"]
    if device.startswith("cuda"):
        shown += ["cuda_peak_growing_mb", "cuda_peak_fixed_mb"]
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    report("growth_overhead", public, args.out, device=device, columns=shown,
           extra={"threads": args.threads, "note": "ratio = growing_s / fixed_s, target <= 1.3; ratio_in_run = growing_s / (growing_s - checks_s), median over repeats, an upper bound of ratio measured inside one process"})
    png = plot(rows, args.out / "growth_overhead.png")
    print(f"wrote {png}")
    return public


if __name__ == "__main__":
    main()
