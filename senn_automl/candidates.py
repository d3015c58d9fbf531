"""Candidate search for new neurons and new layers (torch only).

Candidates are optimised for the lower bound Δη' on the small sub-problem only: the inputs of
the widened layer, the consumer layer's residual ``r`` and its damped ``G`` (arXiv:2307.04526,
§3.3 and Theorem 3.2). ``P`` neuron candidates are stacked as one (P × d_in) weight matrix and
ascended together with Adam; a weak N(0, 1) prior on the weights keeps them well scaled.
Gradients are in closed form (:class:`_Features`; growth-methods.md §1.2, item 4), each step may
use a random subset of the scoring rows, and a search may start from an earlier pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .curvature import DampedFactor, LayerStats, delta_eta_heldout, delta_eta_lower_bound, residual
from .modules import _NORM_EPS, DEFAULT_ACTIVATION, rational

__all__ = ["Candidate", "CandidatePool", "best_neuron_candidate", "layer_candidate", "heldout_score", "starts_from"]


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


def starts_from(init: "Candidate | CandidatePool | None", h_in: torch.Tensor) -> bool:
    """Whether a search on inputs ``h_in`` (B, d_in) starts from ``init`` (an earlier pool or
    layer candidate): only if its weight has d_in columns (a layer candidate's is d_in × d_in)."""
    return init is not None and init.weight.shape[1] == h_in.shape[1]


def _pack(init: "Candidate | CandidatePool", like: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``init``'s parameters packed as ``[W | b | θ]`` (k, d_in + 4), with ``like``'s dtype and device."""
    return torch.cat([init.weight, init.bias[:, None], init.act_params], 1).detach().to(like).clone()


def _split(params: torch.Tensor):
    """Views ``W`` (k, d_in), ``b`` (k,), ``θ`` (k, 3) of packed candidate parameters (k, d_in + 4)."""
    d = params.shape[1] - 4
    return params[:, :d], params[:, d], params[:, d + 1 :]


class _Features:
    """Candidate features ``f = σ_θ(h Wᵀ + b)`` (B, k) and their backward pass, in closed form.

    The rational activation of :func:`senn_automl.modules.rational` is written as
    ``σ(x) = (2v·t + c·u + l·x)/N`` with ``u = 1/(1+x²)``, ``t = x·u`` and
    ``N = max(√(v²+c²+l²), 1e-6)``; hence ``∂σ/∂x = (2v·u + l)/N − 2t·(σ − l·x/N)``,
    ``∂σ/∂v = 2t/N − σ·v/N²``, ``∂σ/∂c = u/N − σ·c/N²``, ``∂σ/∂l = x/N − σ·l/N²``.
    Autograd gives the same numbers (the tests compare them) at 1.1× (neurons, 1,024 rows) to
    2.5× (layer candidates) the cost: a step is a few dozen element-wise passes over (B, k).
    """

    def __init__(self, h: torch.Tensor, params: torch.Tensor):
        W, b, theta = _split(params)
        self.h = h
        self.x = x = torch.addmm(b, h, W.T)
        norm = theta.norm(dim=1)
        self.inv_n = inv_n = 1.0 / norm.clamp_min(_NORM_EPS)
        self.live = (norm >= _NORM_EPS).to(x.dtype)  # N is constant where clamped
        self.theta = theta
        self.cv, self.cc, self.cl = (theta * inv_n[:, None]).unbind(1)  # v/N, c/N, l/N
        self.u = u = (x * x).add_(1).reciprocal_()
        self.t = t = x * u
        self.f = torch.addcmul(torch.addcmul(x * self.cl, t, self.cv, value=2), u, self.cc)

    def backward(self, grad_f: torch.Tensor) -> torch.Tensor:
        """Gradient (k, d_in + 4) w.r.t. the packed parameters, given ``∂L/∂f`` (B, k)."""
        x, u, t, f = self.x, self.u, self.t, self.f
        dfdx = torch.addcmul(torch.addcmul(self.cl, u, self.cv, value=2), t, torch.addcmul(f, x, self.cl, value=-1), value=-2)
        grad_x = grad_f * dfdx
        dots = torch.stack([torch.linalg.vecdot(grad_f, z, dim=0) for z in (t, u, x, f)])  # (4, k)
        gf_f = dots[3] * self.live
        grad_theta = (dots[:3] * torch.tensor([2.0, 1.0, 1.0], dtype=x.dtype, device=x.device)[:, None]).T * self.inv_n[:, None]
        grad_theta -= self.theta * (gf_f * self.inv_n * self.inv_n)[:, None]
        return torch.cat([grad_x.T @ self.h, grad_x.sum(0)[:, None], grad_theta], 1)


def _ascend(params: torch.Tensor, grad_fn, steps: int, lr: float, n: int, batch_rows: int | None, generator) -> None:
    """``steps`` Adam steps on the packed parameters (in place) along ``grad_fn(params, rows)``,
    the gradient of the loss to minimise on the scoring rows ``rows`` (a fresh random subset of
    ``batch_rows`` of the ``n`` rows each step, or all rows: ``rows=None``)."""
    opt = torch.optim.Adam([params], lr=lr, fused=params.device.type in ("cpu", "cuda"))
    sample = batch_rows is not None and batch_rows < n
    for _ in range(steps):
        rows = torch.randperm(n, generator=generator)[:batch_rows].to(params.device) if sample else None
        params.grad = grad_fn(params, rows)
        opt.step()


def _neuron_scores(f: torch.Tensor, r: torch.Tensor, G_inv: torch.Tensor, damping: float):
    """Δη'_p of P single-neuron candidates ``f`` (B, P): ``C_p G⁻¹ C_pᵀ / A_f,p``, and ``C``, ``A_f``."""
    n = f.shape[0]
    C = f.T @ r / n  # (P, d_out)
    A_f = (f * f).mean(0) * (1 + damping) + 1e-12
    return (C * (C @ G_inv)).sum(1) / A_f, C, A_f


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
) -> Candidate:
    """Optimise ``n_candidates`` single-neuron candidates for hidden layer ``layer`` jointly and
    return the best.

    Parameters
    ----------
    h_in : (B, d_in) inputs of the widened layer (``x`` or the previous hidden layer) on the scoring batch.
    consumer : K-FAC stats of the consumer layer (the layer after the widened one).
    steps, lr : Adam ascent of ``Σ_p log Δη'_p − prior·½‖θ_p‖²`` (float32, closed-form gradient
        ``∂Δη'_p/∂f_p = 2/(B·A_f,p) · (r G⁻¹ C_pᵀ − (1+γ)·Δη'_p·f_p)``, growth-methods.md §1.2).
    init : start from this pool (its P candidates, d_in columns) instead of random candidates,
        e.g. the previous round's or check's pool (then a few ``steps`` suffice).
        Ignored when its input width differs from ``h_in``'s.
    batch_rows : scoring rows per ascent step, a fresh random subset each step (stochastic
        ascent; the final scores use all rows); ``None``: all rows every step.

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

    def grad(params, rows):
        hb, rb, rGb = (h, r, rG) if rows is None else (h[rows], r[rows], rG[rows])
        feats = _Features(hb, params)
        s, C, A_f = _neuron_scores(feats.f, rb, G_inv, damping)
        # ∂(−Σ log Δη'_p)/∂f
        grad_f = (rGb @ C.T - (1 + damping) * s * feats.f) * (-2 / (hb.shape[0] * A_f * (s + 1e-30)))
        return feats.backward(grad_f) + prior * params

    _ascend(params, grad, steps, lr, n, batch_rows, generator)
    W, b, theta = _split(params)
    s = _neuron_scores(_features(h, W, b, theta), r, G_inv, damping)[0]
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
    ``init`` (an earlier layer candidate of the same width, e.g. the previous check's). ``batch_rows``:
    rows of ``h_in`` per ascent step (a fresh random subset each step; ``None``: all). Adam
    ascent of ``log Δη' − prior·½(‖B − I‖² + ‖s‖²)`` in float32 with the closed-form gradient
    ``∂Δη'/∂F = 2/B·(r Kᵀ − F M − (γ/k)·tr(M)·F)``, ``K = A_f⁻¹ C G⁻¹``, ``M = K Cᵀ A_f⁻¹``
    (the last term from the damping's dependence on ``F``); the returned score is Δη' in float64.
    """
    h = h_in.float()
    r64 = residual(consumer)
    r = r64.float()
    G_inv = consumer.G_inv.inverse().float()
    k = h.shape[1]
    if starts_from(init, h):
        params = _pack(init, h)
    else:
        params = _init(k, k, generator, h.dtype, h.device, identity_weight=True)
    anchor = torch.zeros_like(params)
    anchor[:, :k] = torch.eye(k, dtype=h.dtype, device=h.device)
    mask = torch.zeros_like(params)
    mask[:, : k + 1] = 1.0  # prior on B − I and s, not on θ

    def grad(params, rows):
        hb, rb = (h, r) if rows is None else (h[rows], r[rows])
        n = hb.shape[0]
        feats = _Features(hb, params)
        F = feats.f
        C = F.T @ rb / n  # (k, d_out)
        A_iC = DampedFactor(F.T @ F / n, damping).solve(C)  # A_f⁻¹ C
        K = A_iC @ G_inv
        s = (K * C).sum()
        M = K @ A_iC.T
        ds_dF = (rb @ K.T - F @ M - (damping / k) * M.diagonal().sum() * F) * (2 / n)
        return feats.backward(ds_dF * (-1 / (s + 1e-30))) + prior * mask * (params - anchor)

    _ascend(params, grad, steps, lr, h.shape[0], batch_rows, generator)
    W, b, theta = _split(params)
    with torch.no_grad():
        s = float(delta_eta_lower_bound(_features(h.double(), W.double(), b.double(), theta.double()), r64, consumer.G_inv, damping))
    if not s == s:  # NaN
        s = 0.0
    return Candidate("layer", position, s, W.clone(), b.clone(), theta.clone())


def heldout_score(cand: Candidate, h_in: torch.Tensor, consumer: LayerStats, damping: float = 0.1) -> float:
    """Debiased Δη' of ``cand`` on held-out inputs ``h_in`` (B, d_in) against the consumer's
    held-out statistics; see :func:`senn_automl.curvature.delta_eta_heldout`."""
    h = h_in.double()
    f = CandidatePool(cand.weight, cand.bias, cand.act_params).features(h)
    return delta_eta_heldout(f, residual(consumer), consumer.G_inv, damping)
