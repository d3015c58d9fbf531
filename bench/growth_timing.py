"""When does growth happen relative to the validation minimum, and what does growing cost?

Three measurements on the first ``--folds`` folds of ``StratifiedKFold(5, shuffle=True, random_state=0)``, with
the preprocessing of ``bench/estimator_vs_sklearn.py`` (pixels / max grey level, ``StandardScaler``
for tables):

1. **The default's checks against its validation minimum.** ``SENNClassifier(random_state=fold)``
   at its defaults; the epoch of its lowest validation loss (the model it returns), its growth
   events at or before that epoch (kept in the returned model) and after it (discarded by the
   best-model snapshot), the median over checks of the scoring-batch and the held-out ratio
   ``Δη'/η`` of the best neuron candidate of the check's first round (the held-out one is what
   ``accept_on="validation"`` tests against ``tau``), and in how many checks that held-out ratio
   passed ``tau = 0.03``.
2. **Fixed nets' validation minimum.** ``policy="fixed"`` at the start width and at ``--widths``:
   the epoch of the lowest validation loss, that loss and the test accuracy.
3. **Growth early, with no candidate fitting.** Growth up to ``--early-widths`` neurons at every
   check (every epoch; random candidates, ``candidate_steps=0``, scored on the scoring batch with a
   tiny ``tau``), from the check on the untrained network on, and from the check after epoch 0 on
   (``check_at_start=False``), each against the architecture it returns trained fixed from the
   start: what units added while the net trains cost, against units there before training, when
   the new units cannot have fitted the scoring batch.

    python bench/growth_timing.py                          # digits and mnist, 5 folds
    python bench/growth_timing.py --datasets mnist --folds 2

The best candidate's ratios come from wrapping ``NaturalExpansionPolicy.propose`` in this process
(measurement only). Writes ``growth_timing.{csv,json,png}`` under ``--out``; the PNG draws fold 0's
validation loss per epoch for the fixed nets, the default run (growth events marked) and the early
growth run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, code_version, report, setup
from estimator_vs_sklearn import ALL_DATASETS, load_raw, preprocessing

NAME = "growth_timing"
DATASETS = ("digits", "mnist")
#: the default ``tau`` of the natural expansion policy (what the held-out ratio is tested against)
TAU = 0.03
#: settings of measurement 3: grow from the first check on, with random candidates
EARLY = {"expansion_interval": 1, "max_depth": 1, "tau": 1e-3,
         "policy_params": {"min_gap": 0, "accept_on": "scoring", "candidate_steps": 0, "refine_steps": 0,
                           "n_candidates": 100}}


class _Ratios:
    """Within ``with _Ratios() as r:``, collects (epoch, scoring-batch Δη'/η, held-out Δη'/η) of
    the best neuron candidate of every proposal round of
    :class:`~senn_automl.growth.natural.NaturalExpansionPolicy` in this process (its ``propose``
    and ``grow`` are wrapped, and restored on exit)."""

    def __enter__(self):
        from senn_automl.growth.natural import NaturalExpansionPolicy

        self.rows: list[tuple[int, float, float]] = []
        self.epoch = -1
        self._cls = NaturalExpansionPolicy
        self._saved = original, grow = NaturalExpansionPolicy.propose, NaturalExpansionPolicy.grow
        owner = self

        def propose(policy, model, X, y, *args, **kwargs):
            sc, proposals = original(policy, model, X, y, *args, **kwargs)
            neurons = [p for p in proposals if p[2].kind == "neuron"]
            if neurons:
                ratio, _, cand = max(neurons, key=lambda p: p[0])
                owner.rows.append((owner.epoch, cand.score / max(sc.stats.eta, 1e-30), ratio))
            return sc, proposals

        def grow_at(policy, model, ctx):
            owner.epoch = ctx.epoch
            return grow(policy, model, ctx)

        NaturalExpansionPolicy.propose, NaturalExpansionPolicy.grow = propose, grow_at
        return self

    def __exit__(self, *exc):
        self._cls.propose, self._cls.grow = self._saved

    def take(self) -> list[tuple[int, float, float]]:
        rows, self.rows = self.rows, []
        return rows


def fit(settings: dict[str, Any], X_tr, y_tr, X_te, y_te, name: str) -> dict[str, Any]:
    """Fit ``SENNClassifier(**settings)`` behind the data set's preprocessing; its best epoch,
    validation curve, events and test accuracy."""
    from sklearn.pipeline import make_pipeline

    from senn_automl.integrations.estimator import SENNClassifier

    pipe = make_pipeline(preprocessing(name), SENNClassifier(**settings))
    t0 = time.perf_counter()
    pipe.fit(X_tr, y_tr)
    est = pipe[-1]
    curve = [float(r["val_loss"]) for r in est.history_]
    best = int(np.argmin(curve))
    events = [int(e["epoch"]) for e in est.growth_history_ if e["kind"] != "prune"]
    return {"acc": float(pipe.score(X_te, y_te)), "arch": [int(h) for h in est.model_.hidden],
            "best_epoch": best, "best_val_loss": curve[best], "curve": curve, "events": events,
            "kept": sum(e <= best for e in events), "discarded": sum(e > best for e in events),
            "seconds": time.perf_counter() - t0}


def run(name: str, folds: int, widths: list[int], early_widths: list[int], device: str, ratios: _Ratios) -> tuple[list[dict], dict]:
    from sklearn.model_selection import StratifiedKFold

    X, y = load_raw(name)
    rows, curves = [], {}
    for fold, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y)):
        if fold >= folds:
            break
        data = (X[tr], y[tr], X[te], y[te], name)
        base = {"random_state": fold, "device": device}
        ratios.take()
        grown = fit(base, *data)
        checks = ratios.take()
        first = {}
        for epoch, train, held in checks:  # the first proposal round of each check
            first.setdefault(epoch, (train, held))
        before = [v for e, v in first.items() if e <= grown["best_epoch"]]
        rows.append({
            "dataset": name, "fold": fold, "run": "default (grown)", "arch": grown["arch"], "acc": grown["acc"],
            "best_epoch": grown["best_epoch"], "best_val_loss": grown["best_val_loss"],
            "checks_before_best": len(before), "events_kept": grown["kept"], "events_discarded": grown["discarded"],
            "ratio_scoring": float(np.median([t for t, _ in first.values()])) if first else float("nan"),
            "ratio_heldout": float(np.median([h for _, h in first.values()])) if first else float("nan"),
            "heldout_passes": sum(h > TAU for _, h in first.values()), "checks": len(first),
        })
        start = 10
        for w in sorted({start, *widths}):
            fixed = fit({**base, "policy": "fixed", "hidden_layer_sizes": (w,), "max_width": max(w, 64)}, *data)
            rows.append({"dataset": name, "fold": fold, "run": f"fixed [{w}]", "arch": [w], "acc": fixed["acc"],
                         "best_epoch": fixed["best_epoch"], "best_val_loss": fixed["best_val_loss"]})
            if fold == 0:
                curves[f"fixed [{w}]"] = (fixed["curve"], [])
        if fold == 0:
            curves["default (grown)"] = (grown["curve"], grown["events"])
        for width in early_widths:
            for when, at_start in (("from the start", True), ("from epoch 0", False)):
                settings = {**base, **EARLY, "max_width": width,
                            "policy_params": {**EARLY["policy_params"], "check_at_start": at_start}}
                early = fit(settings, *data)
                arch = early["arch"]
                same = fit({**base, "policy": "fixed", "hidden_layer_sizes": tuple(arch), "max_width": max(arch + [64])}, *data)
                label = f"early growth {when}, capacity {width}"
                rows.append({"dataset": name, "fold": fold, "run": label, "arch": arch, "acc": early["acc"],
                             "best_epoch": early["best_epoch"], "best_val_loss": early["best_val_loss"],
                             "events_kept": early["kept"], "events_discarded": early["discarded"]})
                rows.append({"dataset": name, "fold": fold, "run": f"its architecture, fixed ({when}, capacity {width})",
                             "arch": arch, "acc": same["acc"], "best_epoch": same["best_epoch"],
                             "best_val_loss": same["best_val_loss"]})
                if fold == 0:
                    curves[label] = (early["curve"], early["events"])
                print(f"{name} fold {fold}: {label} {arch} {early['acc']:.4f}, fixed {same['acc']:.4f}", flush=True)
        print(f"{name} fold {fold}: default {grown['arch']} best epoch {grown['best_epoch']} "
              f"(events kept {grown['kept']}, discarded {grown['discarded']})", flush=True)
    return rows, curves


def summarise(rows: list[dict]) -> list[dict]:
    """Mean over folds per data set and run."""
    out = []
    keys = ("acc", "best_epoch", "best_val_loss", "checks_before_best", "events_kept", "events_discarded",
            "ratio_scoring", "ratio_heldout", "heldout_passes", "checks")
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for run_name in dict.fromkeys(r["run"] for r in rows if r["dataset"] == name):
            group = [r for r in rows if r["dataset"] == name and r["run"] == run_name]
            row = {"dataset": name, "run": run_name, "folds": len(group),
                   "width": round(float(np.mean([r["arch"][0] for r in group])), 1)}
            for k in keys:
                vals = [r[k] for r in group if k in r]
                if vals:
                    row[k] = round(float(np.mean(vals)), 4)
            out.append(row)
    return out


def plot(curves: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.6 * len(curves), 4), squeeze=False)
    for ax, (name, runs) in zip(axes[0], curves.items()):
        for i, (label, (curve, events)) in enumerate(runs.items()):
            fixed = label.startswith("fixed")
            ax.plot(range(len(curve)), curve, ls="--" if fixed else "-", lw=1.2, color=f"C{i}", label=label)
            best = int(np.argmin(curve))
            ax.scatter([best], [curve[best]], color=f"C{i}", marker="o", zorder=3)
            for e in sorted(set(events)):
                ax.axvline(e, color=f"C{i}", lw=0.6, alpha=0.5)
        ax.set_xlim(0, max(len(c) for c, _ in runs.values()))
        ax.set_yscale("log")
        ax.set_xlabel("epoch (thin lines: growth events; dot: lowest validation loss)")
        ax.set_ylabel("validation loss (fold 0)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=ALL_DATASETS)
    ap.add_argument("--folds", type=int, default=5, choices=range(1, 6), metavar="1..5", help="folds of the 5-fold split to run")
    ap.add_argument("--widths", nargs="*", type=int, default=[32, 128], help="fixed widths besides the start width 10")
    ap.add_argument("--early-widths", nargs="*", type=int, default=[32, 128], help="capacities of measurement 3's early growth")
    add_common_args(ap)
    args = ap.parse_args(argv)
    device = setup(args)
    per_fold, curves = [], {}
    t0 = time.perf_counter()
    with _Ratios() as ratios:
        for name in args.datasets:
            rows, curves[name] = run(name, args.folds, args.widths, args.early_widths, str(device), ratios)
            per_fold.extend(rows)
    table = summarise(per_fold)
    out = Path(args.out)
    report(NAME, table, out, device=device, extra={"per_fold": per_fold, "seconds": round(time.perf_counter() - t0, 1),
                                                   "code": code_version()})
    plot(curves, out / f"{NAME}.png")
    print(f"wrote {out / (NAME + '.png')}")
    return table


if __name__ == "__main__":
    main()
