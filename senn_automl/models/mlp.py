"""Growable modules: the rational activation and :class:`GrowingMLP` (torch only).

Every structural edit here is exactly function-preserving and returns the list of
:class:`ParamChange` records that an optimiser needs to carry its state over
(see :func:`senn_automl.training.surgery.update_optimizer`).

Source: Mitchell et al., "Self-Expanding Neural Networks", arXiv:2307.04526, §3.3-3.4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from senn_automl.models.registry import register_model

__all__ = ["RationalActivation", "GrowingMLP", "ParamChange", "IDENTITY", "DEFAULT_ACTIVATION", "grow_parameter", "check_mlp_sizes", "rational", "NORM_EPS"]

#: (v, c, l) at which the rational activation is exactly the identity.
IDENTITY = (0.0, 0.0, 1.0)
#: (v, c, l) for neurons of a freshly built network: a smooth, odd, tanh-like bump plus a linear leak.
DEFAULT_ACTIVATION = (1.0, 0.0, 0.5)
NORM_EPS = 1e-6


def rational(x: torch.Tensor, v: torch.Tensor, c: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """SENN's per-neuron rational activation.

    ``σ(x) = [(2v·x + c)/(1 + x²) + l·x] / max(√(v² + c² + l²), 1e-6)``
    (arXiv:2307.04526, §3.4). It is exactly the identity at ``(v, c, l) = (0, 0, 1)`` and its
    gradients in ``v`` and ``c`` are non-zero there, so an identity-initialised neuron can learn
    a non-linearity.

    Parameters
    ----------
    x : tensor (..., k)
    v, c, l : tensors broadcastable to (k,)
    """
    norm = torch.sqrt(v * v + c * c + l * l).clamp_min(NORM_EPS)
    return ((2 * v * x + c) / (1 + x * x) + l * x) / norm


class RationalActivation(nn.Module):
    """Per-neuron learnable rational activation of width ``k``; see :func:`rational`.

    Parameters ``v``, ``c``, ``l`` have shape ``(k,)``. Input and output shape ``(..., k)``.
    """

    def __init__(self, width: int, init: Sequence[float] = DEFAULT_ACTIVATION):
        super().__init__()
        v, c, l = (float(t) for t in init)
        self.v = nn.Parameter(torch.full((width,), v))
        self.c = nn.Parameter(torch.full((width,), c))
        self.l = nn.Parameter(torch.full((width,), l))

    @property
    def width(self) -> int:
        return self.v.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rational(x, self.v, self.c, self.l)


@dataclass(frozen=True)
class ParamChange:
    """How an edit replaced one parameter.

    ``old`` was replaced by ``new``. For growth, ``index`` is the tuple of slices of ``new``
    that holds ``old``'s values (every other entry of ``new`` is new). For shrinking, ``keep``
    is the index into ``old`` that ``new`` keeps (``new = old[keep]``). ``old is None`` marks a
    brand-new parameter (no optimiser state to carry).
    """

    old: nn.Parameter | None
    new: nn.Parameter
    index: tuple[slice, ...] | None = None
    keep: tuple | None = None


def grow_parameter(param: nn.Parameter, dim: int, extra: torch.Tensor) -> tuple[nn.Parameter, ParamChange]:
    """Concatenate ``extra`` to ``param`` along ``dim``; return the new Parameter and its change record."""
    data = torch.cat([param.detach(), extra.to(param)], dim=dim)
    new = nn.Parameter(data, requires_grad=param.requires_grad)
    index = tuple(slice(0, s) for s in param.shape)
    return new, ParamChange(param, new, index)


def check_mlp_sizes(in_features: int, out_features: int, hidden: Sequence[int]) -> list[int]:
    """Validate MLP sizes; return ``hidden`` as ints. Raises ``ValueError`` naming the bad size."""
    hidden = [int(h) for h in hidden]
    if in_features < 1 or out_features < 1:
        raise ValueError(f"in_features={in_features} and out_features={out_features} must be >= 1")
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden={hidden}: every hidden width must be >= 1")
    return hidden


@register_model
class GrowingMLP(nn.Module):
    """A multilayer perceptron that can add neurons and insert hidden layers while training.

    ``x (B, in_features) -> [Linear -> RationalActivation] * depth -> Linear -> logits (B, out_features)``.

    Parameters
    ----------
    in_features, out_features : int
        Input dimension and number of outputs (classes).
    hidden : sequence of int
        Start widths of the hidden layers; ``()`` is a linear model (zero hidden layers).
    max_width : int
        Capacity of a hidden layer (neurons); also caps the width of an inserted layer.
    max_depth : int
        Capacity in hidden layers.
    activation_init : (v, c, l)
        Activation parameters of the neurons of a freshly built network.

    Raises
    ------
    ValueError
        If a size is not positive, or the start size exceeds the capacity.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (10,),
        *,
        max_width: int = 128,
        max_depth: int = 3,
        activation_init: Sequence[float] = DEFAULT_ACTIVATION,
    ):
        super().__init__()
        hidden = check_mlp_sizes(in_features, out_features, hidden)
        if max_depth < len(hidden):
            raise ValueError(f"max_depth={max_depth} is below the depth {len(hidden)} of hidden={list(hidden)}; raise max_depth")
        if hidden and max_width < max(hidden):
            raise ValueError(f"max_width={max_width} is below the widest layer ({max(hidden)} neurons) of hidden={list(hidden)}; raise max_width")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.max_width = int(max_width)
        self.max_depth = int(max_depth)
        self.activation_init = tuple(float(t) for t in activation_init)
        sizes = [self.in_features, *hidden, self.out_features]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.activations = nn.ModuleList(RationalActivation(h, self.activation_init) for h in hidden)

    # ------------------------------------------------------------------ structure
    @property
    def hidden(self) -> list[int]:
        """Current hidden widths, input side first."""
        return [act.width for act in self.activations]

    @property
    def depth(self) -> int:
        return len(self.activations)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin, act in zip(self.linears, self.activations):
            x = act(lin(x))
        return self.linears[-1](x)

    def layer_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Inputs of every linear layer for batch ``x``: ``[x, h_0, ..., h_{depth-1}]``, each (B, width)."""
        outs = [x]
        for lin, act in zip(self.linears, self.activations):
            outs.append(act(lin(outs[-1])))
        return outs

    # ------------------------------------------------------------------ spec
    def spec(self) -> dict[str, Any]:
        """JSON-able architecture spec; :meth:`from_spec` rebuilds an identically shaped model."""
        return {
            "type": "GrowingMLP",
            "in_features": self.in_features,
            "out_features": self.out_features,
            "hidden": self.hidden,
            "max_width": self.max_width,
            "max_depth": self.max_depth,
            "activation_init": list(self.activation_init),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "GrowingMLP":
        """Build a model of the architecture in ``spec`` (weights freshly initialised; load a state_dict next).

        Raises ``ValueError`` if ``spec`` is not a GrowingMLP spec.
        """
        if spec.get("type") != "GrowingMLP":
            raise ValueError(f"spec type {spec.get('type')!r} is not 'GrowingMLP'")
        with torch.random.fork_rng(devices=[]):  # weights are overwritten next; leave the global RNG alone
            return cls(
                spec["in_features"],
                spec["out_features"],
                spec["hidden"],
                max_width=spec["max_width"],
                max_depth=spec["max_depth"],
                activation_init=spec.get("activation_init", DEFAULT_ACTIVATION),
            )

    # ------------------------------------------------------------------ growth edits
    def can_add_neurons(self, layer: int, k: int = 1) -> bool:
        return 0 <= layer < self.depth and self.hidden[layer] + k <= self.max_width

    def can_insert_layer(self, position: int) -> bool:
        """A layer can be inserted before ``linears[position]`` if depth and width capacity allow."""
        width = self.linears[position].in_features if 0 <= position <= self.depth else None
        return width is not None and self.depth < self.max_depth and width <= self.max_width

    @torch.no_grad()
    def add_neurons(
        self,
        layer: int,
        weight: torch.Tensor,
        bias: torch.Tensor,
        act_params: torch.Tensor,
    ) -> list[ParamChange]:
        """Add ``k`` neurons to hidden layer ``layer``; function-preserving.

        The new neurons get incoming ``weight`` (k, d_in), ``bias`` (k,) and activation
        parameters ``act_params`` (k, 3) = (v, c, l); their outgoing weights in the consumer
        layer ``linears[layer + 1]`` are zero, so the network output is unchanged while the zero
        weights receive gradient at once (arXiv:2307.04526, §3.4).

        Raises
        ------
        ValueError
            If ``layer`` is not a hidden layer, shapes mismatch, or capacity would be exceeded.
        """
        k = weight.shape[0]
        if not 0 <= layer < self.depth:
            raise ValueError(f"layer={layer} is not a hidden layer (depth {self.depth})")
        if not self.can_add_neurons(layer, k):
            raise ValueError(f"adding {k} neurons to layer {layer} exceeds max_width={self.max_width}")
        lin, act, consumer = self.linears[layer], self.activations[layer], self.linears[layer + 1]
        if weight.shape != (k, lin.in_features) or bias.shape != (k,) or act_params.shape != (k, 3):
            raise ValueError(
                f"candidate shapes weight {tuple(weight.shape)}, bias {tuple(bias.shape)}, act {tuple(act_params.shape)}"
                f" do not fit layer {layer} with {lin.in_features} inputs"
            )
        changes = []
        for module, name, dim, extra in (
            (lin, "weight", 0, weight),
            (lin, "bias", 0, bias),
            (act, "v", 0, act_params[:, 0]),
            (act, "c", 0, act_params[:, 1]),
            (act, "l", 0, act_params[:, 2]),
            (consumer, "weight", 1, torch.zeros(consumer.out_features, k)),
        ):
            new, change = grow_parameter(getattr(module, name), dim, extra)
            setattr(module, name, new)
            changes.append(change)
        lin.out_features += k
        consumer.in_features += k
        return changes

    @torch.no_grad()
    def insert_layer(self, position: int, weight: torch.Tensor, bias: torch.Tensor, *, rcond: float = 1e-3) -> list[ParamChange]:
        """Insert an identity-activated hidden layer before ``linears[position]``; function-preserving.

        The new layer computes ``z = σ_id(h Bᵀ + s)`` with ``B = weight`` (d, d), ``s = bias`` (d,)
        and the activation at the identity; the consumer absorbs the inverse,
        ``W' = W B⁻¹`` and ``b' = b − W' s`` (arXiv:2307.04526, §3.4). ``B``'s singular values are
        clipped at ``rcond · mean`` first, so the inverse is well conditioned. The consumer keeps
        its Parameter objects (same shapes), so its optimiser state is kept.

        Raises
        ------
        ValueError
            If ``position`` is out of range, shapes mismatch, capacity would be exceeded, or
            ``weight`` is zero / not finite.
        """
        if not 0 <= position <= self.depth:
            raise ValueError(f"position={position} must be in [0, {self.depth}]")
        if not self.can_insert_layer(position):
            raise ValueError(
                f"inserting a layer at {position} exceeds max_depth={self.max_depth} or max_width={self.max_width}"
            )
        consumer = self.linears[position]
        d = consumer.in_features
        if weight.shape != (d, d) or bias.shape != (d,):
            raise ValueError(f"layer candidate shapes {tuple(weight.shape)}, {tuple(bias.shape)} do not match width {d}")
        B = weight.double()
        U, S, Vh = torch.linalg.svd(B)
        if not bool(torch.isfinite(S).all()) or float(S.mean()) <= 0:
            raise ValueError("layer candidate weight is zero or not finite; it cannot be inverted by the consumer")
        S = S.clamp_min(rcond * S.mean())
        B = U @ torch.diag(S) @ Vh
        B_inv = Vh.T @ torch.diag(1.0 / S) @ U.T
        s = bias.double()
        W = consumer.weight.double()
        W_new = W @ B_inv
        b_new = consumer.bias.double() - W_new @ s
        consumer.weight.copy_(W_new.to(consumer.weight))
        consumer.bias.copy_(b_new.to(consumer.bias))
        new_lin = nn.utils.skip_init(nn.Linear, d, d, device=consumer.weight.device, dtype=consumer.weight.dtype)
        new_lin.weight.copy_(B.to(consumer.weight))
        new_lin.bias.copy_(s.to(consumer.weight))
        new_act = RationalActivation(d, IDENTITY).to(consumer.weight)
        self.linears.insert(position, new_lin)
        self.activations.insert(position, new_act)
        return [ParamChange(None, p) for p in (*new_lin.parameters(), *new_act.parameters())]

    @torch.no_grad()
    def remove_neurons(self, layer: int, neurons: Sequence[int], consumer_delta: torch.Tensor | None = None) -> list[ParamChange]:
        """Remove ``neurons`` of hidden layer ``layer`` (pruning; changes the function).

        ``consumer_delta`` (d_out, d_keep + 1), if given, is added to the consumer's weights of
        the kept inputs and its bias (last column) after the removal: the K-FAC compensation of
        :func:`senn_automl.scores.curvature.prune_compensation`. Every other parameter keeps its
        values; the shrunk ones report ``keep`` indices so optimiser state follows the survivors.

        Raises ``ValueError`` if ``layer`` is not a hidden layer, an index is out of range, or the
        removal would leave the layer empty.
        """
        if not 0 <= layer < self.depth:
            raise ValueError(f"layer={layer} is not a hidden layer (depth {self.depth})")
        width = self.hidden[layer]
        drop = sorted({int(i) for i in neurons})
        if any(not 0 <= i < width for i in drop):
            raise ValueError(f"neurons {drop} out of range for hidden layer {layer} of width {width}")
        if len(drop) >= width:
            raise ValueError(f"removing {len(drop)} of {width} neurons would leave hidden layer {layer} empty")
        lin, act, consumer = self.linears[layer], self.activations[layer], self.linears[layer + 1]
        keep = torch.tensor([i for i in range(width) if i not in set(drop)], device=lin.weight.device)
        if consumer_delta is not None:
            if consumer_delta.shape != (consumer.out_features, len(keep) + 1):
                raise ValueError(f"consumer_delta shape {tuple(consumer_delta.shape)} != {(consumer.out_features, len(keep) + 1)}")
        changes = []
        for module, name, dim in ((lin, "weight", 0), (lin, "bias", 0), (act, "v", 0), (act, "c", 0), (act, "l", 0), (consumer, "weight", 1)):
            old = getattr(module, name)
            index = (keep,) if dim == 0 else (slice(None), keep)
            new = nn.Parameter(old.detach()[index].clone(), requires_grad=old.requires_grad)
            setattr(module, name, new)
            changes.append(ParamChange(old, new, keep=index))
        lin.out_features -= len(drop)
        consumer.in_features -= len(drop)
        if consumer_delta is not None:
            consumer.weight += consumer_delta[:, :-1].to(consumer.weight)
            consumer.bias += consumer_delta[:, -1].to(consumer.bias)
        return changes
