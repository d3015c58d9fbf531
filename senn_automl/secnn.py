"""SECNN growth with the SENN score: K-FAC for conv layers, candidate scores, :class:`SECNNPolicy` (torch only).

SECNN (Appolinary et al., "Self Expanding Convolutional Neural Networks", arXiv:2401.05686, §3)
decides every epoch, for each block, between two candidates — add one conv layer, or widen every
conv of the block by 4 channels — and applies the best if its natural expansion score beats the
current one. Its published code scores with a diagonal "fraction of large gradients"; here
(docs/design.md, "More models and policies") a candidate is scored instead with SENN's natural
expansion score (Mitchell et al., "Self-Expanding Neural Networks", arXiv:2307.04526, Eq. 2 and
Theorem 3.2) restricted to the candidate's new, zero-initialised parameters:

- **widen** block b by k: the zero input columns of every reader of the block's output (its
  residual convs' old filters, the next block's first conv or the head) — SENN's lower bound
  ``Δη' = tr(Cᵀ A_f⁻¹ C G⁻¹)`` per reader, with ``C = g_f − g_a A_aa⁻¹ A_af`` (the part of the new
  columns' gradient the old inputs cannot produce), summed over readers (K-FAC is block-diagonal
  over layers);
- **add a layer** to block b: the new residual layer's BN ``(γ, β)`` (the branch conv has zero
  gradient while γ = 0). Under the block-diagonal approximation a new layer adds exactly its own
  score, ``Δη = ḡᵀ F⁻¹ ḡ`` over its 2C parameters, with the exact (damped) Fisher block.

Statistics come from applying the edit to a copy of the model and running forward/backward on
the scoring batch in train mode. With ``debias=True`` the batch is split in two halves and a
score ``gᵀMg`` is cross-fitted as ``g₁ᵀMg₂`` (halves are independent), which removes the positive
noise floor ``≈ (number of new parameters)/B`` that otherwise favours the candidate with the most
parameters; the estimate may then be negative for a useless candidate.

Conv K-FAC (Grosse & Martens, "A Kronecker-factored approximate Fisher matrix for convolution
layers", ICML 2016, §3; called KFC): for a conv with unfolded input patches ``a_{n,t}``
(``F.unfold``, C_in·kh·kw [+1 for a bias] dims, position t) and output gradients
``δ_{n,t} = ∂ℓ_n/∂s_{n,t}`` (C_out):

- ``A = mean_{n,t} a aᵀ`` (KFC's Ω / |T|, positions sub-sampled to at most ``max_rows`` rows),
- ``G = mean_n (Σ_t δ̃_{n,t})(Σ_t δ̃_{n,t})ᵀ``: output-channel gradients summed over positions
  (as in K-FAC-reduce, Eschenhagen et al., NeurIPS 2023, §3, whose A however averages the patches
  before the outer product). With ``fisher="gauss_newton"`` (default; SENN's choice, see
  :func:`senn_automl.curvature.collect_kfac`) ``δ̃ = J_cᵀ v`` is back-propagated from a random
  ``v ~ N(0, I)`` on the logits: a one-backward unbiased estimate of ``E[J̄ᵀ J̄]``, so η scales
  with ``λ = E‖∂ℓ/∂y‖²`` (it is bounded by λ for the exact Fisher) and shrinks with the loss.
  With ``"empirical"`` ``δ̃ = δ`` (then η measures gradient signal-to-noise and does not shrink),
- ``∇W = mean_n Σ_t δ_{n,t} a_{n,t}ᵀ`` (the exact gradient of the mean loss, weight layout
  (C_out, C_in·kh·kw)),
- ``η_c = tr(∇Wᵀ A⁻¹ ∇W G⁻¹)`` with ``A, G`` damped by ``γ·mean(diag)`` (:class:`DampedFactor`, float64).

A BatchNorm layer's (γ, β) block (2C parameters) uses its exact damped Fisher block, the mean of
``ũ ũᵀ`` for the per-sample vectors ``ũ_n = [Σ_t δ̃ x̂, Σ_t δ̃]`` (x̂ the normalised BN input).
The total η of a model is the sum over its convs, head conv, output layer and BNs.
"""

from __future__ import annotations

import copy
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .cnn import GrowingCNN, _kaiming
from .curvature import DampedFactor, natural_expansion_score
from .modules import ParamChange
from .policies import Apply, GrowthEvent, GrowthPolicy, _tupled

__all__ = [
    "ConvKFAC",
    "BNStats",
    "CNNStats",
    "Proposal",
    "conv_patches",
    "weight_matrix",
    "kfac_layers",
    "norm_layers",
    "conv_kfac",
    "collect_cnn_stats",
    "new_columns_score",
    "propose_layer",
    "propose_widen",
    "SECNNPolicy",
    "THRESHOLD_RULES",
]

#: most patch rows (sample × position) used for a conv's A factor, per batch part
MAX_ROWS = 4096
#: "ratio": SECNN's η_candidate / η > τ; "natural": SENN's Δη/η > τ and Δη/λ > α
THRESHOLD_RULES = ("ratio", "natural")
_DEFAULT_TAU = {"ratio": 1.01, "natural": 0.01}
#: output-side factor: "gauss_newton" (G = E[JᵀJ], one extra backward with random v) or "empirical" (G = E[δδᵀ])
FISHERS = ("gauss_newton", "empirical")


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
    logits; units of loss²), the mean cross-entropy (nats), and ``new_layers``: block → the
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
) -> CNNStats:
    """K-FAC statistics of ``layers`` and exact Fisher blocks of ``bns`` on the scoring batch ``(X, y)``.

    ``X`` (B, C, H, W), ``y`` (B,) class indices. The batch is split into ``parts`` contiguous parts
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
    if fisher not in FISHERS:
        raise ValueError(f"fisher={fisher!r} is unknown; use one of: {', '.join(FISHERS)}")
    gn = fisher == "gauss_newton"
    if len(X) < parts:
        raise ValueError(f"the scoring batch has {len(X)} rows, fewer than parts={parts}")
    generator = generator or torch.Generator().manual_seed(0)
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
                loss = F.cross_entropy(logits, yp, reduction="sum")
                outs = [seen[i][1] for i in range(len(modules))]
                deltas = torch.autograd.grad(loss, outs, allow_unused=True, materialize_grads=True, retain_graph=gn)
                if gn:  # δ̃ = Jᵀv, v ~ N(0, I) on the logits: E[δ̃ δ̃ᵀ] = E[Jᵀ J]
                    v = torch.randn(logits.shape, generator=generator, dtype=torch.float64).to(logits)
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
        with torch.no_grad():
            e = torch.softmax(logits.double(), 1) - F.one_hot(yp, logits.shape[1]).double()
            lam += float((e**2).sum())
            loss_total += float(loss)
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


@dataclass
class Proposal:
    """A scored SECNN candidate.

    kind : "conv_layer" or "channels"; block : block index; n : channels added (widen) or 1;
    delta_eta : its score Δη (see the module docstring; same units as η); delta_params :
    parameters it adds; edit : ``edit(model) -> list[ParamChange]`` that applies exactly the
    scored candidate (same new weights).
    """

    kind: str
    block: int
    n: int
    delta_eta: float
    delta_params: int
    edit: Callable[[GrowingCNN], list[ParamChange]] = field(repr=False)


def _scoring_copy(model: GrowingCNN) -> GrowingCNN:
    return copy.deepcopy(model).train()


def propose_layer(model: GrowingCNN, block: int, X: torch.Tensor, y: torch.Tensor, *, damping: float = 0.1,
                  debias: bool = True, fisher: str = "gauss_newton", generator: torch.Generator | None = None,
                  row_seed: int = 0) -> Proposal:
    """Score "add one residual conv layer to ``block``": ``Δη`` of the new layer's BN (γ, β).

    The new conv weight is He-normal from ``generator``; the returned edit inserts exactly it.
    ``X`` (B, C, H, W), ``y`` (B,) is the scoring batch (B ≥ 2 when ``debias``). Runs the edited
    copy forward and backward; :class:`SECNNPolicy` gets the same numbers for every block at once
    from its statistics pass (:func:`collect_cnn_stats` with ``new_layers``).
    """
    c = model.widths[block]
    weight = _kaiming((c, c, 3, 3), model.negative_slope, generator)
    trial = _scoring_copy(model)
    trial.add_conv_layer(block, weight)
    stats = collect_cnn_stats(trial, X, y, layers=[], bns=[trial.blocks[block][-1].bn], damping=damping,
                              parts=2 if debias else 1, fisher=fisher, generator=torch.Generator().manual_seed(row_seed))
    bn = stats.bns[0]
    score = bn.eta_cross if debias else bn.eta
    return Proposal("conv_layer", block, 1, score, trial.n_params() - model.n_params(),
                    lambda m, b=block, w=weight: m.add_conv_layer(b, w))


def propose_widen(model: GrowingCNN, block: int, k: int, X: torch.Tensor, y: torch.Tensor, *, damping: float = 0.1,
                  debias: bool = True, fisher: str = "gauss_newton", generator: torch.Generator | None = None,
                  row_seed: int = 0) -> Proposal:
    """Score "widen every conv of ``block`` by ``k`` channels": the sum over the block's readers
    (:meth:`GrowingCNN.readers`) of :func:`new_columns_score` of their new zero input columns.

    The new filters are drawn from ``generator``; the returned edit replays the same draws.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
    state = generator.get_state()

    def replay() -> torch.Generator:
        g = torch.Generator(device=generator.device)
        g.set_state(state)
        return g

    trial = _scoring_copy(model)
    trial.widen_block(block, k, generator)
    c = model.widths[block]
    readers = trial.readers(block)
    stats = collect_cnn_stats(trial, X, y, layers=[m for m, _ in readers], bns=[], damping=damping,
                              parts=2 if debias else 1, fisher=fisher, generator=torch.Generator().manual_seed(row_seed))
    score = 0.0
    for (module, offset), st in zip(readers, stats.layers):
        taps = module.kernel_size[0] * module.kernel_size[1]
        new = torch.arange((offset + c) * taps, (offset + c + k) * taps)
        score += new_columns_score(st, new, damping, cross=debias)
    return Proposal("channels", block, k, score, trial.n_params() - model.n_params(),
                    lambda m, b=block, kk=k: m.widen_block(b, kk, replay()))


@dataclass
class SECNNPolicy(GrowthPolicy):
    """SECNN's growth policy (arXiv:2401.05686, §3.2) with SENN's natural expansion score.

    At every check (default: every epoch, ``expansion_interval=1``, at least ``min_gap=5`` epochs
    after the last growth, as in the SECNN code), on the first ``score_samples`` rows of the
    scoring batch: measure the model's total η (:func:`collect_cnn_stats`), score two candidates
    per block — add a conv layer (scored in the same pass, as :func:`propose_layer` would) and widen the block by ``widen_step``
    channels (:func:`propose_widen`) — skipping those beyond ``max_layers`` / ``max_channels``,
    and apply the best candidate if it passes the threshold rule. At most one change per check.

    Candidates are ranked by ``ratio`` and the best is accepted if it passes the rule; with the
    size penalty ``π = exp(−size_penalty·Δp²)`` (SECNN's size regularisation, ``Δp`` = parameters
    added; off by default, 1e-7 in the SECNN code):

    - ``"ratio"`` (SECNN): ``score = (η + Δη)·π`` (the candidate network's regularised score) and
      ``ratio = score/η > tau``. Default ``tau`` 1.01: SECNN's τ = 2 was set for its diagonal score;
      a K-FAC score summed over all layers is not doubled by one block's addition (on digits the
      best candidate adds 0.1–3 % of η). With ``size_penalty=1e-7``, ``π < 1/1.01`` as soon as
      ``Δp > 315``, so the penalty then decides alone (the reference's §2.3 defect of SECNN).
    - ``"natural"`` (SENN, Theorem 3.1): ``score = Δη·π``, ``ratio = score/η > tau`` and
      ``score/λ > alpha`` with ``λ = E‖∂ℓ/∂y‖²`` (default ``tau`` 0.01). Meaningful with
      ``fisher="gauss_newton"``, where η scales with λ; with the empirical Fisher η does not shrink
      with the loss and ``score/λ`` grows as training converges.

    η in the denominators is the plain (not cross-fitted) total η of the current model: it carries
    a positive noise floor, which makes the relative tests conservative.

    Parameters
    ----------
    threshold_rule : "ratio" or "natural".
    tau : relative threshold (> 0; ``> 1`` for "ratio"); ``None`` picks the rule's default.
    alpha : absolute threshold of the "natural" rule, in (0, 1).
    size_penalty : λ_n ≥ 0 of the size regularisation (per parameter²).
    widen_step : channels added to every conv of a block by a widening (≥ 1; SECNN: 4).
    grow_layers, grow_width : enable the two candidate kinds.
    damping : γ of the damped factors (> 0).
    fisher : "gauss_newton" (default) or "empirical": the output-side factor G (module docstring).
    debias : cross-fit candidate scores over two halves of the scoring rows (see module docstring).
    score_samples : rows of the scoring batch used (≥ 4); the trainer passes ~1024.
    expansion_interval, min_gap, when, ... : see :class:`~senn_automl.policies.GrowthPolicy`.

    Raises ``ValueError`` (from :meth:`validate`) for out-of-range values, naming the argument.
    """

    name: ClassVar[str] = "secnn"
    model_types: ClassVar[tuple[str, ...]] = ("GrowingCNN",)
    expansion_interval: int = 1
    min_gap: int = 5
    threshold_rule: str = "ratio"
    tau: float | None = None
    alpha: float = 2.5e-3
    size_penalty: float = 0.0
    widen_step: int = 4
    grow_layers: bool = True
    grow_width: bool = True
    damping: float = 0.1
    fisher: str = "gauss_newton"
    debias: bool = True
    score_samples: int = 256

    def validate(self) -> None:
        super().validate()

        def bad(name, fix):
            raise ValueError(f"{name}={getattr(self, name)!r} is invalid: {fix}")

        def number(x):
            return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

        def whole(x):
            return isinstance(x, numbers.Integral) and not isinstance(x, bool)

        if self.threshold_rule not in THRESHOLD_RULES:
            bad("threshold_rule", f"use one of: {', '.join(THRESHOLD_RULES)}")
        if self.tau is not None:
            if not (number(self.tau) and self.tau > 0):
                bad("tau", "use a positive number, or None for the rule's default")
            if self.threshold_rule == "ratio" and self.tau <= 1:
                bad("tau", "the 'ratio' rule compares η_candidate/η, which is > 1 for any gain: use tau > 1, e.g. 1.1")
        if not (number(self.alpha) and 0 < self.alpha < 1):
            bad("alpha", "the absolute threshold must be in (0, 1), e.g. 2.5e-3")
        if not (number(self.size_penalty) and self.size_penalty >= 0):
            bad("size_penalty", "use a number >= 0 (0 = off; SECNN's code uses 1e-7)")
        if not (whole(self.widen_step) and self.widen_step >= 1):
            bad("widen_step", "use a whole number of channels >= 1, e.g. 4")
        for name in ("grow_layers", "grow_width", "debias"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "use true or false")
        if not (self.grow_layers or self.grow_width):
            raise ValueError("grow_layers and grow_width are both false: enable at least one, or use policy 'fixed'")
        if not (number(self.damping) and self.damping > 0):
            bad("damping", "the K-FAC damping must be > 0, e.g. 0.1")
        if self.fisher not in FISHERS:
            bad("fisher", f"use one of: {', '.join(FISHERS)}")
        if not (whole(self.score_samples) and self.score_samples >= 4):
            bad("score_samples", "use a whole number of rows >= 4, e.g. 256")

    @property
    def effective_tau(self) -> float:
        """``tau``, or the threshold rule's default when ``tau`` is None."""
        return _DEFAULT_TAU[self.threshold_rule] if self.tau is None else float(self.tau)

    def propose(self, model: GrowingCNN, X: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
        """Measure the model and score every allowed candidate on ``X[:score_samples]``.

        Returns ``(stats, [Proposal, ...])``; ``stats`` is the current model's :class:`CNNStats`.
        """
        n = min(len(X), self.score_samples)
        Xs, ys = X[:n], y[:n]
        debias = self.debias and n >= 4
        gen = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(2**31, (1,))))
        row_seed = int(torch.randint(2**31, (1,), generator=gen, device=gen.device))  # same patch rows for every pass
        kw = dict(damping=self.damping, debias=debias, fisher=self.fisher, row_seed=row_seed)
        layer_at = [b for b in range(model.n_blocks) if self.grow_layers and model.can_add_layer(b)]
        weights = {b: _kaiming((model.widths[b], model.widths[b], 3, 3), model.negative_slope, gen) for b in layer_at}
        # one pass scores the model and every block's new-layer candidate (see collect_cnn_stats)
        stats = collect_cnn_stats(_scoring_copy(model), Xs, ys, damping=self.damping, parts=2 if debias else 1,
                                  fisher=self.fisher, generator=torch.Generator().manual_seed(row_seed), new_layers=weights)
        proposals = []
        for b in range(model.n_blocks):
            if b in weights:
                bn = stats.new_layers[b]  # the new layer adds its conv weight and its BN's γ, β
                proposals.append(Proposal("conv_layer", b, 1, bn.eta_cross if debias else bn.eta,
                                          weights[b].numel() + 2 * model.widths[b],
                                          lambda m, b=b, w=weights[b]: m.add_conv_layer(b, w)))
            if self.grow_width and model.can_widen(b, self.widen_step):
                proposals.append(propose_widen(model, b, self.widen_step, Xs, ys, generator=gen, **kw))
        return stats, proposals

    def rate(self, p: Proposal, eta: float) -> tuple[float, float]:
        """``(score, ratio)`` of a proposal under the threshold rule (see the class docstring)."""
        penalty = math.exp(-self.size_penalty * float(p.delta_params) ** 2)
        score = (eta + p.delta_eta) * penalty if self.threshold_rule == "ratio" else p.delta_eta * penalty
        return score, score / max(eta, 1e-30)

    def grow(self, model, X, y, *, epoch: int, apply: Apply, X_val=None, y_val=None, generator=None) -> list[GrowthEvent]:
        """One growth check: at most one edit, applied with ``apply(edit)``; returns its event (or none).

        ``X`` (B, C, H, W) float32 and ``y`` (B,) are the scoring batch on the model's device.
        ``X_val``/``y_val`` are not used: the two halves of the scoring rows are cross-fitted instead
        (``debias``). ``generator`` (CPU) draws the candidates' new weights and the patch rows.
        Sets ``last_eta`` to the current model's η. Raises ``ValueError`` for a model that is not a GrowingCNN.
        """
        self.check_model(model)
        stats, proposals = self.propose(model, X, y, generator)
        eta, lam = stats.eta, stats.lam
        self.last_eta = eta
        rated = [(self.rate(p, eta), p) for p in proposals]
        rated = [r for r in rated if math.isfinite(r[0][1])]
        if not rated:
            return []
        (score, ratio), best = max(rated, key=lambda t: t[0][1])
        tau = self.effective_tau
        natural = self.threshold_rule == "natural"
        if not (ratio > tau and (not natural or score / max(lam, 1e-30) > self.alpha)):
            return []
        before = model.n_params()
        _, diff = apply(best.edit)
        others = ", ".join(f"{p.kind}@{p.block}:{p.delta_eta:.3g}" for _, p in rated)
        return [
            GrowthEvent(
                step=0, epoch=epoch, kind=best.kind, where=best.block, score=score, eta=eta,
                lam=lam if natural else math.nan, ratio=ratio, tau=tau, alpha=self.alpha if natural else math.nan,
                params_before=before, params_after=model.n_params(), hidden_after=_tupled(model.hidden), max_abs_diff=diff,
                n=best.n, detail=f"Δη={best.delta_eta:.4g} Δp={best.delta_params} candidates Δη: {others}",
            )
        ]
