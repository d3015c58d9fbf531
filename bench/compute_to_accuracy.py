"""Compute to accuracy: one growing run against a grid of fixed networks on the same split.

    python bench/compute_to_accuracy.py --dataset mnist
    python bench/compute_to_accuracy.py --dataset digits --widths 8 16 32 64 --depths 1 2

The grid trains one fixed MLP per (width, depth), widths 8…256 and depths 1–3 by default, each
with the same training settings as the growing run (optimiser, learning rate, weight decay,
epochs, early stopping on the validation split, best-validation weights restored). The growing
run starts from the configuration's start model (default one hidden layer of 10 neurons) with the
natural expansion policy.

The grid's best network is chosen by **validation** accuracy (as a grid search would), and its
test accuracy is reported. Printed: the grid's best test accuracy, its parameters and the summed
training time of the whole grid, against the growing run's test accuracy, parameters and time;
"matched" means the growing run's test accuracy is within ``--margin`` (0.5 points) of the grid's
best. Writes ``compute_to_accuracy_<dataset>.{csv,json,png}``; the PNG plots validation accuracy
against parameters for every grid point and the growth trajectory (one point per epoch).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_common_args, report, setup

#: training settings shared by the grid and the growing run, per dataset (the MLP settings
#: BENCHMARKS.md uses for each); override with --set.
SETTINGS = {
    "mnist": {"max_width": 128, "weight_decay": 1e-3, "accept_on": "scoring"},
}


def _fit(conf: dict, ds, device):
    import torch

    from senn_automl.training import config
    from senn_automl.training.trainer import Trainer

    model, policy, train = config.build({**conf, "device": str(device), "progress": False}, ds.n_features, ds.n_classes)
    t0 = time.perf_counter()
    tr = Trainer(model, policy, train).fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
    seconds = time.perf_counter() - t0
    Xt = torch.as_tensor(ds.X_test, device=tr.device)
    yt = torch.as_tensor(ds.y_test, device=tr.device)
    best_val = max(h["val_acc"] for h in tr.history)
    return tr, seconds, best_val, tr.evaluate(Xt, yt)[1]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    ap.add_argument("--depths", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=0.005, help="accuracy margin for 'matched' (0.005 = 0.5 points)")
    ap.add_argument("--set", dest="set_", action="append", default=[], help="KEY=VALUE config override (grid and growth)")
    ap.add_argument("--grow", action="append", default=None, metavar="K=V[,K=V]",
                    help="one growing run with these extra overrides (repeat for several; default: one run, none)")
    add_common_args(ap)
    args = ap.parse_args(argv)
    device = setup(args)

    from senn_automl.cli import parse_overrides
    from senn_automl.data import load_dataset

    ds = load_dataset(args.dataset, seed=args.seed)
    base = {**SETTINGS.get(args.dataset, {}), **parse_overrides(args.set_), "seed": args.seed}

    rows = []
    for depth in args.depths:
        for width in args.widths:
            conf = {**base, "policy": "fixed", "start_width": width, "start_depth": depth,
                    "max_width": max(width, base.get("max_width", width)), "max_depth": max(depth, 3)}
            tr, seconds, val, test = _fit(conf, ds, device)
            rows.append({"run": "grid", "width": width, "depth": depth, "hidden": tr.model.hidden,
                         "n_params": tr.model.n_params(), "epochs": tr.epoch, "val_acc": round(val, 4),
                         "test_acc": round(test, 4), "seconds": round(seconds, 2)})
            print(f"grid {tr.model.hidden}: val {val:.4f} test {test:.4f} {seconds:.1f}s", flush=True)

    grid = [r for r in rows if r["run"] == "grid"]
    best = max(grid, key=lambda r: (r["val_acc"], -r["n_params"]))
    grid_s = sum(r["seconds"] for r in grid)
    summaries, histories = [], []
    for spec in args.grow or [""]:
        extra = parse_overrides([kv for kv in spec.split(",") if kv])
        tr, seconds, val, test = _fit({**base, **extra, "policy": "natural"}, ds, device)
        label = "growing" + (f" ({spec})" if spec else "")
        rows.append({"run": label, "width": None, "depth": None, "hidden": tr.model.hidden,
                     "n_params": tr.model.n_params(), "epochs": tr.epoch, "val_acc": round(val, 4),
                     "test_acc": round(test, 4), "seconds": round(seconds, 2), "events": len(tr.growth_log)})
        histories.append((label, tr.history))
        print(f"{label} {tr.model.hidden}: val {val:.4f} test {test:.4f} {seconds:.1f}s", flush=True)
        summaries.append({
            "dataset": ds.name,
            "growing": label,
            "grid_points": len(grid),
            "grid_best_hidden": best["hidden"],
            "grid_best_params": best["n_params"],
            "grid_best_val_acc": best["val_acc"],
            "grid_best_test_acc": best["test_acc"],
            "grid_best_test_acc_any": max(r["test_acc"] for r in grid),
            "grid_seconds": round(grid_s, 1),
            "growing_hidden": tr.model.hidden,
            "growing_params": tr.model.n_params(),
            "growing_test_acc": round(test, 4),
            "growing_seconds": round(seconds, 2),
            "time_fraction": round(seconds / grid_s, 3),
            "acc_gap_points": round(100 * (test - best["test_acc"]), 2),
            "matched": test >= best["test_acc"] - args.margin,
            "config": {**base, **extra},
        })
    report(f"compute_to_accuracy_{ds.name}", rows, args.out, device=device, extra={"summaries": summaries},
           columns=["run", "hidden", "n_params", "epochs", "val_acc", "test_acc", "seconds"])
    for summary in summaries:
        print("\n".join(f"  {k}: {v}" for k, v in summary.items()))
    png = plot(rows, histories, summaries, args.out / f"compute_to_accuracy_{ds.name}.png")
    print(f"wrote {png}")
    return summaries


def plot(rows, histories, summaries, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    markers = {1: "o", 2: "s", 3: "^"}
    for depth in sorted({r["depth"] for r in rows if r["run"] == "grid"}):
        pts = sorted((r["n_params"], r["val_acc"], r["width"]) for r in rows if r["run"] == "grid" and r["depth"] == depth)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers.get(depth, "o"), ls=":", color="tab:gray",
                label=f"fixed grid, depth {depth}")
        for p, a, w in pts:
            ax.annotate(str(w), (p, a), textcoords="offset points", xytext=(3, -10), fontsize=7, color="tab:gray")
    colours = ["tab:red", "tab:blue", "tab:green", "tab:purple"]
    lows = []
    for k, ((label, history), summary) in enumerate(zip(histories, summaries)):
        c = colours[k % len(colours)]
        xs = [h["n_params"] for h in history]
        ys = [h["val_acc"] for h in history]
        lows.append(min(ys[len(ys) // 4:]))
        ax.plot(xs, ys, color=c, lw=1, alpha=0.6,
                label=f"{label}: test {summary['growing_test_acc']:.3f}, {summary['growing_params']:,} params, "
                      f"{summary['growing_seconds']:.0f} s")
        ax.scatter(xs, ys, color=c, s=8, zorder=3)
        grew = [h for h in history if h["grew"]]
        ax.scatter([h["n_params"] for h in grew], [h["val_acc"] for h in grew], marker="*", s=110, color=c,
                   edgecolor="k", zorder=4)
    ax.scatter([], [], marker="*", s=110, color="w", edgecolor="k", label="epochs with a growth event")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(max(min(lows + [r["val_acc"] for r in rows if r["run"] == "grid"]) - 0.02, 0), None)
    s0 = summaries[0]
    ax.set_title(
        f"{s0['dataset']}: fixed grid of {s0['grid_points']} MLPs, {s0['grid_seconds']:.0f} s in total; best by validation "
        f"{s0['grid_best_hidden']}: test {s0['grid_best_test_acc']:.3f}, {s0['grid_best_params']:,} params\n"
        "growing runs (natural expansion policy), one point per epoch", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
