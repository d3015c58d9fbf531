"""K-FAC statistics of a block CNN and natural expansion scores of new conv parameters (torch only).

Conv K-FAC (Grosse & Martens, "A Kronecker-factored approximate Fisher matrix for convolution
layers", ICML 2016, §3; called KFC): for a conv with unfolded input patches ``a_{n,t}``
(``F.unfold``, C_in·kh·kw [+1 for a bias] dims, position t) and output gradients
``δ_{n,t} = ∂ℓ_n/∂s_{n,t}`` (C_out):

- ``A = mean_{n,t} a aᵀ`` (KFC's Ω / |T|, positions sub-sampled to at most ``max_rows`` rows),
- ``G = mean_n (Σ_t δ̃_{n,t})(Σ_t δ̃_{n,t})ᵀ``: output-channel gradients summed over positions
  (as in K-FAC-reduce, Eschenhagen et al., NeurIPS 2023, §3, whose A however averages the patches
  before the outer product). With ``fisher="gauss_newton"`` (default; SENN's choice, see
  :func:`senn_automl.scores.curvature.collect_kfac`) ``δ̃ = J_cᵀ v`` is back-propagated from a random
  ``v ~ N(0, I)`` on the logits: a one-backward unbiased estimate of ``E[J̄ᵀ J̄]``, so η scales
  with ``λ = E‖∂ℓ/∂y‖²`` (it is bounded by λ for the exact Fisher) and shrinks with the loss.
  With ``"unit_gradient"`` ``δ̃ = J_cᵀ û``, û the per-sample unit-normalised output gradient (the
  official SENN code's factor, see :func:`senn_automl.scores.curvature.collect_kfac`).
  With ``"empirical"`` ``δ̃ = δ`` (then η measures gradient signal-to-noise and does not shrink),
- ``∇W = mean_n Σ_t δ_{n,t} a_{n,t}ᵀ`` (the exact gradient of the mean loss, weight layout
  (C_out, C_in·kh·kw)),
- ``η_c = tr(∇Wᵀ A⁻¹ ∇W G⁻¹)`` with ``A, G`` damped by ``γ·mean(diag)`` (:class:`DampedFactor`, float64).

A BatchNorm layer's (γ, β) block (2C parameters) uses its exact damped Fisher block, the mean of
``ũ ũᵀ`` for the per-sample vectors ``ũ_n = [Σ_t δ̃ x̂, Σ_t δ̃]`` (x̂ the normalised BN input).
The total η of a model is the sum over its convs, head conv, output layer and BNs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from senn_automl.models.cnn import GrowingCNN
from senn_automl.scores.curvature import DampedFactor, natural_expansion_score
from senn_automl.validation import TINY

__all__ = [
    "ConvKFAC", "BNStats", "CNNStats", "CONV_FISHERS", "conv_patches", "weight_matrix", "kfac_layers", "norm_layers",
    "conv_kfac", "collect_cnn_stats", "new_columns_score",
]

#: most patch rows (sample × position) used for a conv's A factor, per batch part
MAX_ROWS = 4096
#: output-side factor: "gauss_newton" (G = E[JᵀJ], one extra backward with random v), "unit_gradient"
#: (the official SENN code's G = E[Jᵀûûᵀ J], û the unit-normalised output gradient) or "empirical" (G = E[δδᵀ])
CONV_FISHERS = ("gauss_newton", "unit_gradient", "empirical")


def conv_patches(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """Unfolded input patches of a conv-like ``layer`` (or an ``nn.Linear``): (B, d, T).

    ``x`` is the layer input, (B, C_in, H, W) for a conv (``F.unfold`` with the layer's kernel
    size, dilation, padding and stride; d = C_in·kh·kw, T output positions) or (B, d_in) for a
    linear layer (T = 1). A row of ones is appended (d + 1) when the layer has a bias. The patch
    layout matches :func:`weight_matrix`.
    """
    if isinstance(layer, nn.Linear):
        P = x.reshape(x.shape[0], -1, 1)
    else:
        P = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    if layer.bias is not None:
        P = torch.cat([P, torch.ones_like(P[:, :1])], dim=1)
    return P


def weight_matrix(layer: nn.Module) -> torch.Tensor:
    """The layer's weight in patch layout: (C_out, C_in·kh·kw [+1 bias column])."""
    W = layer.weight.reshape(layer.weight.shape[0], -1)
    return W if layer.bias is None else torch.cat([W, layer.bias[:, None]], dim=1)


def _cross_quad(g1: torch.Tensor, g2: torch.Tensor, A_inv: DampedFactor, G_inv: DampedFactor) -> float:
    """``tr(g₁ A⁻¹ g₂ᵀ G⁻¹)`` for g (C_out, d); symmetric in g₁, g₂; equals η for g₁ = g₂."""
    return float((G_inv.solve(g1) * A_inv.solve(g2.T).T).sum())


def _mean(parts: Sequence[torch.Tensor], weights: Sequence[int]) -> torch.Tensor:
    return sum(w * g for w, g in zip(weights, parts)) / sum(weights)


@dataclass
class ConvKFAC:
    """K-FAC statistics of one conv-like layer on a scoring batch (float64).

    A : (d, d) mean patch second moment; G : (C_out, C_out) mean outer product of the
    position-summed output gradients δ̃ (see the module docstring); grads : per batch part, the
    mean gradient (C_out, d) in :func:`weight_matrix` layout; sizes : samples per part;
    A_inv, G_inv : damped factors.
    """

    A: torch.Tensor
    G: torch.Tensor
    grads: list[torch.Tensor]
    sizes: list[int]
    A_inv: DampedFactor
    G_inv: DampedFactor

    @property
    def grad(self) -> torch.Tensor:
        """Mean gradient over the whole batch (C_out, d)."""
        return _mean(self.grads, self.sizes)

    @property
    def eta(self) -> float:
        """``η_c = tr(∇Wᵀ A⁻¹ ∇W G⁻¹)`` (arXiv:2307.04526, Eq. 2, K-FAC form); ≥ 0."""
        return natural_expansion_score(self.grad, self.A_inv, self.G_inv)

    @property
    def eta_cross(self) -> float:
        """Cross-fitted η over two batch parts, ``tr(∇W₁ᵀ A⁻¹ ∇W₂ G⁻¹)`` (no noise floor; nan with one part)."""
        return _cross_quad(self.grads[0], self.grads[1], self.A_inv, self.G_inv) if len(self.grads) >= 2 else math.nan


@dataclass
class BNStats:
    """Fisher statistics of one BatchNorm's (γ, β) block, not Kronecker-factored (float64).

    F : (2C, 2C) mean of ``ũ ũᵀ``; grads : per part, the mean gradient ``u`` (2C,) with
    ``u_n = [Σ_t δ x̂, Σ_t δ]`` per channel (δ: loss gradient at the BN output, x̂: its normalised
    input; ``ũ`` the same with δ̃, see the module docstring); F_inv : damped factor.
    """

    F: torch.Tensor
    grads: list[torch.Tensor]
    sizes: list[int]
    F_inv: DampedFactor

    def _q(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a @ self.F_inv.solve(b[:, None])[:, 0])

    @property
    def eta(self) -> float:
        """``ḡᵀ F⁻¹ ḡ`` over the 2C parameters; ≥ 0."""
        g = _mean(self.grads, self.sizes)
        return self._q(g, g)

    @property
    def eta_cross(self) -> float:
        """Cross-fitted ``ḡ₁ᵀ F⁻¹ ḡ₂`` (nan with one part)."""
        return self._q(self.grads[0], self.grads[1]) if len(self.grads) >= 2 else math.nan


class _ConvAccumulator:
    """Accumulates :class:`ConvKFAC` statistics of one layer over batch parts, in sample chunks."""

    def __init__(self, layer: nn.Module, max_rows: int, generator: torch.Generator):
        self.layer, self.max_rows, self.generator = layer, max_rows, generator
        self.A = 0.0
        self.G = 0.0
        self.rows = 0
        self.n = 0
        self.grads: list[torch.Tensor] = []
        self.sizes: list[int] = []

    @torch.no_grad()
    def add(self, x: torch.Tensor, delta: torch.Tensor, delta_G: torch.Tensor | None = None) -> None:
        B = x.shape[0]
        D = delta.reshape(B, delta.shape[1], -1)
        T = D.shape[2]
        d = self.layer.weight[0].numel() + (self.layer.bias is not None)
        per_sample = T if B * T <= self.max_rows else max(1, math.ceil(self.max_rows / B))
        chunk = max(1, (1 << 22) // (d * T))  # unfold at most ~16 MB of float32 at a time
        grad = 0.0
        for i in range(0, B, chunk):
            P = conv_patches(x[i : i + chunk], self.layer)  # (b, d, T)
            b = P.shape[0]
            grad = grad + torch.einsum("bot,bdt->od", D[i : i + b], P)
            if per_sample < T:
                idx = torch.randint(T, (b, per_sample), generator=self.generator).to(P.device)
                P = P.gather(2, idx[:, None, :].expand(b, d, per_sample))
            rows = P.transpose(1, 2).reshape(-1, d).double()
            self.A = self.A + rows.T @ rows
            self.rows += rows.shape[0]
        s = (D if delta_G is None else delta_G.reshape(D.shape)).sum(2).double()  # (B, C_out)
        self.G = self.G + s.T @ s
        self.n += B
        self.grads.append(grad.double() / B)
        self.sizes.append(B)

    def finish(self, damping: float) -> ConvKFAC:
        A, G = self.A / self.rows, self.G / self.n
        return ConvKFAC(A, G, self.grads, self.sizes, DampedFactor(A, damping), DampedFactor(G, damping))


class _BNAccumulator:
    def __init__(self, eps: float):
        self.eps = eps
        self.F = 0.0
        self.n = 0
        self.grads: list[torch.Tensor] = []
        self.sizes: list[int] = []

    @torch.no_grad()
    def add(self, x: torch.Tensor, delta: torch.Tensor, delta_G: torch.Tensor | None = None) -> None:
        xhat = F.batch_norm(x, None, None, training=True, eps=self.eps)  # the train-mode normalised input

        def per_sample(d):  # (B, 2C)
            return torch.cat([(d * xhat).sum((2, 3)), d.sum((2, 3))], dim=1).double()

        u = per_sample(delta)
        v = u if delta_G is None else per_sample(delta_G)
        self.F = self.F + v.T @ v
        self.n += u.shape[0]
        self.grads.append(u.mean(0))
        self.sizes.append(u.shape[0])

    def finish(self, damping: float) -> BNStats:
        Fm = self.F / self.n
        return BNStats(Fm, self.grads, self.sizes, DampedFactor(Fm, damping))


@dataclass
class CNNStats:
    """Statistics of one scoring pass: per-layer :class:`ConvKFAC`, per-BN :class:`BNStats` (in the
    order asked for), total η (sum of their η), its cross-fitted version, λ = E‖∂ℓ/∂y‖² (y the
    logits; units of loss²), the mean per-sample loss (cross-entropy in nats by default), and ``new_layers``: block → the
    :class:`BNStats` of a residual layer that would be appended to it (see :func:`collect_cnn_stats`)."""

    layers: list[ConvKFAC]
    bns: list[BNStats]
    eta: float
    eta_cross: float
    lam: float
    loss: float
    new_layers: dict[int, BNStats] = field(default_factory=dict)


def kfac_layers(model: GrowingCNN) -> list[nn.Module]:
    """Every weight layer of ``model`` in forward order: block convs, the head's 1x1 conv, the output Linear."""
    return [layer.conv for block in model.blocks for layer in block] + [model.head_conv, model.fc]


def norm_layers(model: GrowingCNN) -> list[nn.BatchNorm2d]:
    """Every BatchNorm of ``model`` in forward order (block BNs, then the head's)."""
    return [layer.bn for block in model.blocks for layer in block] + [model.head_bn]


def _recorder(seen: dict, i: int):
    """Forward hook that stores ``(input, output)`` of a module in ``seen[i]``."""

    def fn(module, args, out):
        seen[i] = (args[0].detach(), out)

    return fn


def collect_cnn_stats(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    layers: Sequence[nn.Module] | None = None,
    bns: Sequence[nn.BatchNorm2d] | None = None,
    damping: float = 0.1,
    parts: int = 2,
    fisher: str = "gauss_newton",
    max_rows: int = MAX_ROWS,
    generator: torch.Generator | None = None,
    new_layers: dict[int, torch.Tensor] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> CNNStats:
    """K-FAC statistics of ``layers`` and exact Fisher blocks of ``bns`` on the scoring batch ``(X, y)``.

    ``X`` (B, C, H, W), ``y`` (B,) class indices (or the targets of ``loss_fn``): ``loss_fn(out, y)``
    is the per-sample loss summed over the rows (default: cross-entropy; see
    :meth:`senn_automl.scores.tasks.Task.summed`). The batch is split into ``parts`` contiguous parts
    (2 for cross-fitted scores, 1 for none), each run forward and backward on its own (BN batch
    statistics per part). The model runs in its current mode; in train mode BN running
    statistics are updated, so pass a copy. Parameter ``.grad`` fields are not touched.
    ``layers`` default to :func:`kfac_layers`, ``bns`` to :func:`norm_layers` (GrowingCNN);
    ``generator`` (CPU) picks the patch rows of ``A`` when a layer has more than ``max_rows`` per part.

    ``new_layers`` (GrowingCNN only): ``{block: conv weight (C, C, 3, 3)}`` of residual layers
    that :meth:`GrowingCNN.add_conv_layer` would append, scored without building them. Such a
    layer is the identity (its BN has γ = β = 0), so the network's outputs and every gradient are
    unchanged, and the gradient at its BN output is the gradient at the block's output. Its BN
    statistics (``stats.new_layers[block]``) therefore come from this pass: the block's output
    ``x`` and its gradients, with ``x̂`` the batch-normalised ``LeakyReLU(conv(x))``. The numbers
    are those of a pass over the edited network (:func:`propose_layer`; the tests compare them),
    without one forward/backward per block.

    Raises ``ValueError`` if a part would hold fewer than 1 sample.
    """
    layers = list(kfac_layers(model) if layers is None else layers)
    bns = list(norm_layers(model) if bns is None else bns)
    if fisher not in CONV_FISHERS:
        raise ValueError(f"fisher={fisher!r} is unknown; use one of: {', '.join(CONV_FISHERS)}")
    extra = fisher != "empirical"  # G from a second backward pass
    if len(X) < parts:
        raise ValueError(f"the scoring batch has {len(X)} rows, fewer than parts={parts}")
    generator = generator or torch.Generator().manual_seed(0)
    loss_fn = loss_fn or (lambda out, t: F.cross_entropy(out, t, reduction="sum"))
    accs = [_ConvAccumulator(m, max(1, max_rows), generator) for m in layers] + [_BNAccumulator(m.eps) for m in bns]
    new_blocks = sorted(new_layers or {})
    new_accs = [_BNAccumulator(model.blocks[b][0].bn.eps) for b in new_blocks]
    # each new layer's block: the output of its last layer, and that output's gradients
    modules = layers + bns + [model.blocks[b][-1] for b in new_blocks]
    lam = loss_total = 0.0
    for Xp, yp in zip(X.tensor_split(parts), y.tensor_split(parts)):
        seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        handles = [m.register_forward_hook(_recorder(seen, i)) for i, m in enumerate(modules)]
        try:
            with torch.enable_grad():
                logits = model(Xp)
                loss = loss_fn(logits, yp)
                outs = [seen[i][1] for i in range(len(modules))]
                # ∂ℓ_n/∂y_n per sample (the loss is a sum over rows): for λ and the unit-gradient factor
                (e,) = torch.autograd.grad(loss, logits, retain_graph=True)
                e = e.double()
                deltas = torch.autograd.grad(loss, outs, allow_unused=True, materialize_grads=True, retain_graph=extra)
                if fisher == "gauss_newton":  # δ̃ = Jᵀv, v ~ N(0, I) on the logits: E[δ̃ δ̃ᵀ] = E[Jᵀ J]
                    v = torch.randn(logits.shape, generator=generator, dtype=torch.float64).to(logits)
                elif fisher == "unit_gradient":  # δ̃ = Jᵀû, û = (∂ℓ/∂y)/‖∂ℓ/∂y‖ per sample
                    v = (e / e.norm(dim=1, keepdim=True).clamp_min(TINY)).to(logits)
                if extra:
                    deltas_G = torch.autograd.grad((logits * v).sum(), outs, allow_unused=True, materialize_grads=True)
                else:
                    deltas_G = [None] * len(outs)
        finally:
            for h in handles:
                h.remove()
        for i, acc in enumerate(accs):
            acc.add(seen[i][0], deltas[i], deltas_G[i])
        for i, (b, acc) in enumerate(zip(new_blocks, new_accs), start=len(accs)):
            with torch.no_grad():
                z = F.leaky_relu(F.conv2d(seen[i][1].detach(), new_layers[b].to(seen[i][1]), padding=1), model.negative_slope)
            acc.add(z, deltas[i], deltas_G[i])
        lam += float((e**2).sum())
        loss_total += float(loss.detach())
    stats_l = [a.finish(damping) for a in accs[: len(layers)]]
    stats_b = [a.finish(damping) for a in accs[len(layers) :]]
    both = stats_l + stats_b
    eta = sum(s.eta for s in both)
    eta_cross = sum(s.eta_cross for s in both) if parts >= 2 else math.nan
    added = {b: acc.finish(damping) for b, acc in zip(new_blocks, new_accs)}
    return CNNStats(stats_l, stats_b, eta, eta_cross, lam / len(X), loss_total / len(X), added)


def conv_kfac(x: torch.Tensor, delta: torch.Tensor, layer: nn.Module, *, damping: float = 0.1,
              max_rows: int = MAX_ROWS, generator: torch.Generator | None = None) -> ConvKFAC:
    """K-FAC statistics of one conv-like layer from its input ``x`` (B, C_in, H, W) and the
    gradient ``delta`` (B, C_out, H', W') of the *summed* per-sample loss w.r.t. its output.
    See the module docstring for the formulas (KFC, Grosse & Martens 2016, §3)."""
    acc = _ConvAccumulator(layer, max_rows, generator or torch.Generator().manual_seed(0))
    acc.add(x, delta)
    return acc.finish(damping)


def new_columns_score(stats: ConvKFAC, new: torch.Tensor, damping: float = 0.1, *, cross: bool = True, exact: bool = False) -> float:
    """Score gained by the (zero-initialised) weight columns ``new`` of a layer.

    ``new`` : long tensor of column indices (into :func:`weight_matrix` layout) of the new input
    features; the others are the old ones. With ``C = g_new − g_old A_oo⁻¹ A_on`` (C_out, k) —
    SENN's ``E[f rᵀ]`` for the consumer residual ``r`` — returns
    ``Δη' = tr(Cᵀ A_nn⁻¹ C G⁻¹)`` (arXiv:2307.04526, Theorem 3.2), or with ``exact=True`` the
    exact K-FAC increase ``Δη`` with the Schur complement ``S = A_nn − A_no A_oo⁻¹ A_on`` in place
    of ``A_nn`` (``Δη ≥ Δη'``). ``cross=True`` cross-fits C over the two batch parts
    (``tr(C₁ᵀ M C₂ G⁻¹)``, may be negative); otherwise uses the whole-batch C (≥ 0).
    """
    d = stats.A.shape[0]
    new = new.to(stats.A.device)
    is_new = torch.zeros(d, dtype=torch.bool, device=new.device)
    is_new[new] = True
    old = torch.nonzero(~is_new)[:, 0]
    A = stats.A
    A_on = A[old][:, new]
    proj = DampedFactor(A[old][:, old], damping).solve(A_on) if len(old) else A_on  # A_oo⁻¹ A_on (d_o, k)
    Cs = [g[:, new] - g[:, old] @ proj for g in stats.grads]
    M = A[new][:, new]
    if exact:
        M = M - A_on.T @ proj
        M = (M + M.T) / 2
    M_inv = DampedFactor(M, damping)
    if cross and len(Cs) >= 2:
        return _cross_quad(Cs[0], Cs[1], M_inv, stats.G_inv)
    C = _mean(Cs, stats.sizes)
    return _cross_quad(C, C, M_inv, stats.G_inv)


