"""SENN's toy regression figure: 1-D least squares grown from one hidden neuron.

A smooth trend with three localised bumps of different widths is fitted by a
:class:`~senn_automl.models.mlp.GrowingMLP` (1 input, 1 output) that starts with ONE hidden neuron,
trained by the library's :class:`~senn_automl.training.trainer.Trainer` with ``task="regression"``
(squared error, :mod:`senn_automl.scores.tasks`) by full-batch Adam, and grown by its
:class:`~senn_automl.growth.natural.NaturalExpansionPolicy`: every ``check_every`` steps the
natural expansion score η = gᵀF⁻¹g of the squared error is measured with K-FAC, the best new
neuron is searched by maximising the lower bound Δη' (candidates start bending at data points,
``candidate_start="data"``) and added, function-preservingly, when ``Δη'/η > τ`` and
``Δη'/λ > α`` on held-out points (Mitchell et al., arXiv:2307.04526, Theorem 3.1 thresholds,
toy values τ = 1, α = 2.5e-3). With one linear output, ``Δη' = E[f r]² / E[f²]`` (Theorem
3.2; ``G = 1``): the part of the residual error ``r`` (what the current neurons cannot fit by
least squares) that the new neuron's activation ``f`` explains, so new neurons bend where the
fit is poor: at the bumps.

The figure shows the data, the fit at every growth check that added a neuron and the final
fit, with each neuron's position ``x = −b/w`` (where its activation bends) coloured by the
step it was added; the fit error at those checks with the new neurons' positions; and the
training MSE, η and the number of neurons against steps.

    python examples/senn_toy_regression.py [--out docs/img] [--seed 0]

Figures of that command (seed 0, torch 2.13 CPU, 1 thread, about 5 s): 1 -> 6 neurons, added at
steps 200, 400, 600, 800 and 1000 at x = -1.45, 1.82, 1.34, 0.41 and 0.13 (bumps at -1.2, 1.6 and
0.3); the RMS residual where each new neuron bends was 1.4 to 2.3 times that elsewhere (median
2.0); training MSE 0.0384 (one neuron, no growth) -> 0.0050 (grown; noise floor 0.0025),
held-out 0.0424 -> 0.0045. Over seeds 0-4: 4-6 neurons, grown held-out MSE 0.0042-0.0058
against 0.034-0.050 for one neuron, and 22 of 23 new neurons bend where the residual was larger
than elsewhere. With candidates started near the origin (``candidate_start="origin"``, the
policy's default) the grown held-out MSE is 0.0051-0.045 over the same seeds, and seed 4 stops at
2 neurons.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from senn_automl.growth.fixed import FixedPolicy
from senn_automl.growth.natural import NaturalExpansionPolicy
from senn_automl.models.mlp import GrowingMLP
from senn_automl.scores.curvature import collect_kfac
from senn_automl.scores.tasks import REGRESSION
from senn_automl.training.trainer import Callback, TrainConfig, Trainer

X_RANGE = (-3.0, 3.0)
#: bumps of the target: (centre, width, height)
BUMPS = ((-1.2, 0.3, -0.7), (0.3, 0.1, 0.5), (1.6, 0.15, 1.0))


def target(x: np.ndarray) -> np.ndarray:
    """Noise-free target ``0.8·tanh(1.5x) + Σ h·exp(−((x−c)/w)²)`` over :data:`BUMPS`; x, result (n,)."""
    y = 0.8 * np.tanh(1.5 * x)
    for c, w, h in BUMPS:
        y = y + h * np.exp(-(((x - c) / w) ** 2))
    return y


def make_data(n: int, seed: int, noise: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points with x uniform on :data:`X_RANGE` and y = target(x) + N(0, noise²).

    Returns float32 tensors X (n, 1) and y (n, 1).
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(*X_RANGE, n)
    y = target(x) + noise * rng.standard_normal(n)
    return torch.tensor(x[:, None], dtype=torch.float32), torch.tensor(y[:, None], dtype=torch.float32)


def neuron_positions(model: GrowingMLP) -> np.ndarray:
    """Where each hidden neuron of a 1-input, 1-hidden-layer model bends: ``x = −b/w``, shape (k,).

    The rational activation ``σ(z)`` (arXiv:2307.04526, §3.4) has its non-linear part
    ``(2vz + c)/(1 + z²)`` centred at ``z = 0``, i.e. at ``x = −b/w`` for ``z = w·x + b``, with a
    width of about ``1/|w|`` in x.
    """
    w = model.linears[0].weight.detach()[:, 0].double()
    b = model.linears[0].bias.detach().double()
    return (-b / w).numpy()


class _Recorder(Callback):
    """Records, for the figure: every ``log_every`` epochs (= full-batch steps) the training MSE,
    η and the width; at every growth check that added neurons the fit on ``grid`` and the training
    residuals (the grown model computes the function of the model before the check: growth is
    function-preserving) and each new neuron's weight and bias."""

    def __init__(self, X, y, grid, log_every: int):
        self.X, self.y, self.grid, self.log_every = X, y, grid, log_every
        self.log, self.checks, self.added_at = [], [], None

    def record(self, model, step: int) -> None:
        with torch.no_grad():
            mse = float(((model(self.X) - self.y) ** 2).mean())
        stats = collect_kfac(model, self.X, self.y, loss_fn=REGRESSION.summed)  # fisher="gauss_newton"
        # for ℓ = (y − t)², δ = 2(y − t): λ = 4·MSE; η/4 is the score in the MSE's units
        self.log.append({"step": step, "mse": mse, "eta": stats.eta / 4, "hidden": model.hidden[0]})

    def on_fit_start(self, trainer) -> None:
        self.added_at = [0] * trainer.model.hidden[0]
        self.record(trainer.model, 0)

    def on_epoch_end(self, trainer, record) -> None:
        step = record["epoch"] + 1
        if step % self.log_every == 0 or record["grew"]:
            self.record(trainer.model, step)

    def on_growth(self, trainer, events) -> None:
        model, step = trainer.model, events[0].epoch + 1
        k = sum(e.n for e in events)
        with torch.no_grad():
            fit = model(self.grid).squeeze(1).numpy()
            res = (self.y - model(self.X)).squeeze(1).numpy()
        lin = model.linears[0]
        added = []
        for j, e in zip(range(model.hidden[0] - k, model.hidden[0]), events):
            w, b = float(lin.weight[j, 0].detach()), float(lin.bias[j].detach())
            added.append({"position": -b / w, "w": w, "b": b, "score": e.score, "ratio": e.ratio, "share": e.score / e.lam})
        self.checks.append({"step": step, "eta": events[0].eta, "added": added, "hidden_before": model.hidden[0] - k,
                            "fit_before": fit, "residual_before": res})
        self.added_at += [step] * k


def train(
    model: GrowingMLP,
    X: torch.Tensor,
    y: torch.Tensor,
    X_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    steps: int,
    lr: float = 1e-2,
    grow: bool = True,
    check_every: int = 200,
    tau: float = 1.0,
    alpha: float = 2.5e-3,
    max_per_check: int | None = 1,
    log_every: int = 20,
    seed: int = 0,
    grid: torch.Tensor | None = None,
) -> dict:
    """Full-batch Adam on the mean squared error for ``steps`` steps by the library's
    :class:`~senn_automl.training.trainer.Trainer` (``task="regression"``; one epoch is one step
    on all ``n`` points), growing with :class:`~senn_automl.growth.natural.NaturalExpansionPolicy`
    every ``check_every`` steps when ``grow``: candidates start bending at data points
    (``candidate_start="data"``), are searched on the training points and accepted on the
    held-out ones when ``Δη'/η > tau`` and ``Δη'/λ > alpha``, at most ``max_per_check`` per
    check (its ``max_additions``); no layer insertion (``grow_depth=False``: the figure is about
    width), no check before training (``check_at_start=False``) and none in the last epoch.

    X, y (n, 1) training points; X_val, y_val (m, 1) held-out points; grid (g, 1) inputs at which
    the fit is recorded at every check that grew. Returns a dict: ``log`` (list of {step, mse
    (training MSE), eta (training η in MSE units), hidden}), one entry every ``log_every`` steps
    and one after every check that added neurons; ``checks`` (list of {step, eta (held-out),
    added, hidden_before, fit_before (g,), residual_before (n,) training residuals y − f(x)}), one
    per check that added neurons; ``added_at`` (the step at which each hidden neuron was added, 0
    for the start neuron, in neuron order).
    """
    policy = NaturalExpansionPolicy(
        tau=tau, alpha=alpha, max_additions=max_per_check, expansion_interval=check_every, grow_depth=False,
        check_at_start=False, candidate_start="data", n_candidates=50, candidate_steps=200, warm_checks=False,
    ) if grow else FixedPolicy()
    config = TrainConfig(task="regression", batch_size=len(X), max_epochs=steps, lr=lr, patience=None, restore_best=False,
                         scoring_batch_size=len(X), seed=seed, device="cpu")
    rec = _Recorder(X, y, grid if grid is not None else X, log_every)
    Trainer(model, policy, config, [rec]).fit(X, y, X_val, y_val)
    return {"log": rec.log, "checks": rec.checks, "added_at": rec.added_at, "model": model}


def near_vs_elsewhere(x: np.ndarray, residual: np.ndarray, w: float, b: float) -> float:
    """RMS of ``residual`` (n,) where a neuron with pre-activation ``z = w·x + b`` bends
    (``|z| < 1``, i.e. within ``1/|w|`` of its position ``−b/w``), divided by the RMS elsewhere.

    > 1: the fit was worse than elsewhere where the neuron was put. ``nan`` if fewer than 3
    points fall on either side.
    """
    near = np.abs(w * x + b) < 1
    if near.sum() < 3 or (~near).sum() < 3:
        return float("nan")
    return float(np.sqrt(np.mean(residual[near] ** 2)) / np.sqrt(np.mean(residual[~near] ** 2)))


def plot(path: Path, X: np.ndarray, y: np.ndarray, grid: np.ndarray, run: dict, base: dict, final_fit: np.ndarray,
         positions: np.ndarray, title: str) -> Path:
    """Write the three-panel figure to ``path``: (1) data, fits before every check that grew and
    the final fit, final neuron positions; (2) the fit error before those checks and where the
    new neurons were put; (3) training MSE (= λ), η and the number of neurons against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grew = [c for c in run["checks"] if c["added"]]
    tab = plt.get_cmap("tab10").colors
    palette = [tab[i] for i in (1, 2, 3, 5, 6, 8, 9)]  # not blue (MSE), purple (η) or grey (start neuron)
    colour = {0: "0.45", **{c["step"]: palette[i % len(palette)] for i, c in enumerate(grew)}}
    fig, (ax_fit, ax_err, ax_curve) = plt.subplots(
        3, 1, figsize=(8.5, 11), constrained_layout=True, gridspec_kw={"height_ratios": [1.3, 0.9, 1.0]}
    )
    for ax in (ax_fit, ax_err):
        for i, (c, w, _) in enumerate(BUMPS):
            ax.axvspan(c - w, c + w, color="0.92", zorder=0, label="target's bumps (centre ± width)" if i == 0 else None)

    # 1. data, fits at the checks that grew, final fit, neuron positions
    ax_fit.scatter(X, y, s=5, color="0.6", label="training data", zorder=1)
    for c in grew:
        k = c["hidden_before"]
        ax_fit.plot(grid, c["fit_before"], color=colour[c["step"]], lw=1.2, label=f"fit at step {c['step']} ({k} neuron{'s' * (k > 1)})")
    ax_fit.plot(grid, final_fit, color="black", lw=2.2, label=f"final fit ({len(positions)} neurons)")
    lo, hi = ax_fit.get_ylim()
    ax_fit.set_ylim(lo - 0.22 * (hi - lo), hi + 0.25 * (hi - lo))
    ymark = lo - 0.12 * (hi - lo)
    for pos, step in zip(positions, run["added_at"]):
        ax_fit.scatter([np.clip(pos, *X_RANGE)], [ymark], color=colour[step], marker="^", s=120, edgecolors="black", zorder=5)
    ax_fit.scatter([], [], marker="^", color="white", edgecolors="black", s=90,
                   label="final neuron positions −b/w (colour: added at that step; grey: start)")
    ax_fit.set_xlim(*X_RANGE)
    ax_fit.set_xlabel("x")
    ax_fit.set_ylabel("y")
    ax_fit.set_title(title)
    ax_fit.legend(loc="upper left", fontsize=7.5, ncol=2, framealpha=0.95)

    # 2. fit error before every growth check that added neurons, and where the new neurons went
    true = target(grid)
    for c in grew:
        ax_err.plot(grid, np.abs(c["fit_before"] - true), color=colour[c["step"]], lw=1.4,
                    label=f"step {c['step']}: |fit − target|, new neuron's bend")
        for a in c["added"]:
            half = 1 / abs(a["w"])
            ax_err.axvspan(a["position"] - half, a["position"] + half, color=colour[c["step"]], alpha=0.12, lw=0)
            ax_err.axvline(np.clip(a["position"], *X_RANGE), color=colour[c["step"]], ls="--", lw=1.4)
    ax_err.set_xlim(*X_RANGE)
    ax_err.set_ylim(0, ax_err.get_ylim()[1] * 1.25)
    ax_err.set_xlabel("x")
    ax_err.set_ylabel("|fit error| before the check")
    ax_err.set_title("each new neuron bends where the fit is poor "
                     "(dashed: its position −b/w; band: where |w·x + b| < 1)", fontsize=10)
    ax_err.legend(loc="upper left", fontsize=7.5, ncol=2, framealpha=0.95)

    # 3. loss (= λ), η, and the number of neurons against steps
    st = [r["step"] for r in run["log"]]
    ax_curve.semilogy(st, [r["mse"] for r in run["log"]], color="tab:blue", lw=1.6, label="training MSE E[(y − t)²]")
    ax_curve.semilogy([r["step"] for r in base["log"]], [r["mse"] for r in base["log"]], color="tab:blue", ls=":",
                      label="training MSE, 1 neuron without growth")
    ax_curve.semilogy(st, [max(r["eta"], 1e-12) for r in run["log"]], color="tab:purple", lw=1.2,
                      label="η/4 = Σ_c η_c/4, natural expansion score (K-FAC gᵀF⁻¹g) in MSE units")
    for c in grew:
        ax_curve.axvline(c["step"], color=colour[c["step"]], ls="--", lw=1.0)
    ax_curve.set_xlabel("training step (full-batch Adam)")
    ax_curve.set_ylabel("MSE, η (log scale)")
    ax_n = ax_curve.twinx()
    ax_n.step(st, [r["hidden"] for r in run["log"]], where="post", color="black", lw=1.8)
    ax_n.set_ylabel("hidden neurons")
    ax_n.set_ylim(0, max(r["hidden"] for r in run["log"]) + 1)
    ax_n.yaxis.get_major_locator().set_params(integer=True)
    h, l = ax_curve.get_legend_handles_labels()
    h += [plt.Line2D([], [], color="black", lw=1.8), plt.Line2D([], [], color="0.4", ls="--", lw=1.0)]
    l += ["hidden neurons (right axis)", "a neuron added (colour: step, as above)"]
    ax_curve.legend(h, l, loc="upper right", fontsize=7.5, framealpha=0.95)
    ax_curve.set_title("loss, natural expansion score and size against steps", fontsize=10)

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(out: Path = Path("docs/img"), seed: int = 0, steps: int = 2000, check_every: int = 200,
         tau: float = 1.0, alpha: float = 2.5e-3, max_per_check: int | None = 1) -> dict:
    """Grow from one neuron, train a 1-neuron baseline from the same start, draw the figure.

    ``tau``, ``alpha`` : SENN's thresholds (official toy values τ = 1, α = 2.5e-3).
    ``max_per_check`` : neurons added per check at most (1: every stage of the figure is one
    neuron; ``None``: up to Theorem 3.1's N_max). Returns a summary dict: ``hidden`` (final
    width), ``mse_start`` (1-neuron training MSE at the first check), ``mse_baseline`` (1 neuron
    after ``steps``), ``mse_final``, ``val_mse_baseline``, ``val_mse_final``, ``near_vs_elsewhere``
    (one per added neuron, see :func:`near_vs_elsewhere`), ``positions`` and ``bend_widths``
    (each neuron's −b/w and 1/|w|), ``added_at``,
    ``plot`` (path written), ``seconds``.
    """
    t0 = time.perf_counter()
    X, y = make_data(300, seed)
    X_val, y_val = make_data(150, seed + 1000)
    grid = torch.linspace(*X_RANGE, 400)[:, None]
    with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG left alone
        torch.manual_seed(seed)
        model = GrowingMLP(1, 1, (1,), max_width=32, max_depth=1)
    baseline = copy.deepcopy(model)
    run = train(model, X, y, X_val, y_val, steps=steps, check_every=check_every, tau=tau, alpha=alpha,
                max_per_check=max_per_check, seed=seed, grid=grid)
    base = train(baseline, X, y, X_val, y_val, steps=steps, grow=False, log_every=50)
    with torch.no_grad():
        final_fit = model(grid).squeeze(1).numpy()
        val_mse = float(F.mse_loss(model(X_val), y_val))
        base_val = float(F.mse_loss(baseline(X_val), y_val))
    x = X.squeeze(1).numpy()
    ratios = []
    print(f"{'step':>5} {'neurons':>7} {'position':>8} {'width 1/|w|':>11} {'Δη′/η':>7} {'Δη′/λ':>7}  RMS residual where it bends / elsewhere")
    for c in run["checks"]:
        for a in c["added"]:
            ratios.append(near_vs_elsewhere(x, c["residual_before"], a["w"], a["b"]))
            print(f"{c['step']:>5} {c['hidden_before']:>7} {a['position']:>8.2f} {1 / abs(a['w']):>11.2f} "
                  f"{a['ratio']:>7.2f} {a['share']:>7.3f}  {ratios[-1]:.2f}")
    positions = neuron_positions(model)
    mse_start = next(r["mse"] for r in run["log"] if r["step"] == check_every)
    title = f"least squares from one hidden neuron: SENN adds {len(positions) - 1} (τ = {tau:g}, α = {alpha:g})"
    path = plot(Path(out) / "senn_toy_regression.png", x, y.squeeze(1).numpy(), grid.squeeze(1).numpy(), run, base,
                final_fit, positions, title)
    result = {
        "hidden": model.hidden[0],
        "mse_start": mse_start,
        "mse_baseline": base["log"][-1]["mse"],
        "mse_final": run["log"][-1]["mse"],
        "val_mse_baseline": base_val,
        "val_mse_final": val_mse,
        "near_vs_elsewhere": ratios,
        "positions": positions.tolist(),
        "bend_widths": (1 / model.linears[0].weight.detach()[:, 0].double().abs()).tolist(),
        "added_at": run["added_at"],
        "plot": str(path),
        "seconds": time.perf_counter() - t0,
    }
    finite = [r for r in ratios if not math.isnan(r)]
    print(
        f"hidden neurons 1 -> {result['hidden']} (added at steps {run['added_at'][1:]}); final positions "
        f"{np.round(np.sort(positions), 2).tolist()}; bumps at {[b[0] for b in BUMPS]}\n"
        f"training MSE: 1 neuron at step {check_every} {mse_start:.4f}, 1 neuron after {steps} steps "
        f"{result['mse_baseline']:.4f}, grown {result['mse_final']:.4f} (noise floor 0.0025); "
        f"held-out MSE {base_val:.4f} (1 neuron) -> {val_mse:.4f} (grown)\n"
        f"RMS residual where each new neuron bends / elsewhere: median {np.median(finite) if finite else float('nan'):.2f}, "
        f"{sum(r > 1 for r in finite)}/{len(ratios)} above 1 (neurons go where the fit is poor)\n"
        f"wrote {path} ({result['seconds']:.1f} s)"
    )
    return result


if __name__ == "__main__":
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/img"), help="folder of the PNG (default docs/img)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=2000, help="full-batch Adam steps (default 2000)")
    args = ap.parse_args()
    main(args.out, args.seed, args.steps)
