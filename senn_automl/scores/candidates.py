"""Candidate search for new neurons and new layers (torch only).

Candidates are optimised for the lower bound Δη' on the small sub-problem only: the inputs of
the widened layer, the consumer layer's residual ``r`` and its damped ``G`` (arXiv:2307.04526,
§3.3 and Theorem 3.2). ``P`` neuron candidates are stacked as one (P × d_in) weight matrix and
ascended together with Adam; a weak N(0, 1) prior on the weights keeps them well scaled.
Gradients are in closed form (:class:`_Features`; docs/design.md, "Candidate search"), each step may
use a random subset of the scoring rows, and a search may start from an earlier pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from senn_automl.models.mlp import DEFAULT_ACTIVATION, NORM_EPS, rational
from senn_automl.scores.curvature import DampedFactor, LayerStats, delta_eta_heldout, delta_eta_lower_bound, residual
from senn_automl.validation import TINY

__all__ = ["CANDIDATE_STARTS", "Candidate", "CandidatePool", "best_neuron_candidate", "random_pool", "layer_candidate", "heldout_score", "starts_from"]


@dataclass
class Candidate:
    """A proposed addition.

    kind : "neuron" (``where`` = hidden layer index) or "layer" (``where`` = insertion position,
    i.e. index of the consumer linear layer). ``score`` is Δη' (float, same units as η).
    ``weight`` (k, d_in), ``bias`` (k,), ``act_params`` (k, 3) are the new layer parameters
    (float32); for a layer candidate k = d_in.
    """

    kind: str
    where: int
    score: float
    weight: torch.Tensor
    bias: torch.Tensor
    act_params: torch.Tensor
    pool: "CandidatePool | None" = None


@dataclass
class CandidatePool:
    """All ``P`` optimised neuron candidates of one layer: weight (P, d_in), bias (P,), act_params (P, 3)."""

    weight: torch.Tensor
    bias: torch.Tensor
    act_params: torch.Tensor

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """Candidate outputs (B, P) for layer inputs ``h`` (B, d_in), in ``h``'s dtype."""
        W, b, theta = (t.to(h) for t in (self.weight, self.bias, self.act_params))
        with torch.no_grad():
            return _features(h, W, b, theta)

    def scores(self, f: torch.Tensor, consumer: LayerStats, damping: float = 0.1) -> torch.Tensor:
        """Δη' (P,) float64 of every candidate against the consumer statistics ``consumer`` (its
        least-squares residual and damped G; the formula of
        :func:`~senn_automl.scores.curvature.delta_eta_lower_bound` for one feature each), from the
        candidates' features ``f = self.features(h)`` (B, P) on the consumer's rows."""
        return _neuron_scores(f.double().T, residual(consumer), consumer.G_inv.inverse(), damping)[0]

    def candidate(self, p: int, layer: int, score: float) -> "Candidate":
        return Candidate("neuron", layer, score, self.weight[p : p + 1], self.bias[p : p + 1], self.act_params[p : p + 1])


def _features(h, W, b, theta):
    return rational(h @ W.T + b, theta[:, 0], theta[:, 1], theta[:, 2])


def _init(k, d_in, generator, dtype, device, identity_weight: bool) -> torch.Tensor:
    """Random start ``[W | b | θ]`` of shape (k, d_in + 4); W near the identity for a layer (k = d_in)."""
    g = generator
    if identity_weight:
        W = torch.eye(d_in, dtype=dtype) + 0.1 * torch.randn(d_in, d_in, generator=g, dtype=dtype) / d_in**0.5
    else:
        W = torch.randn(k, d_in, generator=g, dtype=dtype) / d_in**0.5
    b = 0.1 * torch.randn(k, generator=g, dtype=dtype)
    theta = torch.tensor(DEFAULT_ACTIVATION, dtype=dtype).repeat(k, 1) + 0.1 * torch.randn(k, 3, generator=g, dtype=dtype)
    return torch.cat([W, b[:, None], theta], 1).to(device)


def random_pool(n_candidates: int, h_in: torch.Tensor, generator: torch.Generator | None = None) -> CandidatePool:
    """``n_candidates`` random neuron candidates for inputs like ``h_in`` (B, d_in), drawn as the
    ascent of :func:`best_neuron_candidate` starts them (``start="origin"``): weights
    ``N(0, 1/d_in)``, bias ``0.1·N(0, 1)``, activation parameters near the default."""
    params = _init(n_candidates, h_in.shape[1], generator, torch.float32, h_in.device, identity_weight=False)
    W, b, theta = _split(params)
    return CandidatePool(W.clone(), b.clone(), theta.clone())


def starts_from(init: "Candidate | CandidatePool | None", h_in: torch.Tensor) -> bool:
    """Whether a search on inputs ``h_in`` (B, d_in) starts from ``init`` (an earlier pool or
    layer candidate): if its weight has at most d_in columns. Fewer columns mean the layer that
    feeds ``h_in`` has gained units since; see :func:`_pack`."""
    return init is not None and init.weight.shape[1] <= h_in.shape[1]


def _pack(init: "Candidate | CandidatePool", like: torch.Tensor, layer: bool = False) -> torch.Tensor:
    """A detached copy of ``init``'s parameters packed as ``[W | b | θ]``, with ``like``'s (B, d_in)
    dtype and device.

    If ``init`` has d_old < d_in input columns, the inputs gained units since, appended last (as
    :meth:`~senn_automl.models.mlp.GrowingMLP.add_neurons` appends them): neuron candidates get zero
    weights on them, so their features are unchanged; a layer candidate (``layer=True``, d_old ×
    d_old) also gains one unit per new input that passes it on (weight row e_j, bias 0, the
    default activation), so its width stays d_in. Returns (k, d_in + 4), k = d_in for a layer.
    """
    W, b, theta = (t.detach().to(like) for t in (init.weight, init.bias, init.act_params))
    d_old, d_in = W.shape[1], like.shape[1]
    if d_old < d_in:
        W = torch.cat([W, W.new_zeros(W.shape[0], d_in - d_old)], 1)
        if layer:
            W = torch.cat([W, torch.eye(d_in, dtype=W.dtype, device=W.device)[d_old:]], 0)
            b = torch.cat([b, b.new_zeros(d_in - d_old)])
            theta = torch.cat([theta, torch.tensor(DEFAULT_ACTIVATION).to(theta).expand(d_in - d_old, 3)])
    return torch.cat([W, b[:, None], theta], 1)


def _split(params: torch.Tensor):
    """Views ``W`` (k, d_in), ``b`` (k,), ``θ`` (k, 3) of packed candidate parameters (k, d_in + 4)."""
    d = params.shape[1] - 4
    return params[:, :d], params[:, d], params[:, d + 1 :]


class _Features:
    """Candidate features ``f = σ_θ(W hᵀ + b)`` in (k, B) layout and their backward pass, in closed form.

    The rational activation of :func:`senn_automl.models.mlp.rational` is written as
    ``σ(x) = q + l·x/N`` with ``q = (2v·t + c·u)/N``, ``u = 1/(1+x²)``, ``t = x·u`` and
    ``N = max(√(v²+c²+l²), 1e-6)``; hence ``∂σ/∂x = (2v·u + l)/N − 2t·q``,
    ``∂σ/∂v = 2t/N − σ·v/N²``, ``∂σ/∂c = u/N − σ·c/N²``, ``∂σ/∂l = x/N − σ·l/N²``, and
    ``Σ_b g·σ = (2v·Σg·t + c·Σg·u + l·Σg·x)/N`` needs no pass of its own. Autograd gives the same
    numbers (the tests compare them). One row per candidate, so every per-candidate coefficient
    is a (k, 1) column and every per-candidate sum runs along a contiguous row; a step is about a
    dozen element-wise passes over (k, B) and is bound by the number of kernel launches on CPU.
    """

    def __init__(self, h: torch.Tensor, params: torch.Tensor):
        d = params.shape[1] - 4
        self.h, self.theta = h, (theta := params[:, d + 1 :])
        self.x = x = torch.addmm(params[:, d : d + 1], params[:, :d], h.T)  # (k, B)
        norm = theta.norm(dim=1, keepdim=True)  # (k, 1)
        self.inv_n = inv_n = norm.clamp_min(NORM_EPS).reciprocal_()
        # where N is clamped it is constant: no σ·θ/N² term
        self.decay = (inv_n * inv_n).masked_fill_(norm < NORM_EPS, 0.0)
        self.coef = coef = theta * inv_n  # (k, 3): v/N, c/N, l/N
        self.cv2, self.cc, self.cl = coef[:, :1] * 2, coef[:, 1:2], coef[:, 2:]
        self.u = u = (x * x).add_(1).reciprocal_()
        self.t = t = x * u
        self.q = q = (t * self.cv2).addcmul_(u, self.cc)
        self.f = torch.addcmul(q, x, self.cl)

    def backward(self, grad_f: torch.Tensor) -> torch.Tensor:
        """Gradient (k, d_in + 4) w.r.t. the packed parameters, given ``∂L/∂f`` (k, B)."""
        x, u, t = self.x, self.u, self.t
        grad_x = (u * self.cv2).add_(self.cl).addcmul_(t, self.q, value=-2).mul_(grad_f)  # (k, B)
        # Σ_b g·∂(Nσ)/∂(v, c, l) = (Σ g·2t, Σ g·u, Σ g·x), then Σ_b g·σ from them
        dots = torch.stack([torch.linalg.vecdot(grad_f, z, dim=1) for z in (t, u, x)], 1)  # (k, 3)
        dots[:, 0] *= 2
        dot_f = torch.linalg.vecdot(dots, self.coef, dim=1)[:, None]
        grad_theta = torch.addcmul(dots * self.inv_n, self.theta, dot_f * self.decay, value=-1)
        return torch.cat([grad_x @ self.h, grad_x.sum(1, keepdim=True), grad_theta], 1)


def _adam(params: torch.Tensor, grad_fn, steps: int, lr: float, n: int, batch_rows: int | None, generator,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
    """``steps`` Adam steps (Kingma & Ba 2015, Algorithm 1, as ``torch.optim.Adam``) on the packed
    parameters, in place, along ``grad_fn(params, rows)``: the gradient of the loss to minimise on
    the scoring rows ``rows`` (a fresh random subset of ``batch_rows`` of the ``n`` rows each step,
    or all rows: ``rows=None``). Written out on the one tensor, as ``torch.optim``'s per-step
    bookkeeping costs as much as a candidate step's arithmetic."""
    b1, b2 = betas
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    sample = batch_rows is not None and batch_rows < n
    for step in range(1, steps + 1):
        rows = torch.randperm(n, generator=generator)[:batch_rows].to(params.device) if sample else None
        g = grad_fn(params, rows)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = v.sqrt().div_(math.sqrt(1 - b2**step)).add_(eps)
        params.addcdiv_(m, denom, value=-lr / (1 - b1**step))


def _neuron_scores(f: torch.Tensor, r: torch.Tensor, G_inv: torch.Tensor, damping: float):
    """Δη'_p of P single-neuron candidates ``f`` (P, B): ``C_p G⁻¹ C_pᵀ / A_f,p``, and ``C`` (P, d_out), ``A_f`` (P,)."""
    n = f.shape[1]
    C = (f @ r).div_(n)  # (P, d_out)
    A_f = torch.linalg.vecdot(f, f, dim=1).mul_((1 + damping) / n).add_(1e-12)
    return torch.linalg.vecdot(C, C @ G_inv, dim=1).div_(A_f), C, A_f


def _neuron_grad(params, h, r, rG, G_inv, damping: float, prior: float) -> torch.Tensor:
    """Gradient (P, d_in + 4) of ``−Σ_p log Δη'_p + prior·½‖params‖²`` for candidates on inputs
    ``h`` (B, d_in), consumer residual ``r`` (B, d_out), ``rG = r G⁻¹``; from Theorem 3.2 (k = 1):
    ``∂Δη'_p/∂f_p = 2/(B·A_f,p) · (C_p G⁻¹ rᵀ − (1+γ)·Δη'_p·f_p)`` (a row over the B samples)."""
    feats = _Features(h, params)
    s, C, A_f = _neuron_scores(feats.f, r, G_inv, damping)
    a = A_f.mul_(s + TINY).reciprocal_().mul_(-2 / h.shape[0])[:, None]  # ∂(−log s)/∂s · 2/(B·A_f)
    grad_f = torch.addmm(feats.f * (a * s[:, None]).mul_(-(1 + damping)), C * a, rG.T)
    return feats.backward(grad_f).add_(params, alpha=prior)


def _layer_grad(params, h, r, G_inv, damping: float, prior: float, anchor, mask) -> torch.Tensor:
    """Gradient (k, k + 4) of ``−log Δη' + prior·½‖mask·(params − anchor)‖²`` for a layer
    candidate on inputs ``h`` (B, k) and consumer residual ``r`` (B, d_out):
    ``∂Δη'/∂F = 2/B·(K rᵀ − M F − (γ/k)·tr(M)·F)`` in (k, B) layout, ``K = A_f⁻¹ C G⁻¹``,
    ``M = A_f⁻¹ C Kᵀ`` (the last term from the damping's dependence on ``F``)."""
    n, k = h.shape
    feats = _Features(h, params)
    F = feats.f  # (k, B)
    C = (F @ r).div_(n)  # (k, d_out)
    A_iC = DampedFactor((F @ F.T).div_(n), damping, inplace=True).solve(C)  # A_f⁻¹ C
    K = A_iC @ G_inv
    M = K @ A_iC.T
    scale = torch.linalg.vecdot(K.flatten(), C.flatten(), dim=0).add_(TINY).reciprocal_().mul_(-2 / n)  # −2/(B·Δη')
    M.diagonal().add_(M.diagonal().sum() * (damping / k))
    grad_F = torch.addmm(K.mul_(scale) @ r.T, M.mul_(scale), F, alpha=-1)
    return feats.backward(grad_F).addcmul_(mask, params - anchor, value=prior)


#: where random neuron candidates start (see :func:`best_neuron_candidate`)
CANDIDATE_STARTS = ("origin", "data")


def best_neuron_candidate(
    h_in: torch.Tensor,
    consumer: LayerStats,
    layer: int,
    *,
    n_candidates: int = 32,
    steps: int = 50,
    lr: float = 0.05,
    damping: float = 0.1,
    prior: float = 1e-2,
    generator: torch.Generator | None = None,
    init: CandidatePool | None = None,
    batch_rows: int | None = None,
    start: str = "origin",
) -> Candidate:
    """Optimise ``n_candidates`` single-neuron candidates for hidden layer ``layer`` jointly and
    return the best.

    Parameters
    ----------
    h_in : (B, d_in) inputs of the widened layer (``x`` or the previous hidden layer) on the scoring batch.
    consumer : K-FAC stats of the consumer layer (the layer after the widened one).
    steps, lr : Adam ascent of ``Σ_p log Δη'_p − prior·½‖θ_p‖²`` (float32, closed-form gradient,
        :func:`_neuron_grad`).
    init : start from this pool (its P candidates, d_in columns) instead of random candidates,
        e.g. the previous round's or check's pool (then a few ``steps`` suffice).
        Ignored when it has more input columns than ``h_in``; fewer are padded (:func:`starts_from`).
    batch_rows : scoring rows per ascent step, a fresh random subset each step (stochastic
        ascent; the final scores use all rows); ``None``: all rows every step.
    start : where random candidates start (not used with ``init``). ``"origin"``: weights
        ``N(0, 1/d_in)``, bias ``0.1·N(0, 1)``, so every candidate bends (``w·h + b = 0``) near
        ``h = 0``. ``"data"``: the same weights, bias ``−w·h_i`` for a scoring row ``h_i`` drawn
        per candidate, so each bends at a data point; a local ascent then reaches features
        anywhere in the data, not only near the origin (1-D regression,
        ``examples/senn_toy_regression.py``).

    The score of candidate p is ``Δη'_p = C_p G⁻¹ C_pᵀ / A_f,p`` with ``C_p = E[f_p rᵀ]``,
    ``A_f,p = (1+γ)·E[f_p²]`` (Theorem 3.2 with k = 1).
    """
    h = h_in.float()
    r = residual(consumer).float()
    G_inv = consumer.G_inv.inverse().float()  # (d_out, d_out)
    rG = r @ G_inv  # (B, d_out)
    n = h.shape[0]
    if starts_from(init, h):
        params = _pack(init, h)
    else:
        params = _init(n_candidates, h.shape[1], generator, h.dtype, h.device, identity_weight=False)
        if start == "data":
            d = h.shape[1]
            at = torch.randint(0, n, (n_candidates,), generator=generator).to(h.device)
            params[:, d] = -(params[:, :d] * h[at]).sum(1)
        elif start not in CANDIDATE_STARTS:
            raise ValueError(f"start={start!r} is invalid: use one of {', '.join(map(repr, CANDIDATE_STARTS))}")

    def grad(params, rows):
        if rows is None:
            return _neuron_grad(params, h, r, rG, G_inv, damping, prior)
        return _neuron_grad(params, h[rows], r[rows], rG[rows], G_inv, damping, prior)

    _adam(params, grad, steps, lr, n, batch_rows, generator)
    W, b, theta = _split(params)
    s = _neuron_scores(_features(h, W, b, theta).T, r, G_inv, damping)[0]
    s = torch.where(torch.isfinite(s), s, torch.zeros_like(s))
    p = int(torch.argmax(s))
    pool = CandidatePool(W.clone(), b.clone(), theta.clone())
    best = pool.candidate(p, layer, float(s[p]))
    best.pool = pool
    return best


def layer_candidate(
    h_in: torch.Tensor,
    consumer: LayerStats,
    position: int,
    *,
    steps: int = 50,
    lr: float = 0.05,
    damping: float = 0.1,
    prior: float = 1e-2,
    generator: torch.Generator | None = None,
    batch_rows: int | None = None,
    init: Candidate | None = None,
) -> Candidate:
    """Optimise one layer candidate ``f = σ_θ(h Bᵀ + s)`` of width k = d_in for insertion before
    the consumer layer ``position``; its score is the joint Δη' (k × k ``A_f``).

    ``h_in`` : (B, d_in), the consumer's current inputs. ``B`` starts near the identity, or at
    ``init`` (an earlier layer candidate, e.g. the previous check's, widened if the inputs gained
    units since: :func:`starts_from`). ``batch_rows``:
    rows of ``h_in`` per ascent step (a fresh random subset each step; ``None``: all). Adam
    ascent of ``log Δη' − prior·½(‖B − I‖² + ‖s‖²)`` in float32 with the closed-form gradient
    (:func:`_layer_grad`). ``B`` is then replaced by the nearest multiple of an orthogonal matrix
    (:func:`_scaled_orthogonal`) and the returned score is that candidate's Δη' in float64.
    """
    h = h_in.float()
    r64 = residual(consumer)
    r = r64.float()
    G_inv = consumer.G_inv.inverse().float()
    k = h.shape[1]
    if starts_from(init, h):
        params = _pack(init, h, layer=True)
    else:
        params = _init(k, k, generator, h.dtype, h.device, identity_weight=True)
    anchor = torch.zeros_like(params)
    anchor[:, :k] = torch.eye(k, dtype=h.dtype, device=h.device)
    mask = torch.zeros_like(params)
    mask[:, : k + 1] = 1.0  # prior on B − I and s, not on θ

    def grad(params, rows):
        hb, rb = (h, r) if rows is None else (h[rows], r[rows])
        return _layer_grad(params, hb, rb, G_inv, damping, prior, anchor, mask)

    _adam(params, grad, steps, lr, h.shape[0], batch_rows, generator)
    W, b, theta = _split(params)
    W = _scaled_orthogonal(W)
    with torch.no_grad():
        s = float(delta_eta_lower_bound(_features(h.double(), W.double(), b.double(), theta.double()), r64, consumer.G_inv, damping))
    if not s == s:  # NaN
        s = 0.0
    return Candidate("layer", position, s, W.clone(), b.clone(), theta.clone())


def _scaled_orthogonal(B: torch.Tensor) -> torch.Tensor:
    """``σ̄ · U Vᵀ`` for ``B = U diag(σ) Vᵀ`` (k, k): the polar factor of ``B`` times its mean
    singular value, i.e. all singular values set to their mean.

    The inserted layer's consumer absorbs ``B⁻¹`` (``W' = W B⁻¹``,
    :meth:`~senn_automl.models.mlp.GrowingMLP.insert_layer`). The official SENN code trains with a
    natural-gradient optimiser, which is invariant to that reparametrisation; Adam is not. An
    optimised ``B`` on digits had singular values from 0.02 to 2.87 (mean 1.14); its inverse made the
    consumer's weights 7× larger, and within an epoch of Adam steps after the insertion the train
    loss rose from 0.007 to 0.84. With ``B`` well conditioned the consumer keeps its scale and the
    loss does not move (docs/design.md, "Layer insertion under Adam").
    """
    U, S, Vh = torch.linalg.svd(B.double())
    return (S.mean() * U @ Vh).to(B)


def heldout_score(cand: Candidate, h_in: torch.Tensor, consumer: LayerStats, damping: float = 0.1) -> float:
    """Debiased Δη' of ``cand`` on held-out inputs ``h_in`` (B, d_in) against the consumer's
    held-out statistics; see :func:`senn_automl.scores.curvature.delta_eta_heldout`."""
    h = h_in.double()
    f = CandidatePool(cand.weight, cand.bias, cand.act_params).features(h)
    return delta_eta_heldout(f, residual(consumer), consumer.G_inv, damping)
