"""Growth against the same network trained fixed: does growing cost accuracy?

For every fold of ``StratifiedKFold(--folds, shuffle=True, random_state=0)``: fit
``SENNClassifier(random_state=fold, **settings)`` (it grows), read the architecture of the model
it returns (``model_.hidden``, the best-validation epoch's), and fit ``SENNClassifier(policy=
"fixed", hidden_layer_sizes=<that architecture>, random_state=fold, **settings)`` with the same
epochs budget, early stopping, validation split and preprocessing. Both are scored on the test
fold. The target of issue 16: grown ≥ fixed − 0.3 accuracy points (mean over folds).

With ``--widths`` the same folds also train fixed one-hidden-layer nets of those widths, and the
table gives the smallest width whose mean accuracy is within 0.3 points of the best width's
("right size"), next to the grown nets' mean first-layer width.

    python bench/growth_vs_fixed.py                                   # digits and mnist, 5 folds
    python bench/growth_vs_fixed.py --datasets digits --set accept_on=scoring --set grow_depth=false
    python bench/growth_vs_fixed.py --datasets digits mnist --widths 8 16 32 64 128 256

``--set key=value`` sets an estimator parameter, or a policy parameter (passed in
``policy_params``) when the estimator has no parameter of that name; values are read as YAML
(``3``, ``1e-3``, ``false``, ``scoring``). Preprocessing as in ``bench/estimator_vs_sklearn.py``:
pixels / max grey level for the image sets, ``StandardScaler`` for tables, fitted per fold.
Writes ``growth_vs_fixed.{csv,json,png}`` under ``--out`` (default ``bench/results``); the PNG
draws test accuracy against parameters per fold, grown (filled) and fixed (hollow) joined.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, code_version, report, setup
from estimator_vs_sklearn import ALL_DATASETS, load_raw, preprocessing

NAME = "growth_vs_fixed"
DATASETS = ("digits", "mnist")
#: target: grown accuracy at least fixed accuracy minus this (fraction)
TARGET_GAP = 0.003


def parse_settings(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``key=value`` strings -> (estimator params, policy params)."""
    from senn_automl.integrations.estimator import SENNClassifier

    names = set(SENNClassifier().get_params())
    est, pol = {}, {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair!r}: use key=value, e.g. --set expansion_interval=3")
        (est if key in names else pol)[key] = yaml.safe_load(value)
    return est, pol


def fit_score(settings: dict[str, Any], X_tr, y_tr, X_te, y_te, name: str):
    from sklearn.pipeline import make_pipeline

    from senn_automl.integrations.estimator import SENNClassifier

    pipe = make_pipeline(preprocessing(name), SENNClassifier(**settings))
    t0 = time.perf_counter()
    pipe.fit(X_tr, y_tr)
    seconds = time.perf_counter() - t0
    return pipe[-1], float(pipe.score(X_te, y_te)), seconds


def run(name: str, folds: int, est: dict, pol: dict, widths: list[int], device: str) -> tuple[dict, list[dict]]:
    from sklearn.model_selection import StratifiedKFold

    X, y = load_raw(name)
    per_fold, grid = [], {w: [] for w in widths}
    for fold, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y)):
        base = {"random_state": fold, "device": device, **est}
        grown, acc_g, t_g = fit_score({**base, "policy_params": pol or None}, X[tr], y[tr], X[te], y[te], name)
        arch = tuple(int(h) for h in grown.model_.hidden)
        cap = {"max_width": max([int(base.get("max_width", 64)), *arch]), "max_depth": max(int(base.get("max_depth", 3)), len(arch))}
        fixed, acc_f, t_f = fit_score({**base, **cap, "policy": "fixed", "hidden_layer_sizes": arch}, X[tr], y[tr], X[te], y[te], name)
        per_fold.append({
            "dataset": name, "fold": fold, "grown_acc": acc_g, "fixed_acc": acc_f, "diff_pt": 100 * (acc_g - acc_f),
            "arch": list(arch), "params": int(grown.model_.n_params()), "events": len(grown.growth_history_),
            "epochs_grown": grown.n_iter_, "epochs_fixed": fixed.n_iter_, "fit_s_grown": t_g, "fit_s_fixed": t_f,
        })
        print(f"{name} fold {fold}: grown {acc_g:.4f} {list(arch)} ({per_fold[-1]['events']} events) fixed {acc_f:.4f}", flush=True)
        for w in widths:
            cap_w = {"max_width": max(w, int(base.get("max_width", 64)))}
            m, acc, _ = fit_score({**base, **cap_w, "policy": "fixed", "hidden_layer_sizes": (w,)}, X[tr], y[tr], X[te], y[te], name)
            grid[w].append((acc, int(m.model_.n_params())))
    g = np.array([r["grown_acc"] for r in per_fold])
    f = np.array([r["fixed_acc"] for r in per_fold])
    row = {
        "dataset": name, "folds": folds, "grown": round(float(g.mean()), 4), "grown_std": round(float(g.std()), 4),
        "fixed_same": round(float(f.mean()), 4), "diff_pt": round(100 * float((g - f).mean()), 2),
        "target": "met" if g.mean() >= f.mean() - TARGET_GAP else "missed",
        "params": int(np.mean([r["params"] for r in per_fold])),
        "width_grown": round(float(np.mean([r["arch"][0] if r["arch"] else 0 for r in per_fold])), 1),
        "events": [r["events"] for r in per_fold],
        "folds_with_growth": sum(r["events"] > 0 for r in per_fold),
        "fit_s_grown": round(float(np.mean([r["fit_s_grown"] for r in per_fold])), 2),
        "fit_s_fixed": round(float(np.mean([r["fit_s_fixed"] for r in per_fold])), 2),
    }
    if widths:
        means = {w: float(np.mean([a for a, _ in grid[w]])) for w in widths}
        best = max(means.values())
        right = min(w for w in widths if means[w] >= best - TARGET_GAP)
        row.update({"width_grid": {w: round(means[w], 4) for w in widths}, "right_width": right,
                    "size_ratio": round(row["width_grown"] / right, 2)})
        for w in widths:
            per_fold.append({"dataset": name, "fold": -1, "width": w, "fixed_acc": means[w],
                             "params": int(np.mean([p for _, p in grid[w]]))})
    return row, per_fold


def plot(per_fold: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({r["dataset"] for r in per_fold}, key=ALL_DATASETS.index)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        rows = [r for r in per_fold if r["dataset"] == name and r["fold"] >= 0]
        for r in rows:
            ax.plot([r["params"]] * 2, [r["fixed_acc"], r["grown_acc"]], color="0.7", lw=1, zorder=1)
        ax.scatter([r["params"] for r in rows], [r["grown_acc"] for r in rows], color="C0", label="grown", zorder=2)
        ax.scatter([r["params"] for r in rows], [r["fixed_acc"] for r in rows], facecolors="none", edgecolors="C1",
                   label="same architecture, trained fixed", zorder=2)
        grid = sorted((r for r in per_fold if r["dataset"] == name and r["fold"] < 0), key=lambda r: r["params"])
        if grid:
            ax.plot([r["params"] for r in grid], [r["fixed_acc"] for r in grid], "k--", marker=".", lw=1,
                    label="fixed widths " + ", ".join(str(r["width"]) for r in grid) + " (mean)")
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("test accuracy (per fold)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=ALL_DATASETS)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="estimator or policy parameter")
    ap.add_argument("--widths", nargs="*", type=int, default=[], help="also train fixed (w,) nets of these widths")
    add_common_args(ap)
    args = ap.parse_args(argv)
    device = setup(args)
    est, pol = parse_settings(args.set)
    rows, per_fold = [], []
    t0 = time.perf_counter()
    for name in args.datasets:
        row, folds = run(name, args.folds, est, pol, args.widths, str(device))
        rows.append(row)
        per_fold.extend(folds)
    out = Path(args.out)
    report(NAME, rows, out, device=device, extra={"settings": {"estimator": est, "policy": pol}, "per_fold": per_fold,
                                                    "seconds": round(time.perf_counter() - t0, 1), "code": code_version()})
    plot(per_fold, out / f"{NAME}.png")
    print(f"wrote {out / (NAME + '.png')}")
    return rows


if __name__ == "__main__":
    main()
