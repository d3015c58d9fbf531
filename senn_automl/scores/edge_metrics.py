"""Per-edge metrics of edge-based expansion (CTLab-ITMO self-expanding-nets; torch only)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from senn_automl.models.edge_mlp import EdgeMLP
from senn_automl.validation import is_whole, require_choice

__all__ = ["METRICS", "edge_metrics", "layer_edge_metrics", "normalise_metric"]

#: Edge metrics (those of CTLab-ITMO self-expanding-nets). High value = edge worth expanding / keeping.
METRICS = ("abs_grad", "grad_variance", "weight_sq", "weight_abs")


def normalise_metric(m: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Min-max normalise ``m`` to [0, 1] over its live entries (``mask > 0``); masked entries -> 0.

    A constant (or empty) set of live entries gives all zeros, so nothing passes a threshold > 0.
    """
    live = mask > 0
    out = torch.zeros_like(m)
    if not bool(live.any()):
        return out
    vals = m[live]
    lo, hi = vals.min(), vals.max()
    if not bool(hi > lo):
        return out
    out[live] = (vals - lo) / (hi - lo)
    return out


def layer_edge_metrics(
    model: EdgeMLP, X: torch.Tensor, y: torch.Tensor, metric: str, *, layer: int = -1, batch_size: int = 128,
    normalise: bool = True, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Per-edge metric of every edge matrix of expandable layer ``layer`` (see :data:`METRICS`).

    For each minibatch ``b`` (consecutive slices of ``X`` of ``batch_size`` rows; a shorter last
    batch counts like the others) let ``g_b = ∂L_b/∂w`` with ``L_b`` the mean per-sample loss of
    the batch (default cross-entropy, nats; ``loss_fn(out, y)`` is the loss summed over rows, e.g.
    :meth:`senn_automl.scores.tasks.Task.summed`), taken with respect to the *effective* (masked) weight:

    - ``abs_grad``: ``mean_b |g_b|`` (nats per unit weight);
    - ``grad_variance``: ``var_b |g_b|``, the population variance (divides by the number of
      batches; 0 with a single batch);
    - ``weight_sq``: ``w²``; ``weight_abs``: ``|w|`` (no data needed).

    Parameters
    ----------
    model : EdgeMLP
    X : (N, in_features) float tensor; y : (N,) class indices.
    metric : one of :data:`METRICS`.
    layer : expandable layer index (negative counts from the end).
    batch_size : rows per minibatch (≥ 1).
    normalise : min-max normalise each matrix to [0, 1] over its live entries
        (:func:`normalise_metric`); masked entries are 0 either way.

    Returns
    -------
    list of tensors aligned with :meth:`ExpandingLinear.edge_tensors`: ``[(out, in_total),
    (n_0, p_0), ...]`` float32 on the model's device.

    Raises ``ValueError`` for an unknown metric, a bad layer, ``batch_size < 1`` or empty data.
    """
    require_choice("metric", metric, METRICS)
    loss_fn = loss_fn or (lambda out, t: F.cross_entropy(out, t, reduction="sum"))
    lin = model.layers[model.layer_index(layer)]
    tensors = lin.edge_tensors()
    if metric in ("weight_sq", "weight_abs"):
        with torch.no_grad():
            raw = [(p * m).abs() if metric == "weight_abs" else (p * m) ** 2 for p, m in tensors]
    else:
        if not (is_whole(batch_size) and batch_size >= 1):
            raise ValueError(f"batch_size={batch_size!r} is invalid: use a whole number >= 1")
        if len(X) == 0:
            raise ValueError("edge metrics need at least one scoring row; X is empty")
        params = [p for p, _ in tensors]
        total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        total_sq = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        n_batches = 0
        was = model.training
        model.eval()
        try:
            with torch.enable_grad():
                for i in range(0, len(X), int(batch_size)):
                    xb = X[i : i + batch_size]
                    loss = loss_fn(model(xb), y[i : i + batch_size]) / len(xb)
                    grads = torch.autograd.grad(loss, params)
                    for t, t2, g, (_, m) in zip(total, total_sq, grads, tensors):
                        a = (g * m).abs().double()  # ∂L/∂(w⊙m) = (∂L/∂w) on live entries
                        t += a
                        t2 += a * a
                    n_batches += 1
        finally:
            model.train(was)
        mean = [t / n_batches for t in total]
        if metric == "abs_grad":
            raw = [m.float() for m in mean]
        else:
            raw = [(t2 / n_batches - mu * mu).clamp_min(0).float() for t2, mu in zip(total_sq, mean)]
    raw = [r.detach() * m for r, (_, m) in zip(raw, tensors)]
    return [normalise_metric(r, m) for r, (_, m) in zip(raw, tensors)] if normalise else raw


def edge_metrics(
    model: EdgeMLP, X: torch.Tensor, y: torch.Tensor, metric: str, *, layer: int = -1, batch_size: int = 128,
    normalise: bool = True, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """The metric of every edge of W of expandable layer ``layer``: (out, in_total), in [0, 1]
    when normalised (min-max over W's live entries; masked entries 0). See :func:`layer_edge_metrics`."""
    return layer_edge_metrics(model, X, y, metric, layer=layer, batch_size=batch_size, normalise=normalise, loss_fn=loss_fn)[0]


