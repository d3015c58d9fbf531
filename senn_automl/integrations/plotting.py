"""Plots of a growing run (matplotlib's object API: no pyplot state, the caller's backend untouched)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def plot_growth(history: Sequence[dict[str, Any]], growth_log: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Write a PNG with parameters and validation accuracy (regression: R²) against epochs, growth
    events marked.

    ``history`` : per-epoch records with ``epoch``, ``n_params``, ``val_acc`` (or ``val_r2``); ``growth_log`` :
    event dicts with ``epoch`` and ``kind`` (any of :data:`senn_automl.growth.base.EVENT_KINDS`; one
    colour and line style per kind). Returns the path written.
    """
    from matplotlib.figure import Figure

    epochs = [r["epoch"] + 1 for r in history]
    fig = Figure(figsize=(8, 6), layout="constrained")
    ax_p, ax_a = fig.subplots(2, 1, sharex=True)
    ax_p.step(epochs, [r["n_params"] for r in history], where="post", color="tab:blue")
    ax_p.set_ylabel("parameters")
    metric = "val_r2" if history and "val_r2" in history[0] else "val_acc"  # regression: R²
    ax_a.plot(epochs, [r[metric] for r in history], color="tab:green")
    ax_a.set_ylabel("validation R²" if metric == "val_r2" else "validation accuracy")
    ax_a.set_xlabel("epoch")
    styles = {
        "neuron": ("tab:orange", ":", "neuron added"), "layer": ("tab:red", "--", "layer inserted"),
        "units": ("tab:orange", ":", "units added (effective rank)"),
        "conv_layer": ("tab:red", "--", "conv layer added"), "channels": ("tab:orange", ":", "block widened"),
        "edges": ("tab:purple", "--", "edges expanded"), "prune": ("tab:gray", ":", "pruned"),
    }
    seen = set()
    for ev in growth_log:
        color, ls, text = styles.get(ev["kind"], ("gray", "-.", ev["kind"]))
        label = None if ev["kind"] in seen else text
        seen.add(ev["kind"])
        for ax in (ax_p, ax_a):
            ax.axvline(ev["epoch"] + 1, color=color, linestyle=ls, alpha=0.7, label=label if ax is ax_p else None)
    if seen:
        ax_p.legend(loc="lower right")
    if title:
        ax_p.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
