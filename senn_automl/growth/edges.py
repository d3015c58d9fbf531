"""Edge-based expansion: score single weights, give the best ones a vertex of their own (torch only).

Method: CTLab-ITMO "self-expanding-nets" (github.com/CTLab-ITMO/self-expanding-nets), with
the defects of the published code fixed (docs/design.md): the new vertices use an activation that is
the identity for inputs of *any* sign (SENN's rational activation at ``IDENTITY``, arXiv:2307.04526 §3.4), the
extra edges start at exactly zero (so an expansion is exactly function-preserving), pruning
removes edges whose metric is **at most** the threshold, and every other parameter keeps
training with its optimiser state (edits go through :func:`senn_automl.training.surgery.apply_edit`).

Pieces
------
- :func:`senn_automl.scores.edge_metrics.edge_metrics` / ``layer_edge_metrics``: one of
  ``METRICS`` per weight, aggregated over minibatches and min-max normalised to [0, 1] within
  each weight matrix.
- :class:`senn_automl.models.edge_mlp.ExpandingLinear`: ``y = (W ⊙ M) h + b`` whose input ``h``
  grows by one block of new vertices per expansion event (DenseNet-style concatenation);
  ``EdgeBlock`` is one block.
- :class:`senn_automl.models.edge_mlp.EdgeMLP` (spec type ``"EdgeMLP"``): a stack of expandable
  layers, logistic regression by default.
- :class:`EdgeExpansionPolicy` (policy ``"edges"``, this module): when (plateau of the validation loss by
  default), what (edges above a normalised threshold) and pruning (``prune_after`` epochs later).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch

from senn_automl.growth.base import GrowthContext, GrowthEvent, GrowthPolicy, register_policy
from senn_automl.models.edge_mlp import EdgeMLP, ExpandingLinear
from senn_automl.scores.edge_metrics import METRICS, layer_edge_metrics
from senn_automl.scores.tasks import CLASSIFICATION, Task
from senn_automl.validation import is_real, is_whole, require, require_bool, require_choice

__all__ = ["EdgeExpansionPolicy"]


@register_policy
@dataclass
class EdgeExpansionPolicy(GrowthPolicy):
    """Edge-based expansion of an :class:`EdgeMLP` (CTLab-ITMO self-expanding-nets; see the module doc).

    When (:mod:`senn_automl.growth.triggers`, default ``when="plateau"``): the mean |Δ val_loss| over
    ``plateau_window`` epochs falls below ``plateau_threshold``, at least ``min_gap`` epochs
    after the last growth or pruning event. What: :func:`edge_metrics` of expandable layer
    ``layer`` on the trainer's scoring batch (training rows; validation data only drives the
    trigger), the live edges with normalised metric ``> edge_threshold``, highest first, at most
    ``max_edges``, each get a vertex (:meth:`ExpandingLinear.expand`, exactly function-preserving,
    applied with the probe check). Pruning: ``prune_after`` epochs after an event, the event's
    zero-initialised extra edges whose normalised metric (fresh, same metric) is **at most**
    ``prune_threshold`` are removed (plus vertices left without any outgoing edge), applied with
    ``apply(edit, check=False)``; recorded as a ``"prune"`` event. Survivors keep their values
    and optimiser state.

    Parameters (defaults tuned on the bundled MNIST sample, ``examples/edge_growth_mnist.py``)
    ----------
    metric : one of :data:`METRICS` (default ``"abs_grad"``).
    edge_threshold : normalised metric an edge must exceed to be expanded, in (0, 1] (0.2);
        1.0 never expands (nothing exceeds the maximum).
    max_edges : cap on edges (= new vertices) per event, ≥ 1 (100). An event on a layer with
        ``out`` outputs adds ``n·p + n·out + 3n − n`` parameters for ``n`` edges with ``p``
        distinct parents (dense block; most zero-initialised extras are pruned later).
    prune_after : epochs between an event and its pruning (≥ 1; 5), or ``None``: no pruning.
    prune_threshold : normalised metric at or below which an extra edge is pruned, in [0, 1) (0.05).
    prune_existing : also prune live edges of the layer that predate the event (W columns before
        the event's vertices and earlier blocks' in-edges; the event's primary edges are kept).
    layer : expandable layer to grow (negative counts from the end; default -1, the output layer).
    metric_batch_size : minibatch rows for the gradient metrics, ≥ 1 (128; the trainer's
        scoring batch of 1024 rows gives 8 batches for ``grad_variance``).
    max_events : stop expanding after this many expansion events (``None``: no cap).
    when, plateau_window, plateau_threshold, min_gap, expansion_interval : the trigger of
        :class:`~senn_automl.growth.base.GrowthPolicy` (defaults here: plateau, 3 epochs,
        5e-3 nats, 5 epochs).

    Pruned entries are masked: zero in the forward pass, so their gradient is exactly zero and
    they never come back, and their stored values are reset to zero at every epoch. Their old
    Adam moments are not cleared (the trainer's ``apply`` carries optimiser state only by whole
    parameter), which can move only the masked, unused storage between two epochs.

    Raises ``ValueError`` (from :meth:`validate`) naming the argument and the fix.
    """

    name: ClassVar[str] = "edges"
    model_types: ClassVar[tuple[str, ...]] = ("EdgeMLP",)
    when: str = "plateau"
    plateau_window: int = 3
    plateau_threshold: float = 5e-3
    min_gap: int = 5
    metric: str = "abs_grad"
    edge_threshold: float = 0.2
    max_edges: int = 100
    prune_after: int | None = 5
    prune_threshold: float = 0.05
    prune_existing: bool = False
    layer: int = -1
    metric_batch_size: int = 128
    max_events: int | None = None
    #: expansion events not yet pruned: [layer, block index, epoch of the event]
    _pending: list = field(default_factory=list, repr=False)
    _n_events: int = field(default=0, repr=False)

    def validate(self) -> None:
        super().validate()
        require_choice("metric", self.metric, METRICS)
        require(is_real(self.edge_threshold) and 0 < self.edge_threshold <= 1, "edge_threshold", self.edge_threshold, "the normalised expansion threshold must be in (0, 1], e.g. 0.2")
        require(is_whole(self.max_edges) and self.max_edges >= 1, "max_edges", self.max_edges, "use a whole number of edges per event >= 1")
        require(self.prune_after is None or (is_whole(self.prune_after) and self.prune_after >= 1), "prune_after", self.prune_after, "pruning delay shorter than allowed; use None (no pruning) or a whole number of epochs >= 1")
        require(is_real(self.prune_threshold) and 0 <= self.prune_threshold < 1, "prune_threshold", self.prune_threshold, "the normalised pruning threshold must be in [0, 1), e.g. 0.05")
        require_bool("prune_existing", self.prune_existing)
        require(is_whole(self.layer), "layer", self.layer, "use an expandable layer index, e.g. -1 for the output layer")
        require(is_whole(self.metric_batch_size) and self.metric_batch_size >= 1, "metric_batch_size", self.metric_batch_size, "use a whole number of rows >= 1")
        require(self.max_events is None or (is_whole(self.max_events) and self.max_events >= 1), "max_events", self.max_events, "use None (no cap) or a whole number of events >= 1")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pending": [list(p) for p in self._pending], "n_events": self._n_events}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._pending = [list(p) for p in state.get("pending", [])]
        self._n_events = int(state.get("n_events", 0))

    def _metrics(self, model: EdgeMLP, X, y, layer: int, task: Task = CLASSIFICATION) -> list[torch.Tensor]:
        return layer_edge_metrics(model, X, y, self.metric, layer=layer, batch_size=self.metric_batch_size,
                                  loss_fn=task.summed)

    def _event(self, model, *, epoch, kind, where, score, ratio, tau, before, diff, n, detail=""):
        return GrowthEvent(
            step=0, epoch=epoch, kind=kind, where=where, score=score, eta=math.nan, lam=math.nan, ratio=ratio,
            tau=tau, alpha=math.nan, params_before=before, params_after=model.n_params(),
            hidden_after=tuple(tuple(h) for h in model.hidden), max_abs_diff=diff, n=n, detail=detail,
        )

    # ------------------------------------------------------------------ growth
    def select(self, model: EdgeMLP, X, y, task: Task = CLASSIFICATION) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Edges to expand on (X, y): ``(rows, cols, scores)``, each (n,), highest normalised metric
        first; live edges with metric ``> edge_threshold``, at most ``max_edges``. ``task`` gives
        the loss the metrics differentiate."""
        layer = model.layer_index(self.layer)
        S = self._metrics(model, X, y, layer, task)[0]
        flat = S.flatten()
        keep = (flat > self.edge_threshold) & (model.layers[layer].weight_mask.flatten() > 0)
        idx = torch.nonzero(keep).flatten()
        order = torch.sort(flat[idx], descending=True, stable=True).indices[: self.max_edges]
        idx = idx[order]
        d = S.shape[1]
        return idx // d, idx % d, flat[idx]

    def grow(self, model, ctx: GrowthContext) -> list[GrowthEvent]:
        """One expansion event on ``layer`` from the metrics on the scoring batch ``(X, y)``.

        Returns ``[GrowthEvent(kind="edges", n=edges expanded, score=mean normalised metric of
        the selected edges, ratio=score / edge_threshold, tau=edge_threshold)]``, or ``[]`` when
        no edge passes the threshold or ``max_events`` is reached (the model is left untouched).
        """
        X, y, epoch, apply = ctx.X, ctx.y, ctx.epoch, ctx.apply
        if self.max_events is not None and self._n_events >= self.max_events:
            return []
        layer = model.layer_index(self.layer)
        rows, cols, scores = self.select(model, X, y, ctx.task)
        if rows.numel() == 0:
            return []
        before = model.n_params()
        _, diff = apply(lambda m: m.expand_edges(layer, rows, cols))
        self._n_events += 1
        if self.prune_after is not None:
            self._pending.append([layer, len(model.layers[layer].blocks) - 1, int(epoch)])
        score = float(scores.mean())
        return [
            self._event(
                model, epoch=epoch, kind="edges", where=layer, score=score, ratio=score / self.edge_threshold,
                tau=self.edge_threshold, before=before, diff=diff, n=int(rows.numel()),
                detail=f"metric={self.metric}, {int(torch.unique(cols).numel())} parents",
            )
        ]

    # ------------------------------------------------------------------ pruning
    def prune(self, model, ctx: GrowthContext) -> list[GrowthEvent]:
        """Called every epoch: prune each event that is ``prune_after`` epochs old (see :meth:`prune_masks`).

        Returns one ``GrowthEvent(kind="prune", n=edges removed, score=their mean normalised
        metric, tau=prune_threshold)`` per event that lost edges; ``detail`` also gives the
        parameters removed (dead vertices included).
        """
        X, y, epoch, apply = ctx.X, ctx.y, ctx.epoch, ctx.apply
        for lin in model.layers:
            lin.zero_masked_()
        if self.prune_after is None:
            return []
        due = [p for p in self._pending if epoch - p[2] >= self.prune_after]
        if not due:
            return []
        self._pending = [p for p in self._pending if p not in due]
        events = []
        for layer, k, event_epoch in due:
            if layer >= len(model.layers) or k >= len(model.layers[layer].blocks):
                continue  # the model was rebuilt from an earlier snapshot without this event
            lin = model.layers[layer]
            metrics = self._metrics(model, X, y, layer, ctx.task)
            remove = self.prune_masks(lin, k, metrics)
            n_removed = int(sum(int(r.sum()) for r in remove))
            if n_removed == 0:
                continue
            removed_scores = torch.cat([m[r] for m, r in zip(metrics, remove)])
            before = model.n_params()
            _, diff = apply(lambda m, layer=layer, remove=remove: m.remove_edges(layer, remove), check=False)
            events.append(
                self._event(
                    model, epoch=epoch, kind="prune", where=layer, score=float(removed_scores.mean()), ratio=math.nan,
                    tau=self.prune_threshold, before=before, diff=diff, n=n_removed,
                    detail=f"event of epoch {event_epoch + 1} (block {k}): removed {n_removed} edges, "
                    f"{before - model.n_params()} params",
                )
            )
        if events:
            self._last_event_epoch = epoch
        return events

    def prune_masks(self, lin: ExpandingLinear, k: int, metrics: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Bool masks aligned with ``lin.edge_tensors()``: edges of block ``k``'s event to prune.

        Candidates: the block's zero-initialised in-edges and its vertices' zero-initialised W
        entries (every output but the primary child); with ``prune_existing`` also the live edges
        that predate the event. A candidate is pruned if live and its metric ``<= prune_threshold``.
        """
        tensors = lin.edge_tensors()
        cand = [torch.zeros_like(m, dtype=torch.bool) for _, m in tensors]
        block, off = lin.blocks[k], lin.offset(k)
        cand[0][:, off : off + block.n] = True
        cand[0][block.targets, off + torch.arange(block.n, device=block.targets.device)] = False
        cand[k + 1] = block.extra_in()
        if self.prune_existing:
            cand[0][:, :off] = True
            for j in range(k):
                cand[j + 1][:] = True
        return [c & (m > 0) & (s <= self.prune_threshold) for c, (_, m), s in zip(cand, tensors, metrics)]
