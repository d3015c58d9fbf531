"""SENN's toy classification figure: two spirals grown from zero hidden layers.

Logistic regression (``start_depth=0``) cannot bend its decision boundary around two
interleaved spirals. The real :class:`~senn_automl.training.trainer.Trainer` with SENN's
:class:`~senn_automl.growth.natural.NaturalExpansionPolicy` (Mitchell et al., arXiv:2307.04526; toy
thresholds τ = 1, α = 2.5e-3) checks every 5 epochs: it optimises neuron and layer
candidates for the lower bound Δη' of the natural expansion score η = gᵀF⁻¹g on the training
data and accepts the best one when ``Δη'/η > τ`` and ``Δη'/λ > α`` on the validation split.
Inserted layers start as the identity and new neurons with zero outgoing weights, so the
boundary does not jump at a change; training then bends it. Growth stops when no addition
would raise η enough.

A :class:`~senn_automl.training.trainer.Callback` records the decision boundary at every growth check
that changed the network and η on the validation split after every epoch. The figure shows a
row of boundaries (the linear model right before the first insertion, the boundary each grown
architecture reached before the next change, and the final one), and η and validation accuracy
against epochs with the growth events marked.

    python examples/senn_toy_classification.py [--out docs/img] [--seed 0]

Figures of that command (seed 0, torch 2.13 CPU, 1 thread, about 15 s): no hidden layer ->
[2] (epoch 5) -> [6] (epoch 10) -> [6, 6] (epoch 15) -> [6, 7, 6] (epoch 25), 3 layer insertions
and 5 neurons, every edit changing the outputs by < 1e-6; validation accuracy 0.665 (linear, at
the first insertion) and 0.710 (logistic regression after 80 epochs) -> 0.990 grown; test
accuracy 0.675 -> 0.995.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from senn_automl.scores.curvature import collect_kfac
from senn_automl.training import config
from senn_automl.training.trainer import Callback, Trainer

#: growth and training settings of the figure: SENN's toy thresholds (τ = 1, α = 2.5e-3),
#: a check every 5 epochs, depth cost 2 and a one-check depth cooldown (as in depth_circles.py);
#: Adam at 5e-3 (1e-2 makes the deeper networks' validation accuracy jump by several points between epochs);
#: no check on the untrained network (the figure starts from a trained linear model, as the paper's does);
#: no weight decay (a 2-D toy with 600 training points; the config's "auto" would give the MLP 1e-3)
SETTINGS = {
    "start_depth": 0, "max_depth": 3, "max_width": 16, "tau": 1.0, "alpha": 2.5e-3, "expansion_interval": 5,
    "layer_cost": 2.0, "depth_cooldown": 1, "lr": 5e-3, "batch_size": 64, "patience": None, "restore_best": False,
    "device": "cpu", "check_at_start": False, "weight_decay": 0.0,
}


def make_data(seed: int, n: int = 1000, noise: float = 0.1, turns: float = 1.5):
    """Two interleaved spirals of ``turns`` turns (class 0 and its point reflection, class 1),
    radius up to 2, Gaussian noise of std ``noise``; split 60/20/20 (stratified), seeded.

    Returns ``(X_tr, y_tr, X_va, y_va, X_te, y_te)``: float32 (n_split, 2) inputs and int64
    (n_split,) labels in {0, 1}.
    """
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0, 1, n // 2)) * turns * 2 * np.pi  # uniform density along the area
    arm = np.c_[t * np.cos(t), t * np.sin(t)] / (turns * np.pi)
    X = (np.r_[arm, -arm] + noise * rng.standard_normal((2 * (n // 2), 2))).astype(np.float32)
    y = np.r_[np.zeros(n // 2), np.ones(n // 2)].astype(np.int64)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    X_tr, X_va, y_tr, y_va = train_test_split(X_tr, y_tr, test_size=0.25, random_state=seed, stratify=y_tr)
    return X_tr, y_tr, X_va, y_va, X_te, y_te


def describe(hidden) -> str:
    """Architecture in words: ``[]`` → "no hidden layer", ``[3, 4]`` → "hidden [3, 4]"."""
    return "no hidden layer" if not hidden else f"hidden {list(hidden)}"


class Recorder(Callback):
    """Records the decision boundary at every growth check and η after every epoch.

    ``grid`` : (g, 2) float32 tensor of inputs where P(class 1) is evaluated. ``X_val``,
    ``y_val`` : validation tensors on which η (K-FAC form of arXiv:2307.04526, Eq. 2) and λ are
    measured with the policy's Fisher and damping (the statistics its thresholds use with
    ``accept_on="validation"``).

    After fitting: ``snapshots`` (list of {epoch (0-based), hidden_before, hidden_after, events,
    prob (g,)}), the model at the check (growth is function-preserving, so this is the boundary
    both right before and right after the change); ``etas`` (list of {epoch, eta, lam, hidden}),
    η after the epoch's growth check, in the units of the cross-entropy (nats).
    """

    def __init__(self, grid: torch.Tensor, X_val: torch.Tensor, y_val: torch.Tensor):
        self.grid, self.X_val, self.y_val = grid, X_val, y_val
        self.snapshots: list[dict] = []
        self.etas: list[dict] = []
        self._hidden: list = []

    def prob(self, model) -> np.ndarray:
        """P(class 1) of ``model`` on the grid, shape (g,)."""
        was = model.training
        model.eval()
        with torch.no_grad():
            p = torch.softmax(model(self.grid), 1)[:, 1].numpy()
        model.train(was)
        return p

    def on_fit_start(self, trainer):
        self._hidden = list(trainer.model.hidden)

    def on_growth(self, trainer, events):
        self.snapshots.append({
            "epoch": events[0].epoch, "hidden_before": self._hidden, "hidden_after": list(trainer.model.hidden),
            "events": [e.to_dict() for e in events], "prob": self.prob(trainer.model),
        })

    def on_epoch_end(self, trainer, record):
        pol = trainer.policy
        stats = collect_kfac(trainer.model, self.X_val, self.y_val, damping=pol.damping, fisher=pol.fisher)
        self.etas.append({"epoch": record["epoch"], "eta": stats.eta, "lam": stats.lam, "hidden": list(trainer.model.hidden)})
        self._hidden = list(trainer.model.hidden)


def growth_text(events: list[dict]) -> str:
    """Short text of one check's events, e.g. "+layer, +2 neurons"."""
    layers = sum(e["kind"] == "layer" for e in events)
    neurons = sum(e["n"] for e in events if e["kind"] == "neuron")
    parts = ([f"+{layers} layer{'s' * (layers > 1)}"] if layers else []) + ([f"+{neurons} neuron{'s' * (neurons > 1)}"] if neurons else [])
    return ", ".join(parts)


def plot(path: Path, X: np.ndarray, y: np.ndarray, xx: np.ndarray, yy: np.ndarray, rec: Recorder, final_prob: np.ndarray,
         history: list[dict], baseline: list[dict], log: list[dict], policy_etas: dict[int, float], title: str) -> Path:
    """Write the figure to ``path``: a row of decision boundaries (every growth check, final) over
    the training data, and below η and validation accuracy against epochs with growth events."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (f"epoch {s['epoch'] + 1}: {describe(s['hidden_before'])}", f"then {growth_text(s['events'])} → {describe(s['hidden_after'])}", s["prob"])
        for s in rec.snapshots
    ]
    panels.append((f"epoch {history[-1]['epoch'] + 1} (final): {describe(history[-1]['hidden'])}",
                   f"val acc {history[-1]['val_acc']:.3f}", final_prob))
    n = len(panels)
    fig = plt.figure(figsize=(max(3.3 * n, 9), 7.6), constrained_layout=True)
    gs = fig.add_gridspec(2, n, height_ratios=[1.0, 0.85])
    levels = np.linspace(0, 1, 11)
    for i, (head, sub, prob) in enumerate(panels):
        ax = fig.add_subplot(gs[0, i])
        cs = ax.contourf(xx, yy, prob.reshape(xx.shape), levels=levels, cmap="RdBu_r", alpha=0.75)
        ax.contour(xx, yy, prob.reshape(xx.shape), levels=[0.5], colors="black", linewidths=1.6)
        ax.scatter(X[:, 0], X[:, 1], c=np.where(y == 1, "tab:red", "tab:blue"), s=5, edgecolors="none", alpha=0.8)
        ax.set_title(f"{head}\n{sub}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal")
    fig.colorbar(cs, ax=fig.axes[:n], label="P(class 1)", shrink=0.85, pad=0.01, ticks=[0, 0.5, 1])

    ax = fig.add_subplot(gs[1, :])
    ep = [r["epoch"] + 1 for r in rec.etas]
    ax.semilogy(ep, [r["eta"] for r in rec.etas], color="tab:purple", lw=1.6, label="η = gᵀF⁻¹g after the epoch (validation split)")
    ax.semilogy([e + 1 for e in policy_etas], list(policy_etas.values()), "o", color="tab:purple", mfc="white", ms=5,
                label="η at each growth check, before growing")
    ax.set_xlabel("epoch")
    ax.set_ylabel("natural expansion score η (nats, log)", color="tab:purple")
    ax.tick_params(axis="y", colors="tab:purple")
    acc = ax.twinx()
    acc.plot([r["epoch"] + 1 for r in history], [r["val_acc"] for r in history], color="tab:green", lw=1.8, label="validation accuracy")
    acc.plot([r["epoch"] + 1 for r in baseline], [r["val_acc"] for r in baseline], color="tab:green", ls=":", lw=1.5,
             label="validation accuracy, logistic regression without growth")
    acc.set_ylabel("validation accuracy", color="tab:green")
    acc.tick_params(axis="y", colors="tab:green")
    styles = {"layer": ("tab:red", "--", "layer inserted"), "neuron": ("tab:orange", ":", "neuron(s) added")}
    seen = set()
    for e in log:
        color, ls, text = styles.get(e["kind"], ("gray", "-.", e["kind"]))
        x = e["epoch"] + 1 + (0.25 if e["kind"] == "neuron" else 0.0)  # same check: draw the neuron line just right
        acc.axvline(x, color=color, ls=ls, lw=1.6, label=None if e["kind"] in seen else text)
        seen.add(e["kind"])
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = acc.get_legend_handles_labels()
    acc.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8, frameon=False)
    ax.set_title("natural expansion score and validation accuracy against epochs", fontsize=10)
    fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(out: Path = Path("docs/img"), seed: int = 0, epochs: int = 80) -> dict:
    """Grow logistic regression on two spirals with the Trainer and the natural expansion policy,
    train logistic regression without growth for comparison, draw the figure.

    Returns a summary dict: ``hidden`` (final widths), ``layer_events``, ``neuron_events``,
    ``val_acc_linear`` (validation accuracy of the linear model at the first growth check, or
    at the end if it never grew), ``val_acc_linear_full`` (logistic regression without growth
    after ``epochs``), ``val_acc_final``, ``test_acc_final``, ``test_acc_linear_full``,
    ``max_abs_diff`` (largest output change of a growth edit on the probe batch), ``plot``,
    ``seconds``.
    """
    t0 = time.perf_counter()
    X_tr, y_tr, X_va, y_va, X_te, y_te = make_data(seed)
    lo, hi = X_tr.min(0) - 0.4, X_tr.max(0) + 0.4
    xx, yy = np.meshgrid(np.linspace(lo[0], hi[0], 160), np.linspace(lo[1], hi[1], 160))
    grid = torch.tensor(np.c_[xx.ravel(), yy.ravel()], dtype=torch.float32)
    Xv, yv = torch.as_tensor(X_va), torch.as_tensor(y_va).long()

    conf = config.resolve(**SETTINGS, max_epochs=epochs, seed=seed)
    model, policy, train = config.build(conf, 2, 2)
    rec = Recorder(grid, Xv, yv)
    trainer = Trainer(model, policy, train, [rec]).fit(X_tr, y_tr, X_va, y_va)
    linear = Trainer(*config.build(config.resolve(conf, policy="fixed"), 2, 2)).fit(X_tr, y_tr, X_va, y_va)

    log = [e.to_dict() for e in trainer.growth_log]
    # η the policy measured at each check that grew (before growing): last_eta is stored in the
    # epoch's history record; checks without growth are not marked
    grew_epochs = sorted({e["epoch"] for e in log})
    policy_etas = {ep: trainer.history[ep]["eta"] for ep in grew_epochs}
    first = grew_epochs[0] if grew_epochs else len(trainer.history) - 1
    te = (torch.as_tensor(X_te), torch.as_tensor(y_te).long())
    result = {
        "hidden": list(trainer.model.hidden),
        "layer_events": sum(e["kind"] == "layer" for e in log),
        "neuron_events": sum(e["kind"] == "neuron" for e in log),
        "val_acc_linear": trainer.history[first]["val_acc"],
        "val_acc_linear_full": linear.history[-1]["val_acc"],
        "val_acc_final": trainer.history[-1]["val_acc"],
        "test_acc_final": trainer.evaluate(*te)[1],
        "test_acc_linear_full": linear.evaluate(*te)[1],
        "max_abs_diff": max((e["max_abs_diff"] for e in log), default=0.0),
    }
    for s in rec.snapshots:
        print(f"epoch {s['epoch'] + 1:>3}: {describe(s['hidden_before'])}, val acc "
              f"{trainer.history[s['epoch']]['val_acc']:.3f} -> {growth_text(s['events'])} -> {describe(s['hidden_after'])}")
        for e in s["events"]:
            print(f"           {e['kind']:>6} at {e['where']}: Δη'/η = {e['ratio']:.2f} (τ = {e['tau']:g}), "
                  f"Δη'/λ = {e['score'] / e['lam']:.3f} (α = {e['alpha']:g}), output change {e['max_abs_diff']:.1e}")
    path = plot(Path(out) / "senn_toy_classification.png", X_tr, y_tr, xx, yy, rec, rec.prob(trainer.model),
                trainer.history, linear.history, log, policy_etas,
                f"two spirals from zero hidden layers: SENN natural expansion (τ = {conf['tau']:g}, α = {conf['alpha']:g}, "
                f"layer cost {conf['layer_cost']:g}, check every {conf['expansion_interval']} epochs)")
    result["plot"] = str(path)
    result["seconds"] = time.perf_counter() - t0
    print(
        f"{describe([])} -> {describe(result['hidden'])}: {result['layer_events']} layer insertion(s), "
        f"{result['neuron_events']} neuron addition(s); largest output change of an edit {result['max_abs_diff']:.1e}\n"
        f"validation accuracy: linear model at epoch {first + 1} {result['val_acc_linear']:.3f}, logistic regression "
        f"after {epochs} epochs {result['val_acc_linear_full']:.3f}, grown {result['val_acc_final']:.3f}; "
        f"test accuracy {result['test_acc_linear_full']:.3f} -> {result['test_acc_final']:.3f}\n"
        f"wrote {path} ({result['seconds']:.1f} s)"
    )
    return result


if __name__ == "__main__":
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/img"), help="folder of the PNG (default docs/img)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=80)
    args = ap.parse_args()
    main(args.out, args.seed, args.epochs)
