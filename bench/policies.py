"""Growth policies side by side: natural, edges, secnn and fixed baselines, each over several seeds.

Every run trains on the same split (``load_dataset(dataset, seed=0)``); the seed (``0 .. --seeds-1``)
varies the weight initialisation, the minibatch order and the candidate search (``TrainConfig.seed``
and ``torch.manual_seed``). All runs get the same number of epochs (``--epochs``) and otherwise the
defaults of :func:`senn_automl.training.config.resolve` (Adam, lr 3e-3, batch 64, early stopping patience 30
on the validation loss, best-validation model restored at the end), except for the overrides below,
which are printed and stored in the JSON (``settings``: each row's config beyond the defaults;
``overrides_of_defaults``: every resolved key that differs from the documented defaults):

==============  ======  ==========================================================================
row             model   configuration
==============  ======  ==========================================================================
``natural``     mlp     ``policy=natural``, config defaults: 1 hidden layer of 10 neurons, check
                        every 10 epochs, τ = 0.03, α = 2.5e-3, acceptance on the validation split
``natural_paper`` mlp   ``policy=natural`` with SENN's acceptance rule and MNIST width settings:
                        ``accept_on=scoring``, ``max_width=128``, ``max_depth=1``,
                        ``weight_decay=1e-3`` (the MLP's "auto" value), and ``tau=0.01`` (the
                        command README.md gives for MNIST)
``edges``       edge    ``policy=edges`` from logistic regression: ``start_depth=0``,
                        ``weight_decay=1e-4``, ``max_events=3`` (the settings of
                        ``examples/edge_growth_mnist.py`` and BENCHMARKS.md; the rest are the
                        policy's defaults: plateau trigger, 100 edges, prune after 5 epochs)
``secnn``       cnn     ``policy=secnn``, config defaults: 3 blocks of 16 channels, a check every
                        epoch (at least 5 epochs after the previous event), ratio rule τ = 1.01;
                        only on image data (digits 1×8×8, mnist 1×28×28)
``fixed_mlp``   mlp     ``policy=fixed`` from the natural start (784-10-10 on MNIST): no growth
``fixed_cnn``   cnn     ``policy=fixed`` from the secnn start (3 blocks of 16): no growth
==============  ======  ==========================================================================

``--policies fixed`` means both fixed rows; ``fixed_edge`` (logistic regression, the edges start,
with the edges row's weight decay) can be asked for but is not in the default set.

Per run (``policies_runs``): test accuracy of the model the trainer returns (best validation
loss), parameters at the start, at the last epoch and of the returned model, the returned model's
architecture (``model.hidden``), growth and prune events (all of them, including those after the
best epoch), wall seconds of ``Trainer.fit`` and the seconds spent in growth checks
(``trainer.timings["growth"]``). ``policies_summary`` gives mean ± std over seeds. ``policies.png``:
test accuracy against the returned model's parameter count (log x; a thin line from each run's
start size), and the wall time per row with the part spent in growth checks.

Epochs: 20 for every row by default (30 would not fit 15 minutes on a shared box). The CNN rows
dominate: about 1.5–2.5 s per MNIST epoch on one thread, plus about 1 s per SECNN check (one
after every epoch once 5 epochs have passed since the last event). The default run (5 seeds × 5
rows) took 6.2 minutes of CPU and 12.5 minutes of wall time on the 2-core dev box while other jobs
kept its load average at 3–4.7 (the JSON records the load at start and end). With 20 epochs the
natural policies are checked once (after epoch 10; the trainer makes no check after the last
epoch) and the edges policy expands about once, not three times as in the 60 epochs of
``examples/edge_growth_mnist.py``.

    python bench/policies.py                                   # mnist, 5 seeds, 20 epochs, all rows
    python bench/policies.py --dataset digits --epochs 40
    python bench/policies.py --policies natural fixed_mlp --seeds 3 --out /tmp/p
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, code_version, machine, peak_rss_mb, report, setup

from senn_automl.data import load_dataset
from senn_automl.training import config
from senn_automl.training.trainer import Trainer

#: row name → (config overrides beyond the defaults, needs images). The only overrides of the
#: documented defaults are edges' (from examples/edge_growth_mnist.py) and natural_paper's; ``policy``/``model``/
#: ``start_depth`` name the row.
ROWS: dict[str, tuple[dict[str, Any], bool]] = {
    "natural": ({"policy": "natural", "model": "mlp"}, False),
    "natural_paper": ({"policy": "natural", "model": "mlp", "accept_on": "scoring", "max_width": 128, "max_depth": 1,
                       "weight_decay": 1e-3, "tau": 0.01}, False),
    "edges": ({"policy": "edges", "model": "edge", "start_depth": 0, "weight_decay": 1e-4, "max_events": 3}, False),
    "secnn": ({"policy": "secnn", "model": "cnn"}, True),
    "fixed_mlp": ({"policy": "fixed", "model": "mlp"}, False),
    "fixed_cnn": ({"policy": "fixed", "model": "cnn"}, True),
    "fixed_edge": ({"policy": "fixed", "model": "edge", "start_depth": 0, "weight_decay": 1e-4}, False),
}
DEFAULT_ROWS = ("natural", "natural_paper", "edges", "secnn", "fixed_mlp", "fixed_cnn")
ALIASES = {"fixed": ("fixed_mlp", "fixed_cnn")}
#: one colour per row (a fixed row: a lighter shade of the growth policy whose start it shares)
COLOURS = {"natural": "tab:blue", "natural_paper": "tab:purple", "fixed_mlp": "#7fb2e5", "edges": "tab:green", "fixed_edge": "#8fd18f",
           "secnn": "tab:red", "fixed_cnn": "#f0a0a0"}
MARKERS = {"mlp": "o", "edge": "s", "cnn": "^"}
GROWTH_KINDS = ("neuron", "layer", "conv_layer", "channels", "edges")
DEFAULT_EPOCHS = 20


def expand(names: list[str], has_images: bool) -> tuple[list[str], list[str]]:
    """Row names to run (aliases expanded, order kept, duplicates dropped) and those skipped for lack of images."""
    out: list[str] = []
    for n in names:
        for m in ALIASES.get(n, (n,)):
            if m not in ROWS:
                raise SystemExit(f"unknown policy row {m!r}; choose from {', '.join([*ROWS, *ALIASES])}")
            if m not in out:
                out.append(m)
    skipped = [n for n in out if ROWS[n][1] and not has_images]
    return [n for n in out if n not in skipped], skipped


def settings(name: str, epochs: int, device: str) -> dict[str, Any]:
    """The flat config of one row: its overrides plus the benchmark's own (epochs, device)."""
    return {**ROWS[name][0], "max_epochs": epochs, "device": device}


def overrides(name: str, epochs: int, device: str) -> dict[str, Any]:
    """Keys of the row's resolved config that differ from the documented defaults (config
    defaults with the chosen policy's own defaults), besides policy/model."""
    conf = settings(name, epochs, device)
    base = config.resolve({"policy": conf["policy"]})
    full = config.resolve(conf)
    return {k: full[k] for k in full if k not in ("policy", "model") and full[k] != base[k]}


def run_one(name: str, seed: int, ds, epochs: int, device: torch.device) -> dict[str, Any]:
    conf = config.resolve(settings(name, epochs, str(device)), seed=seed)
    torch.manual_seed(seed)  # anything drawing from the global RNG (build() seeds the weights itself)
    model, policy, train = config.build(conf, ds.n_features, ds.n_classes, ds.image_shape)
    start_params, start_hidden = model.n_params(), model.hidden
    trainer = Trainer(model, policy, train)
    t0 = time.perf_counter()
    trainer.fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
    seconds = time.perf_counter() - t0
    dev = trainer.device
    test_loss, test_acc = trainer.evaluate(torch.as_tensor(ds.X_test, device=dev), torch.as_tensor(ds.y_test, device=dev))
    log = trainer.growth_log
    best_epoch = min(trainer.history, key=lambda r: r["val_loss"])["epoch"] if trainer.history else None
    return {
        "policy": name,
        "model": config.model_kind(conf),
        "seed": seed,
        "test_acc": round(test_acc, 4),
        "test_loss": round(test_loss, 4),
        "params_start": start_params,
        "params_end": trainer.history[-1]["n_params"],
        "params_final": trainer.model.n_params(),
        "hidden_start": str(_plain(start_hidden)),
        "hidden_final": str(_plain(trainer.model.hidden)),
        "n_growth": sum(e.kind in GROWTH_KINDS for e in log),
        "n_prune": sum(e.kind == "prune" for e in log),
        "events": _events(log),
        "epochs": trainer.epoch,
        "best_epoch": None if best_epoch is None else best_epoch + 1,
        "seconds": round(seconds, 2),
        "growth_s": round(trainer.timings["growth"], 2),
        "train_s": round(trainer.timings["train"], 2),
    }


def _events(log) -> str:
    """``kind@epoch`` per event (epochs from 1), repeats of one check counted: "neuron@10×6 prune@16"."""
    out: list[list] = []
    for e in log:
        tag = f"{e.kind}@{e.epoch + 1}"
        if out and out[-1][0] == tag:
            out[-1][1] += 1
        else:
            out.append([tag, 1])
    return " ".join(t if k == 1 else f"{t}×{k}" for t, k in out) or "-"


def _plain(x):
    return [_plain(v) for v in x] if isinstance(x, (list, tuple)) else int(x)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over seeds per row name (std 0 for a single seed)."""
    out = []
    for name in dict.fromkeys(r["policy"] for r in rows):
        rs = [r for r in rows if r["policy"] == name]

        def ms(key, digits, rs=rs):
            vals = [float(r[key]) for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return round(statistics.fmean(vals), digits), round(sd, digits)

        rec: dict[str, Any] = {"policy": name, "model": rs[0]["model"], "seeds": len(rs)}
        for key, digits in (("test_acc", 4), ("params_start", 0), ("params_final", 0), ("n_growth", 2),
                            ("n_prune", 2), ("seconds", 2), ("growth_s", 2)):
            m, s = ms(key, digits)
            rec[key], rec[f"{key}_std"] = m, s
        out.append(rec)
    return out


#: printed columns of the summary: "mean ± std" strings (the CSV/JSON also hold the numbers, e.g.
#: ``test_acc`` and ``test_acc_std``)
SUMMARY_SHOWN = ["policy", "model", "seeds", "test acc", "params start", "params final", "growth events",
                 "prune events", "wall s", "growth-check s"]


def add_text(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the "mean ± std" strings of :data:`SUMMARY_SHOWN` to each summary row (in place)."""
    def pm(r, key, fmt):
        return f"{format(r[key], fmt)} ± {format(r[key + '_std'], fmt)}"

    for r in summary:
        r.update({"test acc": pm(r, "test_acc", ".4f"), "params start": pm(r, "params_start", ",.0f"),
                  "params final": pm(r, "params_final", ",.0f"), "growth events": pm(r, "n_growth", ".1f"),
                  "prune events": pm(r, "n_prune", ".1f"), "wall s": pm(r, "seconds", ".1f"),
                  "growth-check s": pm(r, "growth_s", ".1f")})
    return summary


def plot(rows: list[dict[str, Any]], summary: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator

    names = [s["policy"] for s in summary]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13.5, 6), gridspec_kw={"width_ratios": [1.35, 1]})
    for name in names:  # fixed rows: large hollow markers, so a growth run that did not grow stays visible on top
        rs = [r for r in rows if r["policy"] == name]
        c, m, fixed = COLOURS[name], MARKERS[rs[0]["model"]], name.startswith("fixed")
        for r in rs:
            if r["params_final"] != r["params_start"]:  # where the run started
                ax.plot([r["params_start"], r["params_final"]], [r["test_acc"]] * 2, color=c, lw=0.8, alpha=0.6, zorder=1)
                ax.plot(r["params_start"], r["test_acc"], marker="|", color=c, ms=9, mew=1.2, alpha=0.8, zorder=1)
        if fixed:
            style = {"facecolor": "none", "edgecolor": c, "linewidth": 1.6, "s": 110, "zorder": 2}
        else:
            style = {"color": c, "edgecolor": "black", "linewidth": 0.5, "s": 45, "zorder": 3}
        ax.scatter([r["params_final"] for r in rs], [r["test_acc"] for r in rs], marker=m,
                   label=f"{name} ({rs[0]['model']}, {'fixed architecture' if fixed else 'growth policy'})", **style)
    ax.set_xscale("log")
    lo = min(min(r["params_start"], r["params_final"]) for r in rows) / 1.25
    hi = max(max(r["params_start"], r["params_final"]) for r in rows) * 1.25
    ax.set_xlim(lo, hi)
    # label 1-2-5 per decade; 1-1.5-2-3-5-7 over about a decade; every 1..9 multiple over less
    span = math.log10(hi / lo)
    subs = (1.0, 2.0, 5.0) if span > 1.5 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if span > 0.6 else (1.0, 1.5, *(float(k) for k in range(2, 10)))
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=tuple(float(k) for k in range(1, 10))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("parameters of the returned (best-validation) model, log scale")
    ax.set_ylabel("test accuracy (returned model)")
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="grey", lw=0.8, marker="|", ms=9))
    labels.append("start size → returned size (runs that grew)")
    ax.legend(handles, labels, fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    ax.set_title("test accuracy against size, one point per seed", fontsize=11)

    y = list(range(len(names)))[::-1]
    top = max(r["seconds"] for r in rows)
    for yi, s in zip(y, summary):
        c = COLOURS[s["policy"]]
        bx.barh(yi, s["seconds"], height=0.6, color=c, alpha=0.55, edgecolor="black", linewidth=0.5)
        if s["growth_s"] > 0:
            bx.barh(yi, s["growth_s"], height=0.6, color=c, hatch="///", edgecolor="black", linewidth=0.5, alpha=0.95)
        secs = [r["seconds"] for r in rows if r["policy"] == s["policy"]]
        bx.scatter(secs, [yi + 0.38] * len(secs), color="black", s=10, zorder=3)
        if s["seeds"] > 1:
            bx.errorbar(s["seconds"], yi, xerr=s["seconds_std"], color="black", capsize=3, lw=1, zorder=2)
        label = f"{s['seconds']:.1f} s" + (f" ({s['growth_s']:.1f} s checks)" if s["growth_s"] >= 0.05 else "")
        bx.text(max(max(secs), s["seconds"] + s["seconds_std"]) + 0.02 * top, yi, label, va="center", fontsize=9)
    bx.set_yticks(y, names)
    bx.set_ylim(-0.6, len(names) - 0.2)
    bx.set_xlim(0, top * 1.6)
    bx.set_xlabel("wall seconds per run (Trainer.fit)")
    bx.grid(True, axis="x", alpha=0.3)
    bx.legend(handles=[Patch(facecolor="lightgrey", edgecolor="black", label="mean over seeds (± std)"),
                       Patch(facecolor="lightgrey", hatch="///", edgecolor="black", label="of which growth checks"),
                       Line2D([], [], color="black", marker="o", ls="", ms=3.5, label="one seed (dots above the bar)")],
              fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    bx.set_title("wall time per run", fontsize=11)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist", help="bundled data set (default mnist; digits works too)")
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds, 0 .. N-1 (default 5)")
    ap.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs for every run (default {DEFAULT_EPOCHS})")
    ap.add_argument("--policies", nargs="+", default=list(DEFAULT_ROWS),
                    help=f"rows to run: {', '.join(ROWS)}; 'fixed' = fixed_mlp fixed_cnn (default: {' '.join(DEFAULT_ROWS)})")
    add_common_args(ap)
    args = ap.parse_args(argv)
    device = setup(args)
    ds = load_dataset(args.dataset, seed=0)
    names, skipped = expand(args.policies, ds.image_shape is not None)
    if skipped:
        print(f"skipped (need image data, {ds.name} has none): {', '.join(skipped)}")
    if not names:
        raise SystemExit("nothing to run")
    changed = {n: overrides(n, args.epochs, str(device)) for n in names}
    print(f"{ds.name}: {len(ds.X_train)} train / {len(ds.X_val)} val / {len(ds.X_test)} test (split seed 0); "
          f"{args.seeds} seed(s); {args.epochs} epochs; device {device}, {torch.get_num_threads()} torch thread(s)")
    print("settings that differ from the documented defaults (config defaults + the policy's own):")
    for n in names:
        print(f"  {n:<10} {changed[n]}")
    load_start = os.getloadavg()[0]  # other jobs on the box slow the wall times down
    git = code_version()  # the code this run imported
    rows = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for n in names:
            r = run_one(n, seed, ds, args.epochs, device)
            rows.append(r)
            print(f"  seed {seed} {n:<10} acc {r['test_acc']:.4f}  params {r['params_start']} -> {r['params_final']}  "
                  f"{r['hidden_final']}  events {r['events']}  {r['seconds']:.1f} s", flush=True)
    total = time.perf_counter() - t0
    load = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count()}
    summary = summarise(rows)
    extra = {"dataset": ds.as_dict(), "epochs": args.epochs, "seeds": list(range(args.seeds)), "policies": names,
             "skipped": skipped, "settings": {n: settings(n, args.epochs, str(device)) for n in names},
             "overrides_of_defaults": changed, "total_seconds": round(total, 1), "peak_rss_mb": round(peak_rss_mb(), 1), "git": git,
             "load_avg_1min": load}
    print()
    report("policies_runs", rows, args.out, device=device, extra=extra,
           columns=["policy", "model", "seed", "test_acc", "params_start", "params_final", "hidden_final", "n_growth",
                    "n_prune", "best_epoch", "seconds", "growth_s", "events"])
    print()
    print("mean ± std over seeds:")
    report("policies_summary", add_text(summary), args.out, device=device, extra=extra, columns=SUMMARY_SHOWN)
    png = args.out / "policies.png"
    plot(rows, summary, png, f"{ds.name} ({len(ds.X_train)} train / {len(ds.X_test)} test, same split), {args.epochs} "
         f"epochs, {args.seeds} seed(s); {machine(device)['device']}, {torch.get_num_threads()} torch thread(s), "
         f"1-min load average {load['start']:.1f} → {load['end']:.1f} on {load['cpu_count']} cores")
    print(f"wrote {png}; total {total:.0f} s, peak RSS {peak_rss_mb():.0f} MiB")
    return {"rows": rows, "summary": summary, "png": png}


if __name__ == "__main__":
    main()
