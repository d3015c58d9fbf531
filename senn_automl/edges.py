"""Edge-based expansion: score single weights, give the best ones a vertex of their own (torch only).

Method: CTLab-ITMO "self-expanding-nets" (github.com/CTLab-ITMO/self-expanding-nets), with
the defects of the published code fixed (docs/design.md): the new vertices use an activation that is
the identity for inputs of *any* sign (SENN's rational activation at ``IDENTITY``, arXiv:2307.04526 §3.4), the
extra edges start at exactly zero (so an expansion is exactly function-preserving), pruning
removes edges whose metric is **at most** the threshold, and every other parameter keeps
training with its optimiser state (edits go through :func:`senn_automl.surgery.apply_edit`).

Pieces
------
- :func:`edge_metrics` / :func:`layer_edge_metrics`: one of :data:`METRICS` per weight,
  aggregated over minibatches and min-max normalised to [0, 1] within each weight matrix.
- :class:`ExpandingLinear`: ``y = (W ⊙ M) h + b`` whose input ``h`` grows by one block of new
  vertices per expansion event (DenseNet-style concatenation); :class:`EdgeBlock` is one block.
- :class:`EdgeMLP` (spec type ``"EdgeMLP"``): a stack of expandable layers, logistic regression
  by default.
- :class:`EdgeExpansionPolicy` (policy ``"edges"``): when (plateau of the validation loss by
  default), what (edges above a normalised threshold) and pruning (``prune_after`` epochs later).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .modules import DEFAULT_ACTIVATION, IDENTITY, ParamChange, RationalActivation, _grow, check_mlp_sizes, rational
from .policies import Apply, GrowthEvent, GrowthPolicy

__all__ = [
    "METRICS",
    "EdgeBlock",
    "ExpandingLinear",
    "EdgeMLP",
    "edge_metrics",
    "layer_edge_metrics",
    "normalise_metric",
    "EdgeExpansionPolicy",
]

#: Edge metrics (those of CTLab-ITMO self-expanding-nets). High value = edge worth expanding / keeping.
METRICS = ("abs_grad", "grad_variance", "weight_sq", "weight_abs")


# =============================================================================== modules
class EdgeBlock(nn.Module):
    """The vertices added by one expansion event: a small dense layer with a mask.

    ``z = φ(h[:, parents] @ (w_in ⊙ in_mask)ᵀ)`` with ``φ`` a per-vertex rational activation
    (:func:`senn_automl.modules.rational`), started at the identity.

    Parameters (learnable): ``w_in`` (n, p) incoming weights from the ``p`` selected parents;
    ``act.v``, ``act.c``, ``act.l`` (n,) activation parameters.
    Buffers (in ``state_dict``): ``parents`` (p,) column indices into the layer input ``h`` this
    block reads (a column may be an input feature or a vertex of an earlier block);
    ``primary_pos`` (n,) which parent (position in ``parents``) vertex ``i`` replaced an edge
    from; ``targets`` (n,) the output row that edge went to; ``in_mask`` (n, p) 1 = live edge,
    0 = pruned; ``alive`` (n,) bool, False for a vertex removed because it had no live outgoing
    edge left.

    Built empty (zeros) by shape; :meth:`ExpandingLinear.expand` fills it.
    """

    def __init__(self, n: int, p: int, *, dtype: torch.dtype | None = None, device=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device)
        self.w_in = nn.Parameter(torch.zeros(n, p, **kw))
        self.act = RationalActivation(n, IDENTITY).to(**kw)
        self.register_buffer("parents", torch.zeros(p, dtype=torch.long, device=device))
        self.register_buffer("primary_pos", torch.zeros(n, dtype=torch.long, device=device))
        self.register_buffer("targets", torch.zeros(n, dtype=torch.long, device=device))
        self.register_buffer("in_mask", torch.ones(n, p, **kw))
        self.register_buffer("alive", torch.ones(n, dtype=torch.bool, device=device))

    @property
    def n(self) -> int:
        """Number of vertices of this block (alive or not)."""
        return self.w_in.shape[0]

    @property
    def p(self) -> int:
        """Number of parent columns this block reads."""
        return self.w_in.shape[1]

    def extra_in(self) -> torch.Tensor:
        """Bool (n, p): the in-edges that were initialised at zero (all but each vertex's primary edge)."""
        extra = torch.ones(self.n, self.p, dtype=torch.bool, device=self.w_in.device)
        extra[torch.arange(self.n, device=extra.device), self.primary_pos] = False
        return extra

    def n_live(self) -> int:
        """Live parameters: unmasked in-edges plus 3 activation parameters per alive vertex."""
        return int(self.in_mask.sum()) + 3 * int(self.alive.sum())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, d) layer input -> (B, n) vertex outputs."""
        return rational(h.index_select(1, self.parents) @ (self.w_in * self.in_mask).T, self.act.v, self.act.c, self.act.l)


class ExpandingLinear(nn.Module):
    """A linear layer whose input grows by blocks of new vertices (edge expansion, §3.2).

    ``h_0 = x``; for every block ``k``: ``h_{k+1} = [h_k, block_k(h_k)]``; ``y = h (W ⊙ M)ᵀ + b``.

    Parameters ``weight`` W (out, in_total) and ``bias`` b (out,); buffer ``weight_mask`` M
    (out, in_total), 1 = live edge, 0 = edge replaced by a vertex or pruned. ``in_total =
    in_features + Σ_k n_k``; column ``in_features + Σ_{j<k} n_j + i`` of W is vertex ``i`` of
    block ``k``. Masked entries get exactly zero gradient (the forward pass multiplies by M).

    Input (B, in_features) -> output (B, out_features).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        lin = nn.Linear(in_features, out_features)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = lin.weight
        self.bias = lin.bias
        self.register_buffer("weight_mask", torch.ones_like(lin.weight))
        self.blocks = nn.ModuleList()

    @property
    def in_total(self) -> int:
        """Current input width of W: original features plus every added vertex."""
        return self.weight.shape[1]

    def offset(self, k: int) -> int:
        """Column of W (and of ``h``) that holds vertex 0 of block ``k``."""
        return self.in_features + sum(b.n for b in self.blocks[:k])

    def edge_tensors(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """``[(W, M), (w_in_0, in_mask_0), ...]``: every edge weight matrix of the layer and its mask."""
        return [(self.weight, self.weight_mask)] + [(b.w_in, b.in_mask) for b in self.blocks]

    def n_live(self) -> int:
        """Live (unmasked) parameters of the layer, blocks included."""
        return int(self.weight_mask.sum()) + self.bias.numel() + sum(b.n_live() for b in self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for block in self.blocks:
            h = torch.cat([h, block(h)], dim=1)
        return F.linear(h, self.weight * self.weight_mask, self.bias)

    def _add_block(self, n: int, p: int) -> EdgeBlock:
        block = EdgeBlock(n, p, dtype=self.weight.dtype, device=self.weight.device)
        self.blocks.append(block)
        return block

    @torch.no_grad()
    def expand(self, rows: torch.Tensor, cols: torch.Tensor) -> list[ParamChange]:
        """Give every edge ``cols[i] -> rows[i]`` (entry ``W[rows[i], cols[i]]``) a vertex; function-preserving.

        Edge ``p -> c`` with weight ``w`` becomes ``p -(1)-> φ_i -(w)-> c`` and ``W[c, p]`` is
        masked out (the edge is replaced). Vertex ``i`` also gets edges from the other selected
        parents and to the other outputs, all initialised at exactly zero (they receive gradient
        at once). ``φ`` is the rational activation at the identity, exact for inputs of any sign.
        The ``n`` vertices form one new :class:`EdgeBlock` (n, p) with ``p`` = number of distinct
        parents; W grows by ``n`` columns via :func:`senn_automl.modules._grow` (optimiser state kept).

        Parameters
        ----------
        rows, cols : integer tensors (n,), distinct pairs of live edges of W.

        Returns the :class:`ParamChange` records (W grown; the block's parameters new).

        Raises
        ------
        ValueError
            If no edge is given, an index is out of range, a pair repeats or an edge is not live.
        """
        dev = self.weight.device
        rows = torch.as_tensor(rows, dtype=torch.long, device=dev).reshape(-1)
        cols = torch.as_tensor(cols, dtype=torch.long, device=dev).reshape(-1)
        n = rows.numel()
        out, d = self.weight.shape
        if n == 0 or cols.numel() != n:
            raise ValueError(f"expand needs rows and cols of equal, non-zero length; got {rows.numel()} and {cols.numel()}")
        if int(rows.min()) < 0 or int(rows.max()) >= out or int(cols.min()) < 0 or int(cols.max()) >= d:
            raise ValueError(f"edge indices out of range for a weight of shape ({out}, {d})")
        if torch.unique(rows * d + cols).numel() != n:
            raise ValueError("expand got the same edge twice; pass distinct (row, col) pairs")
        if not bool(self.weight_mask[rows, cols].bool().all()):
            raise ValueError("expand got an edge that is masked (replaced or pruned); select live edges only")
        w = (self.weight * self.weight_mask)[rows, cols]
        parents, pos = torch.unique(cols, sorted=True, return_inverse=True)
        idx = torch.arange(n, device=dev)
        block = self._add_block(n, parents.numel())
        block.parents.copy_(parents)
        block.primary_pos.copy_(pos)
        block.targets.copy_(rows)
        block.w_in[idx, pos] = 1.0
        new_cols = torch.zeros(out, n, dtype=self.weight.dtype, device=dev)
        new_cols[rows, idx] = w
        weight, change = _grow(self.weight, 1, new_cols)
        weight.data[rows, cols] = 0.0
        mask = torch.cat([self.weight_mask, torch.ones_like(new_cols)], dim=1)
        mask[rows, cols] = 0.0
        self.weight = weight
        self.weight_mask = mask
        return [change] + [ParamChange(None, p) for p in block.parameters()]

    @torch.no_grad()
    def remove(self, remove: Sequence[torch.Tensor]) -> list[ParamChange]:
        """Prune edges: ``remove`` is aligned with :meth:`edge_tensors`, bool tensors of their shapes.

        Removed entries are masked (zero, excluded from ``n_params``, zero gradient from then on)
        and their stored values set to zero. Then every vertex with no live outgoing edge left
        (no live entry in its W column and no live in-edge of a later block reading it) is removed
        too: its in-edges are masked and ``alive`` cleared. Parameters are not replaced, so every
        optimiser state is kept. Returns ``[]`` (no parameter changed shape).

        Raises ``ValueError`` if the list or a shape does not match.
        """
        tensors = self.edge_tensors()
        if len(remove) != len(tensors):
            raise ValueError(f"remove needs {len(tensors)} masks (W and one per block), got {len(remove)}")
        for (param, mask), r in zip(tensors, remove):
            if r.shape != param.shape:
                raise ValueError(f"remove mask of shape {tuple(r.shape)} does not match weight {tuple(param.shape)}")
            mask[r.to(mask.device)] = 0.0
        self.remove_dead_vertices()
        self.zero_masked_()
        return []

    @torch.no_grad()
    def remove_dead_vertices(self) -> int:
        """Mark vertices without a live outgoing edge dead (mask their in-edges); returns how many.

        Blocks are visited last to first, since removing a vertex can leave an earlier one unused.
        """
        removed = 0
        for k in range(len(self.blocks) - 1, -1, -1):
            block, off = self.blocks[k], self.offset(k)
            used = self.weight_mask[:, off : off + block.n].bool().any(0)
            for later in self.blocks[k + 1 :]:
                cols = later.parents[later.in_mask.bool().any(0)] - off
                cols = cols[(cols >= 0) & (cols < block.n)]
                used[cols] = True
            dead = block.alive & ~used
            removed += int(dead.sum())
            block.alive &= used
            block.in_mask[dead] = 0.0
        return removed

    @torch.no_grad()
    def zero_masked_(self) -> None:
        """Set the stored value of every masked edge to 0 (cosmetic: the forward pass masks anyway)."""
        for param, mask in self.edge_tensors():
            param.mul_(mask)


class EdgeMLP(nn.Module):
    """An MLP of :class:`ExpandingLinear` layers that grows by edge expansion (spec type ``"EdgeMLP"``).

    ``x (B, in_features) -> [ExpandingLinear -> RationalActivation] * len(hidden) -> ExpandingLinear
    -> logits (B, out_features)``. With ``hidden=()`` (default) it is logistic regression, one
    expandable layer ``in_features -> out_features`` (the published method's start point).

    Parameters
    ----------
    in_features, out_features : int
        Input dimension and number of classes.
    hidden : sequence of int
        Widths of fixed base hidden layers (``()``: none). Growth happens inside the layers.
    activation_init : (v, c, l)
        Rational activation of the base hidden layers (new vertices always start at ``IDENTITY``).

    ``hidden`` (property, JSON-able) summarises growth: one list per expandable layer, holding
    the number of alive vertices added by each event, e.g. ``[[12, 30]]`` for two events on the
    only layer of a logistic-regression start. ``n_params()`` counts live parameters only
    (unmasked edges, biases, activations of alive vertices and base layers).

    Raises ``ValueError`` for non-positive sizes.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (),
        *,
        activation_init: Sequence[float] = DEFAULT_ACTIVATION,
    ):
        super().__init__()
        hidden = check_mlp_sizes(in_features, out_features, hidden)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.base_hidden = hidden
        self.activation_init = tuple(float(t) for t in activation_init)
        sizes = [self.in_features, *hidden, self.out_features]
        self.layers = nn.ModuleList(ExpandingLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activations = nn.ModuleList(RationalActivation(h, self.activation_init) for h in hidden)

    # ------------------------------------------------------------------ structure
    @property
    def hidden(self) -> list[list[int]]:
        """Alive vertices added per event, one list per expandable layer (input side first)."""
        return [[int(b.alive.sum()) for b in layer.blocks] for layer in self.layers]

    def n_params(self) -> int:
        """Live parameters: unmasked weights, biases, activation parameters of alive vertices and base layers."""
        return sum(layer.n_live() for layer in self.layers) + sum(p.numel() for p in self.activations.parameters())

    def layer_index(self, layer: int) -> int:
        """Normalise a (possibly negative) expandable-layer index; ``ValueError`` if out of range."""
        n = len(self.layers)
        if not (isinstance(layer, numbers.Integral) and -n <= layer < n):
            raise ValueError(f"layer={layer!r} is out of range: this EdgeMLP has {n} expandable layer(s); use 0..{n - 1} or -1")
        return int(layer) % n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, act in zip(self.layers, self.activations):
            x = act(layer(x))
        return self.layers[-1](x)

    # ------------------------------------------------------------------ edits
    def expand_edges(self, layer: int, rows: torch.Tensor, cols: torch.Tensor) -> list[ParamChange]:
        """Expand edges ``W[rows[i], cols[i]]`` of expandable layer ``layer``; see :meth:`ExpandingLinear.expand`."""
        return self.layers[self.layer_index(layer)].expand(rows, cols)

    def remove_edges(self, layer: int, remove: Sequence[torch.Tensor]) -> list[ParamChange]:
        """Prune edges of expandable layer ``layer``; see :meth:`ExpandingLinear.remove`."""
        return self.layers[self.layer_index(layer)].remove(remove)

    # ------------------------------------------------------------------ spec
    def spec(self) -> dict[str, Any]:
        """JSON-able architecture spec: base sizes plus ``events`` = per layer ``[[n, p], ...]``
        (vertices and parents of every block), enough for :meth:`from_spec` to rebuild every
        parameter and buffer shape so that ``load_state_dict`` works in a fresh process."""
        return {
            "type": "EdgeMLP",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "base_hidden": list(self.base_hidden),
            "activation_init": list(self.activation_init),
            "events": [[[b.n, b.p] for b in layer.blocks] for layer in self.layers],
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "EdgeMLP":
        """Build an EdgeMLP of the architecture in ``spec`` (values zero / fresh; load a state_dict next).

        Raises ``ValueError`` if ``spec`` is not an EdgeMLP spec or its events do not fit.
        """
        if not isinstance(spec, dict) or spec.get("type") != "EdgeMLP":
            raise ValueError(f"spec type {spec.get('type') if isinstance(spec, dict) else spec!r} is not 'EdgeMLP'")
        with torch.random.fork_rng(devices=[]):
            model = cls(
                spec["in_features"], spec["out_features"], spec.get("base_hidden", ()),
                activation_init=spec.get("activation_init", DEFAULT_ACTIVATION),
            )
        events = spec.get("events", [[] for _ in model.layers])
        if len(events) != len(model.layers):
            raise ValueError(f"spec has events for {len(events)} layers but the model has {len(model.layers)}")
        with torch.no_grad():
            for layer, blocks in zip(model.layers, events):
                for n, p in blocks:
                    layer._add_block(int(n), int(p))
                    extra = torch.zeros(layer.out_features, int(n))
                    layer.weight = _grow(layer.weight, 1, extra)[0]
                    layer.weight_mask = torch.cat([layer.weight_mask, torch.ones_like(extra)], dim=1)
        return model


# =============================================================================== metrics
def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is unknown; choose one of: {', '.join(METRICS)}")


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
    normalise: bool = True,
) -> list[torch.Tensor]:
    """Per-edge metric of every edge matrix of expandable layer ``layer`` (see :data:`METRICS`).

    For each minibatch ``b`` (consecutive slices of ``X`` of ``batch_size`` rows; a shorter last
    batch counts like the others) let ``g_b = ∂L_b/∂w`` with ``L_b`` the mean cross-entropy (nats)
    of the batch, taken with respect to the *effective* (masked) weight:

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
    _check_metric(metric)
    lin = model.layers[model.layer_index(layer)]
    tensors = lin.edge_tensors()
    if metric in ("weight_sq", "weight_abs"):
        with torch.no_grad():
            raw = [(p * m).abs() if metric == "weight_abs" else (p * m) ** 2 for p, m in tensors]
    else:
        if not (isinstance(batch_size, numbers.Integral) and batch_size >= 1):
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
                    loss = F.cross_entropy(model(X[i : i + batch_size]), y[i : i + batch_size])
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
    normalise: bool = True,
) -> torch.Tensor:
    """The metric of every edge of W of expandable layer ``layer``: (out, in_total), in [0, 1]
    when normalised (min-max over W's live entries; masked entries 0). See :func:`layer_edge_metrics`."""
    return layer_edge_metrics(model, X, y, metric, layer=layer, batch_size=batch_size, normalise=normalise)[0]


# =============================================================================== policy
def _number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _whole(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


@dataclass
class EdgeExpansionPolicy(GrowthPolicy):
    """Edge-based expansion of an :class:`EdgeMLP` (CTLab-ITMO self-expanding-nets; see the module doc).

    When (:mod:`senn_automl.triggers`, default ``when="plateau"``): the mean |Δ val_loss| over
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
        :class:`~senn_automl.policies.GrowthPolicy` (defaults here: plateau, 3 epochs,
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

        def bad(name, fix):
            raise ValueError(f"{name}={getattr(self, name)!r} is invalid: {fix}")

        if self.metric not in METRICS:
            bad("metric", f"unknown edge metric; choose one of: {', '.join(METRICS)}")
        if not (_number(self.edge_threshold) and 0 < self.edge_threshold <= 1):
            bad("edge_threshold", "the normalised expansion threshold must be in (0, 1], e.g. 0.2")
        if not (_whole(self.max_edges) and self.max_edges >= 1):
            bad("max_edges", "use a whole number of edges per event >= 1")
        if self.prune_after is not None and not (_whole(self.prune_after) and self.prune_after >= 1):
            bad("prune_after", "pruning delay shorter than allowed; use None (no pruning) or a whole number of epochs >= 1")
        if not (_number(self.prune_threshold) and 0 <= self.prune_threshold < 1):
            bad("prune_threshold", "the normalised pruning threshold must be in [0, 1), e.g. 0.05")
        if not isinstance(self.prune_existing, bool):
            bad("prune_existing", "use True or False")
        if not _whole(self.layer):
            bad("layer", "use an expandable layer index, e.g. -1 for the output layer")
        if not (_whole(self.metric_batch_size) and self.metric_batch_size >= 1):
            bad("metric_batch_size", "use a whole number of rows >= 1")
        if self.max_events is not None and not (_whole(self.max_events) and self.max_events >= 1):
            bad("max_events", "use None (no cap) or a whole number of events >= 1")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pending": [list(p) for p in self._pending], "n_events": self._n_events}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._pending = [list(p) for p in state.get("pending", [])]
        self._n_events = int(state.get("n_events", 0))

    def _metrics(self, model: EdgeMLP, X, y, layer: int) -> list[torch.Tensor]:
        return layer_edge_metrics(model, X, y, self.metric, layer=layer, batch_size=self.metric_batch_size)

    def _event(self, model, *, epoch, kind, where, score, ratio, tau, before, diff, n, detail=""):
        return GrowthEvent(
            step=0, epoch=epoch, kind=kind, where=where, score=score, eta=math.nan, lam=math.nan, ratio=ratio,
            tau=tau, alpha=math.nan, params_before=before, params_after=model.n_params(),
            hidden_after=tuple(tuple(h) for h in model.hidden), max_abs_diff=diff, n=n, detail=detail,
        )

    # ------------------------------------------------------------------ growth
    def select(self, model: EdgeMLP, X, y) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Edges to expand on (X, y): ``(rows, cols, scores)``, each (n,), highest normalised metric
        first; live edges with metric ``> edge_threshold``, at most ``max_edges``."""
        layer = model.layer_index(self.layer)
        S = self._metrics(model, X, y, layer)[0]
        flat = S.flatten()
        keep = (flat > self.edge_threshold) & (model.layers[layer].weight_mask.flatten() > 0)
        idx = torch.nonzero(keep).flatten()
        order = torch.sort(flat[idx], descending=True, stable=True).indices[: self.max_edges]
        idx = idx[order]
        d = S.shape[1]
        return idx // d, idx % d, flat[idx]

    def grow(self, model, X, y, *, epoch: int, apply: Apply, X_val=None, y_val=None, generator=None) -> list[GrowthEvent]:
        """One expansion event on ``layer`` from the metrics on the scoring batch ``(X, y)``.

        Returns ``[GrowthEvent(kind="edges", n=edges expanded, score=mean normalised metric of
        the selected edges, ratio=score / edge_threshold, tau=edge_threshold)]``, or ``[]`` when
        no edge passes the threshold or ``max_events`` is reached (the model is left untouched).
        """
        if self.max_events is not None and self._n_events >= self.max_events:
            return []
        layer = model.layer_index(self.layer)
        rows, cols, scores = self.select(model, X, y)
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
    def prune(self, model, X, y, *, epoch: int, apply: Apply, X_val=None, y_val=None, generator=None) -> list[GrowthEvent]:
        """Called every epoch: prune each event that is ``prune_after`` epochs old (see :meth:`prune_masks`).

        Returns one ``GrowthEvent(kind="prune", n=edges removed, score=their mean normalised
        metric, tau=prune_threshold)`` per event that lost edges; ``detail`` also gives the
        parameters removed (dead vertices included).
        """
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
            metrics = self._metrics(model, X, y, layer)
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
