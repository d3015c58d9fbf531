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

Peer row: ``--peers gromo`` also grows a GroMo (https://github.com/growingnet/gromo) ``GrowingMLP``
on every fold: the same ``X[train]``, ``y[train]`` / ``X[test]``, ``y[test]``, the same
preprocessing (fitted on the training fold), its own 15 % held-out part of the training fold,
seeded with the fold number, widths capped at ``--set max_width`` (128 when not set; the SENN rows
keep the estimator's default, 64, unless it is set). It starts from one hidden layer of 2 units and
grows with GroMo's tutorial loop (``compute_statistics``, ``compute_optimal_updates``, the layer
of the best first-order improvement, a line search over the scaling factors 0/0.1/0.5/1 on the
held-out part, ``apply_change``; 3 epochs of SGD(lr=0.01) between growth steps, batch 64, at most
100 epochs, best held-out loss kept, patience 30); the settings and why are in ``bench/_gromo.py``.
``--gromo-set key=value`` changes one (e.g. ``optimizer=adam``, ``lr=3e-3``). The row gains
``gromo`` (mean test accuracy), ``gromo_std``, ``gromo_width`` (mean hidden width of the kept
model), ``gromo_params``, ``gromo_steps`` (growth steps per fold) and ``fit_s_gromo``; per-fold
entries the same with a ``gromo_`` prefix; the JSON records GroMo's version
(``importlib.metadata``) and settings under ``peers``; the PNG draws the GroMo folds as green
triangles. GroMo is imported only when the row is asked for (``pip install gromo``).

    python bench/growth_vs_fixed.py --datasets digits mnist --peers gromo --set policy=north --set max_width=128
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _gromo
from _common import add_common_args, code_version, report, setup
from estimator_vs_sklearn import ALL_DATASETS, load_raw, preprocessing

NAME = "growth_vs_fixed"
DATASETS = ("digits", "mnist")
#: target: grown accuracy at least fixed accuracy minus this (fraction)
TARGET_GAP = 0.003
PEERS = ("gromo",)
#: the GroMo row's width cap when ``--set max_width`` is not given
GROMO_MAX_WIDTH = 128


def read_value(text: str) -> Any:
    """A ``--set`` value read as YAML, and ``1e-3``-style numbers (strings to YAML 1.1) as floats."""
    if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", text.strip()):
        return float(text)
    return yaml.safe_load(text)


def parse_pairs(pairs: list[str], flag: str = "--set", example: str = "expansion_interval=3") -> dict[str, Any]:
    """``key=value`` strings -> {key: value read by :func:`read_value`}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{flag} {pair!r}: use key=value, e.g. {flag} {example}")
        out[key] = read_value(value)
    return out


def parse_settings(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``key=value`` strings -> (estimator params, policy params)."""
    from senn_automl.integrations.estimator import SENNClassifier

    names = set(SENNClassifier().get_params())
    est, pol = {}, {}
    for key, value in parse_pairs(pairs).items():
        (est if key in names else pol)[key] = value
    return est, pol


def fit_score(settings: dict[str, Any], X_tr, y_tr, X_te, y_te, name: str):
    from sklearn.pipeline import make_pipeline

    from senn_automl.integrations.estimator import SENNClassifier

    pipe = make_pipeline(preprocessing(name), SENNClassifier(**settings))
    t0 = time.perf_counter()
    pipe.fit(X_tr, y_tr)
    seconds = time.perf_counter() - t0
    return pipe[-1], float(pipe.score(X_te, y_te)), seconds


def fit_peer(gromo: dict[str, Any], X_tr, y_tr, X_te, y_te, name: str, *, seed: int, device: str) -> dict[str, Any]:
    """The GroMo row on one fold: ``preprocessing(name)`` fitted on the training fold, then
    :func:`_gromo.fit_gromo` with ``gromo`` (its settings)."""
    pre = preprocessing(name).fit(X_tr)
    return _gromo.fit_gromo(pre.transform(X_tr), y_tr, pre.transform(X_te), y_te, seed=seed, device=device, **gromo)


def run(name: str, folds: int, est: dict, pol: dict, widths: list[int], device: str,
        gromo: dict[str, Any] | None = None) -> tuple[dict, list[dict]]:
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
        if gromo is not None:
            r = fit_peer(gromo, X[tr], y[tr], X[te], y[te], name, seed=fold, device=device)
            per_fold[-1].update({
                "gromo_acc": r["acc"], "gromo_width": r["width"], "gromo_widths": r["widths"], "gromo_params": r["params"],
                "gromo_steps": r["growth_steps"], "gromo_amplitudes": r["amplitudes"], "gromo_stop": r["stop"],
                "gromo_epochs": r["epochs"], "gromo_best_epoch": r["best_epoch"], "fit_s_gromo": r["fit_s"],
            })
            print(f"{name} fold {fold}: gromo {r['acc']:.4f} {r['widths']} ({r['growth_steps']} growth steps, "
                  f"growth ended: {r['stop']})", flush=True)
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
    if gromo is not None:
        p = [r for r in per_fold if "gromo_acc" in r]
        a = np.array([r["gromo_acc"] for r in p])
        row.update({
            "gromo": round(float(a.mean()), 4), "gromo_std": round(float(a.std()), 4),
            "gromo_width": round(float(np.mean([r["gromo_width"] for r in p])), 1),
            "gromo_params": int(np.mean([r["gromo_params"] for r in p])), "gromo_steps": [r["gromo_steps"] for r in p],
            "fit_s_gromo": round(float(np.mean([r["fit_s_gromo"] for r in p])), 2),
        })
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
        peer = [r for r in rows if "gromo_acc" in r]
        if peer:
            ax.scatter([r["gromo_params"] for r in peer], [r["gromo_acc"] for r in peer], color="C2", marker="^",
                       label="GroMo GrowingMLP (grown)", zorder=2)
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
    ap.add_argument("--peers", nargs="*", default=[], choices=PEERS, help="also grow a peer library's network on the same folds")
    ap.add_argument("--gromo-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of bench/_gromo.py's fit_gromo for the gromo row")
    add_common_args(ap)
    args = ap.parse_args(argv)
    device = setup(args)
    est, pol = parse_settings(args.set)
    gromo, peers = None, {}
    if "gromo" in args.peers:
        _gromo.require()  # before any fold: fail at once without GroMo
        gromo = _gromo.settings(max_width=int(est.get("max_width", GROMO_MAX_WIDTH)), **parse_pairs(args.gromo_set, "--gromo-set", "lr=3e-3"))
        peers["gromo"] = {"version": _gromo.gromo_version(), "settings": gromo}
    rows, per_fold = [], []
    t0 = time.perf_counter()
    for name in args.datasets:
        row, folds = run(name, args.folds, est, pol, args.widths, str(device), gromo)
        rows.append(row)
        per_fold.extend(folds)
    out = Path(args.out)
    report(NAME, rows, out, device=device, extra={"settings": {"estimator": est, "policy": pol}, **({"peers": peers} if peers else {}),
                                                    "per_fold": per_fold,
                                                    "seconds": round(time.perf_counter() - t0, 1), "code": code_version()})
    plot(per_fold, out / f"{NAME}.png")
    print(f"wrote {out / (NAME + '.png')}")
    return rows


if __name__ == "__main__":
    main()
