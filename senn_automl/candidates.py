"""Candidate search for new neurons and new layers (torch only).

Candidates are optimised for the lower bound Δη' on the small sub-problem only: the inputs of
the widened layer, the consumer layer's residual ``r`` and its damped ``G`` (arXiv:2307.04526,
§3.3 and Theorem 3.2). ``P`` neuron candidates are stacked as one (P × d_in) weight matrix and
ascended together with Adam; a weak N(0, 1) prior on the weights keeps them well scaled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .curvature import LayerStats, delta_eta_heldout, delta_eta_lower_bound, residual
from .modules import DEFAULT_ACTIVATION, rational

__all__ = ["Candidate", "CandidatePool", "best_neuron_candidate", "layer_candidate", "heldout_score"]


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


def _init(k, d_in, generator, dtype, device, identity_weight: bool):
    g = generator
    if identity_weight:
        W = torch.eye(d_in, dtype=dtype) + 0.1 * torch.randn(d_in, d_in, generator=g, dtype=dtype) / d_in**0.5
    else:
        W = torch.randn(k, d_in, generator=g, dtype=dtype) / d_in**0.5
    b = 0.1 * torch.randn(k, generator=g, dtype=dtype)
    theta = torch.tensor(DEFAULT_ACTIVATION, dtype=dtype).repeat(k, 1) + 0.1 * torch.randn(k, 3, generator=g, dtype=dtype)
    return [t.to(device).requires_grad_(True) for t in (W, b, theta)]


def _ascend(params: list[torch.Tensor], loss_fn, steps: int, lr: float) -> None:
    """``steps`` Adam steps minimising ``loss_fn()`` over ``params`` (in place)."""
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()


def best_neuron_candidate(
    h_in: torch.Tensor,
    consumer: LayerStats,
    layer: int,
    *,
    n_candidates: int = 100,
    steps: int = 50,
    lr: float = 0.05,
    damping: float = 0.1,
    prior: float = 1e-2,
    generator: torch.Generator | None = None,
    init: CandidatePool | None = None,
) -> Candidate:
    """Optimise ``n_candidates`` single-neuron candidates for hidden layer ``layer`` jointly and
    return the best.

    Parameters
    ----------
    h_in : (B, d_in) inputs of the widened layer (``x`` or the previous hidden layer) on the scoring batch.
    consumer : K-FAC stats of the consumer layer (the layer after the widened one).
    steps, lr : Adam ascent of ``Σ_p log Δη'_p − prior·½‖θ_p‖²``.
    init : start from this pool (its P candidates, d_in columns) instead of random candidates,
        e.g. the previous round's pool within one growth check (then a few ``steps`` suffice).
        Ignored when its input width differs from ``h_in``'s.

    The score of candidate p is ``Δη'_p = C_p G⁻¹ C_pᵀ / A_f,p`` with ``C_p = E[f_p rᵀ]`` (k = 1).
    """
    h = h_in.float()
    r64 = residual(consumer)
    r = r64.float()
    G_inv_rT = consumer.G_inv.solve(r64.T).float()  # (d_out, B)
    n = h.shape[0]
    if init is not None and init.weight.shape[1] == h.shape[1]:
        W, b, theta = (t.detach().to(h).clone().requires_grad_(True) for t in (init.weight, init.bias, init.act_params))
    else:
        W, b, theta = _init(n_candidates, h.shape[1], generator, h.dtype, h.device, identity_weight=False)

    def scores():
        f = _features(h, W, b, theta)  # (B, P)
        C = f.T @ r / n  # (P, d_out)
        CGC = (C * (f.T @ G_inv_rT.T / n)).sum(1)  # C_p G⁻¹ C_pᵀ
        A_f = (f * f).mean(0) * (1 + damping) + 1e-12
        return CGC / A_f

    def loss():
        return -torch.log(scores() + 1e-30).sum() + prior * 0.5 * ((W**2).sum() + (b**2).sum() + (theta**2).sum())

    _ascend([W, b, theta], loss, steps, lr)
    with torch.no_grad():
        s = scores()
        s = torch.where(torch.isfinite(s), s, torch.zeros_like(s))
        p = int(torch.argmax(s))
        pool = CandidatePool(W.detach().float(), b.detach().float(), theta.detach().float())
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
) -> Candidate:
    """Optimise one layer candidate ``f = σ_θ(h Bᵀ + s)`` of width k = d_in for insertion before
    the consumer layer ``position``; its score is the joint Δη' (k × k ``A_f``).

    ``h_in`` : (B, d_in), the consumer's current inputs. ``B`` starts near the identity.
    """
    h = h_in.double()
    r = residual(consumer)
    W, b, theta = _init(h.shape[1], h.shape[1], generator, h.dtype, h.device, identity_weight=True)
    eye = torch.eye(W.shape[0], dtype=W.dtype, device=W.device)

    def score():
        return delta_eta_lower_bound(_features(h, W, b, theta), r, consumer.G_inv, damping)

    def loss():
        return -torch.log(score() + 1e-30) + prior * 0.5 * (((W - eye) ** 2).sum() + (b**2).sum())

    _ascend([W, b, theta], loss, steps, lr)
    with torch.no_grad():
        s = float(score())
    if not s == s:  # NaN
        s = 0.0
    return Candidate("layer", position, s, W.detach().float(), b.detach().float(), theta.detach().float())


def heldout_score(cand: Candidate, h_in: torch.Tensor, consumer: LayerStats, damping: float = 0.1) -> float:
    """Debiased Δη' of ``cand`` on held-out inputs ``h_in`` (B, d_in) against the consumer's
    held-out statistics; see :func:`senn_automl.curvature.delta_eta_heldout`."""
    h = h_in.double()
    f = CandidatePool(cand.weight, cand.bias, cand.act_params).features(h)
    return delta_eta_heldout(f, residual(consumer), consumer.G_inv, damping)
