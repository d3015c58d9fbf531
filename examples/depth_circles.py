"""Depth growth where depth is needed: concentric circles from zero hidden layers.

A linear model cannot separate two concentric circles. Starting from logistic regression
(no hidden layer), the natural expansion policy inserts a hidden layer (identity-initialised,
so the function is unchanged), then widens it, and accuracy rises from the chance level that the
same logistic regression, trained as long without growth, stays at.

    python examples/depth_circles.py [--out runs/circles]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import make_circles
from sklearn.model_selection import train_test_split

from senn_automl.integrations.plotting import plot_growth
from senn_automl.training import config
from senn_automl.training.trainer import Callback, Trainer


def main(out: Path, seed: int = 0) -> dict:
    X, y = make_circles(n_samples=1500, noise=0.08, factor=0.5, random_state=seed)
    X = X.astype(np.float32) * 2
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    X_tr, X_va, y_tr, y_va = train_test_split(X_tr, y_tr, test_size=0.2, random_state=seed, stratify=y_tr)
    conf = config.resolve(
        start_depth=0, max_depth=2, max_width=16, expansion_interval=5, layer_cost=2.0, depth_cooldown=1,
        max_epochs=80, lr=1e-2, patience=None, seed=seed,
    )
    model, policy, train = config.build(conf, 2, 2)

    class Show(Callback):
        def on_growth(self, trainer, events):
            acc = trainer.evaluate(torch.as_tensor(X_va), torch.as_tensor(y_va))[1]
            for e in events:
                when = "before training" if e.epoch < 0 else f"after epoch {e.epoch + 1:>3}"
                print(f"{when}: {e.kind} at {e.where} -> hidden {list(e.hidden_after)} (val acc before: {acc:.3f})")

    trainer = Trainer(model, policy, train, [Show()])
    trainer.fit(X_tr, y_tr, X_va, y_va)
    test_acc = trainer.evaluate(torch.as_tensor(X_te), torch.as_tensor(y_te))[1]
    # the baseline: the same start (no hidden layer) trained as long with growth off
    lin_model, lin_policy, lin_train = config.build({**conf, "policy": "fixed"}, 2, 2)
    linear = Trainer(lin_model, lin_policy, lin_train)
    linear.fit(X_tr, y_tr, X_va, y_va)
    acc0 = linear.evaluate(torch.as_tensor(X_te), torch.as_tensor(y_te))[1]
    log = [e.to_dict() for e in trainer.growth_log]
    plot = plot_growth(trainer.history, log, out / "circles_growth.png", title="concentric circles from zero hidden layers")
    result = {
        "test_acc_linear": acc0,
        "test_acc": test_acc,
        "hidden": trainer.model.hidden,
        "depth_events": sum(e["kind"] == "layer" for e in log),
        "width_events": sum(e["kind"] == "neuron" for e in log),
    }
    print(f"logistic regression (no growth) test acc {acc0:.3f}; grown {result['hidden']} test acc {test_acc:.3f}; plot {plot}")
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/circles"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    main(args.out, args.seed)
