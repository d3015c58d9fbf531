"""Growable model of edge-based expansion: :class:`EdgeMLP` of :class:`ExpandingLinear` layers (torch only)."""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from senn_automl.models.mlp import (
    DEFAULT_ACTIVATION,
    IDENTITY,
    ParamChange,
    RationalActivation,
    check_mlp_sizes,
    grow_parameter,
    rational,
)
from senn_automl.models.registry import register_model
from senn_automl.validation import is_whole

__all__ = ["EdgeBlock", "ExpandingLinear", "EdgeMLP"]


class EdgeBlock(nn.Module):
    """The vertices added by one expansion event: a small dense layer with a mask.

    ``z = φ(h[:, parents] @ (w_in ⊙ in_mask)ᵀ)`` with ``φ`` a per-vertex rational activation
    (:func:`senn_automl.models.mlp.rational`), started at the identity.

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
    """A linear layer whose input grows by blocks of new vertices (edge expansion, docs/methods.md §3.2).

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
        parents; W grows by ``n`` columns via :func:`senn_automl.models.mlp.grow_parameter` (optimiser state kept).

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
        weight, change = grow_parameter(self.weight, 1, new_cols)
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


@register_model
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
        if not (is_whole(layer) and -n <= layer < n):
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
                    layer.weight = grow_parameter(layer.weight, 1, extra)[0]
                    layer.weight_mask = torch.cat([layer.weight_mask, torch.ones_like(extra)], dim=1)
        return model


