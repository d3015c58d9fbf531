"""What a network is trained to do: the per-sample loss every part of the core takes from one place.

A :class:`Task` gives the per-sample loss ``ℓ_n(y_n, t_n)`` of network outputs ``y`` (B, k) and
targets ``t``, the dtype and shape the targets take, and the validation metric. The trainer
minimises the mean of ``ℓ_n``; every growth score (η, λ = E‖∂ℓ/∂y‖², Δη', the SECNN and edge
metrics) differentiates the same ``ℓ_n``.

- ``classification``: ``ℓ_n = −log softmax(y_n)[t_n]`` (cross-entropy), targets (B,) class
  indices (int64), metric accuracy (``val_acc``).
- ``regression``: ``ℓ_n = (1/k) Σ_j (y_nj − t_nj)²`` (squared error, averaged over the k outputs,
  so the mean over rows is the MSE), targets (B, k) float32 (a (B,) target becomes (B, 1)),
  metric R² averaged over outputs (``val_r2``).

Why the growth thresholds keep their meaning for any loss: SENN's score is built from the output
gradients ``δ_n = ∂ℓ_n/∂y_n`` only (arXiv:2307.04526, Eq. 2; the Gauss-Newton factor used by
default has ``G = I`` at the output, whatever the loss, see
:func:`~senn_automl.scores.curvature.collect_kfac`). η, Δη' and λ are all quadratic in δ, so τ
(``Δη'/η``) and α (``Δη'/λ``) are invariant to the scale of the loss; for squared error
``δ_n = (2/k)(y_n − t_n)`` is the residual, and η is the share of the residual's energy that a
natural-gradient step can remove (the paper's 1-D regression example, §4.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from senn_automl.validation import TINY, require_choice

__all__ = ["Task", "TASKS", "CLASSIFICATION", "REGRESSION", "get_task"]


@dataclass(frozen=True)
class Task:
    """The loss, targets and metric of one kind of supervised problem (see the module doc).

    name : "classification" or "regression"; metric : the history key of the validation metric
    (``"val_acc"`` or ``"val_r2"``, higher is better).
    """

    name: str
    metric: str

    @property
    def is_regression(self) -> bool:
        return self.name == "regression"

    def targets(self, y, device) -> torch.Tensor:
        """``y`` as the tensor the loss takes: (n,) int64 class indices, or (n, k) float32 values
        (a 1-D regression target becomes one column)."""
        if self.is_regression:
            t = y.to(device=device, dtype=torch.float32) if torch.is_tensor(y) else torch.tensor(y, dtype=torch.float32, device=device)
            return t.reshape(len(t), -1)
        return y.to(device=device, dtype=torch.long) if torch.is_tensor(y) else torch.tensor(y, dtype=torch.long, device=device)

    def losses(self, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample loss ``ℓ_n``, shape (B,), of outputs ``out`` (B, k) and targets ``t``."""
        if self.is_regression:
            return (out - t).pow(2).mean(dim=1)
        return F.cross_entropy(out, t, reduction="none")

    def loss(self, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean per-sample loss (the training objective): cross-entropy or MSE."""
        if self.is_regression:
            return F.mse_loss(out, t)
        return F.cross_entropy(out, t)

    def summed(self, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``Σ_n ℓ_n``: its gradient w.r.t. ``out`` is the per-sample ``δ_n = ∂ℓ_n/∂y_n`` the growth
        statistics use (the ``loss_fn`` of :func:`~senn_automl.scores.curvature.collect_kfac`)."""
        if self.is_regression:
            return (out - t).pow(2).sum() / out.shape[1]
        return F.cross_entropy(out, t, reduction="sum")

    def score_parts(self, out: torch.Tensor, t: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
        """Sufficient statistics of the metric over one chunk of rows, to be summed over chunks and
        finished by :meth:`finish_score`: classification ``[Σ w·hit]``; regression, per output j,
        ``[Σ w, Σ w·t_j, Σ w·t_j², Σ w·(y_j − t_j)²]`` (float64)."""
        if not self.is_regression:
            hit = (out.argmax(1) == t).double()
            return (hit if w is None else hit * w.double()).sum().reshape(1)
        t64, r = t.double(), (out.double() - t.double())
        ww = torch.ones(len(t), 1, dtype=torch.float64, device=t.device) if w is None else w.double().reshape(-1, 1)
        ones = torch.ones_like(t64)
        return torch.stack([(ww * ones).sum(0), (ww * t64).sum(0), (ww * t64 * t64).sum(0), (ww * r * r).sum(0)])

    def finish_score(self, parts: torch.Tensor, total_weight: float) -> float:
        """Accuracy ``Σ w·hit / Σ w``, or R² = mean over outputs of ``1 − SSE_j / SST_j`` (weighted;
        an output whose targets are constant scores 1 when predicted exactly, else 0, as
        scikit-learn's ``r2_score``)."""
        if not self.is_regression:
            return float(parts[0]) / max(total_weight, TINY)
        sw, st, st2, sse = parts
        sst = (st2 - st * st / sw.clamp_min(TINY)).clamp_min(0.0)
        flat = sst <= 1e-12 * st2.abs().clamp_min(TINY)
        r2 = torch.where(flat, (sse <= 1e-12).double(), 1.0 - sse / sst.clamp_min(TINY))
        return float(r2.mean())


CLASSIFICATION = Task("classification", "val_acc")
REGRESSION = Task("regression", "val_r2")
#: task name -> :class:`Task`
TASKS = {t.name: t for t in (CLASSIFICATION, REGRESSION)}


def get_task(name: str) -> Task:
    """The :class:`Task` called ``name``; ``ValueError`` naming the choices otherwise."""
    require_choice("task", name, tuple(TASKS))
    return TASKS[name]
