"""Tests for senn_automl.scores.curvature: K-FAC statistics, η and the Δη bounds (real computations, float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from senn_automl.models.mlp import GrowingMLP
from senn_automl.scores.curvature import (
    DampedFactor,
    collect_kfac,
    delta_eta_exact,
    delta_eta_heldout,
    delta_eta_lower_bound,
    eta_heldout,
    natural_expansion_score,
    residual,
    with_new_neuron,
)

DAMPING = 0.1



def _tiny_problem(seed: int = 0, n: int = 16):
    torch.manual_seed(seed)
    model = GrowingMLP(3, 2, (4,)).double()
    g = torch.Generator().manual_seed(seed + 100)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=g)
    return model, X, y


def _damped(M: torch.Tensor, gamma: float) -> torch.Tensor:
    return M + gamma * M.diagonal().mean() * torch.eye(M.shape[0], dtype=M.dtype)


def _task(n: int, d: int, classes: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    score = torch.stack(
        [X[:, 0] * X[:, 1], torch.sin(2 * X[:, 2]) + 0.5 * X[:, 3], X[:, 4] ** 2 - 1][:classes], dim=1
    )
    y = score.argmax(1)
    return X, y


@pytest.fixture(scope="module")
def trained():
    """A small double-precision net trained for a while on a non-linear 3-class task."""
    torch.manual_seed(3)
    X, y = _task(256, 6, 3, seed=7)
    model = GrowingMLP(6, 3, (5, 4)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return model, X, y


# --------------------------------------------------------------------------- η vs dense K-FAC


@pytest.mark.parametrize("fisher", ["gauss_newton", "empirical"])
def test_eta_equals_dense_kronecker_quadratic_form(fisher):
    model, X, y = _tiny_problem()
    stats = collect_kfac(model, X, y, damping=DAMPING, fisher=fisher)
    assert len(stats.layers) == 2
    total = 0.0
    for layer in stats.layers:
        A_d = _damped(layer.A, DAMPING)
        G_d = _damped(layer.G, DAMPING)
        F_c = torch.kron(G_d, A_d)  # row-major vec of grad (d_out, d_in+1): index i*(d_in+1)+j
        g = layer.grad.reshape(-1)
        dense = float(g @ torch.linalg.solve(F_c, g))
        assert dense > 0
        assert layer.eta == pytest.approx(dense, rel=1e-6)
        # the helper agrees with the stored per-layer score
        assert natural_expansion_score(layer.grad, layer.A_inv, layer.G_inv) == pytest.approx(dense, rel=1e-6)
        total += dense
    assert stats.eta == pytest.approx(total, rel=1e-6)


def test_unit_gradient_factor_equals_dense_official_factor():
    """G = E[J_cᵀ û ûᵀ J_c] (û the unit-normalised ∂ℓ/∂y, the official SENN code's output factor),
    computed densely per sample with autograd Jacobians, on a net with K = 3 outputs."""
    torch.manual_seed(1)
    model = GrowingMLP(3, 3, (4,)).double()
    g = torch.Generator().manual_seed(5)
    X = torch.randn(24, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (24,), generator=g)
    stats = collect_kfac(model, X, y, damping=DAMPING, fisher="unit_gradient")
    gn = collect_kfac(model, X, y, damping=DAMPING, fisher="gauss_newton")
    out = model(X).detach().requires_grad_(True)
    (dy,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), out)
    u = dy / dy.norm(dim=1, keepdim=True)  # (n, K)
    # output layer: J = I, so G = E[û ûᵀ]
    torch.testing.assert_close(stats.layers[1].G, u.T @ u / 24, rtol=1e-10, atol=1e-12)
    s = model.linears[0](X).detach()
    head = lambda s_: model.linears[1](model.activations[0](s_))  # noqa: E731
    J = torch.func.vmap(torch.func.jacrev(head))(s)  # (n, K, d_hidden)
    uJ = torch.einsum("nk,nki->ni", u, J)
    torch.testing.assert_close(stats.layers[0].G, uJ.T @ uJ / 24, rtol=1e-10, atol=1e-12)
    # with K > 1 it is not the Gauss-Newton factor (its trace is smaller), but the gradients, λ
    # and the loss are the same
    assert float(stats.layers[0].G.trace()) < 0.9 * float(gn.layers[0].G.trace())
    for a, b in zip(stats.layers, gn.layers):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert stats.lam == gn.lam


def test_factors_and_gradient_match_manual_autograd():
    model, X, y = _tiny_problem()
    n = X.shape[0]
    stats_gn = collect_kfac(model, X, y, damping=DAMPING, fisher="gauss_newton")
    stats_emp = collect_kfac(model, X, y, damping=DAMPING, fisher="empirical")

    # mean-loss gradient of each linear layer, stacked as [W | b]
    loss = F.cross_entropy(model(X), y)
    params = [p for lin in model.linears for p in (lin.weight, lin.bias)]
    grads = torch.autograd.grad(loss, params)
    layer_inputs = model.layer_inputs(X)
    for i, lin in enumerate(model.linears):
        gW, gb = grads[2 * i], grads[2 * i + 1]
        manual_grad = torch.cat([gW, gb[:, None]], dim=1)
        a = torch.cat([layer_inputs[i].detach(), torch.ones(n, 1, dtype=X.dtype)], dim=1)
        manual_A = a.T @ a / n
        for stats in (stats_gn, stats_emp):
            layer = stats.layers[i]
            assert layer.grad.shape == (lin.out_features, lin.in_features + 1)
            torch.testing.assert_close(layer.grad, manual_grad, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(layer.A, manual_A, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(layer.a, a, rtol=0, atol=0)

    # Gauss-Newton G of the output layer is the identity
    G_out = stats_gn.layers[-1].G
    torch.testing.assert_close(G_out, torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-12)

    # hidden-layer factors: GN = E[J^T J] with J = dy/ds, empirical = E[delta delta^T]
    s = model.linears[0](X).detach().requires_grad_(True)
    head = lambda s_: model.linears[1](model.activations[0](s_))  # noqa: E731
    J = torch.func.vmap(torch.func.jacrev(head))(s.detach())  # (n, d_out, d_hidden)
    G_gn = torch.einsum("nki,nkj->ij", J, J) / n
    torch.testing.assert_close(stats_gn.layers[0].G, G_gn, rtol=1e-10, atol=1e-12)
    (delta,) = torch.autograd.grad(F.cross_entropy(head(s), y, reduction="sum"), s)
    torch.testing.assert_close(stats_emp.layers[0].G, delta.T @ delta / n, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(stats_emp.layers[0].delta, delta, rtol=1e-10, atol=1e-12)
    # λ = E‖∂ℓ/∂y‖² is the same for both Fishers
    out = model(X).detach().requires_grad_(True)
    (dy,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), out)
    assert stats_gn.lam == pytest.approx(float((dy**2).sum(1).mean()), rel=1e-10)
    assert stats_emp.lam == pytest.approx(stats_gn.lam, rel=1e-12)


def test_collect_kfac_does_not_touch_param_grads_and_rejects_unknown_fisher():
    model, X, y = _tiny_problem()
    collect_kfac(model, X, y)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="fisher"):
        collect_kfac(model, X, y, fisher="exact")


def test_input_factor_cache_reuses_the_first_layer_factor_and_sees_in_place_changes():
    model, X, y = _tiny_problem()
    cache: dict = {}
    plain = collect_kfac(model, X, y)
    first = collect_kfac(model, X, y, cache=cache)
    again = collect_kfac(model, X, y, cache=cache)
    assert again.layers[0].A_inv is first.layers[0].A_inv  # reused, not recomputed
    assert again.layers[1].A_inv is not first.layers[1].A_inv  # hidden inputs are new tensors
    for s in (first, again):
        assert s.eta == pytest.approx(plain.eta, rel=1e-12)
        assert torch.equal(s.layers[0].A, plain.layers[0].A)
    other = collect_kfac(model, X, y, damping=0.5, cache=cache)  # another damping: its own factor
    assert other.eta == pytest.approx(collect_kfac(model, X, y, damping=0.5).eta, rel=1e-12)
    X.mul_(2.0)  # the same tensor, changed in place: the cached factor must not be used
    changed = collect_kfac(model, X, y, cache=cache)
    assert changed.eta == pytest.approx(collect_kfac(model, X, y).eta, rel=1e-12)
    assert changed.eta != pytest.approx(plain.eta, rel=1e-6)
    assert len(cache) == 1  # stale entries of X were dropped


def test_damped_factor_solves_damped_system():
    g = torch.Generator().manual_seed(0)
    Z = torch.randn(20, 5, generator=g, dtype=torch.float64)
    M = Z.T @ Z / 20
    fac = DampedFactor(M, 0.3)
    B = torch.randn(5, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fac.solve(B), torch.linalg.solve(_damped(M, 0.3), B), rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(fac.inverse(), torch.linalg.inv(_damped(M, 0.3)), rtol=1e-8, atol=1e-12)
    # a zero matrix still factorises (absolute jitter), no NaN
    assert torch.isfinite(DampedFactor(torch.zeros(3, 3, dtype=torch.float64), 0.1).inverse()).all()


# --------------------------------------------------------------------------- Δη' and Δη


def _random_features(stats_layer, k, g, kind):
    n = stats_layer.a.shape[0]
    noise = torch.randn(n, k, generator=g, dtype=torch.float64)
    if kind == "noise":
        return noise
    # features that overlap the consumer's current inputs (Schur complement matters)
    a = stats_layer.a
    mix = torch.randn(a.shape[1], k, generator=g, dtype=torch.float64)
    return torch.tanh(a @ mix + 0.3 * noise)


@pytest.fixture(scope="module")
def untrained():
    """The same net as ``trained`` at its random initialisation (large residual, small η)."""
    torch.manual_seed(3)
    X, y = _task(256, 6, 3, seed=7)
    return GrowingMLP(6, 3, (5, 4)).double(), X, y


@pytest.mark.parametrize("net", ["trained", "untrained"])
@pytest.mark.parametrize("k", [1, 3])
def test_lower_bound_never_exceeds_exact(net, k, request):
    model, X, y = request.getfixturevalue(net)
    stats = collect_kfac(model, X, y, damping=DAMPING)
    g = torch.Generator().manual_seed(10 + k)
    n_checked = 0
    for consumer in stats.layers[1:]:
        r = residual(consumer)
        for t in range(40):
            f = _random_features(consumer, k, g, "noise" if t % 2 else "mixed")
            lb = float(delta_eta_lower_bound(f, r, consumer.G_inv, DAMPING))
            ex = float(delta_eta_exact(f, consumer))
            assert lb >= 0
            assert lb <= ex * (1 + 1e-9) + 1e-15, (t, lb, ex)
            n_checked += 1
    assert n_checked == 80


@pytest.mark.parametrize("net", ["trained", "untrained"])
@pytest.mark.parametrize("fisher", ["gauss_newton", "unit_gradient"])
def test_features_in_the_span_of_the_consumer_inputs_score_zero(net, fisher, request):
    """A feature that the consumer can already form from its inputs adds nothing: Δη' ≈ Δη ≈ 0.
    (With a damped residual this scored Δη' of several % of η, passing τ = 0.03.)"""
    model, X, y = request.getfixturevalue(net)
    stats = collect_kfac(model, X, y, damping=DAMPING, fisher=fisher)
    g = torch.Generator().manual_seed(5)
    for consumer in stats.layers[1:]:
        r = residual(consumer)
        f = consumer.a @ torch.randn(consumer.a.shape[1], 1, generator=g, dtype=torch.float64)
        useful = r[:, :1] + 0.1 * f  # for scale: a feature that does fit the residual
        lb = float(delta_eta_lower_bound(f, r, consumer.G_inv, DAMPING))
        ex = float(delta_eta_exact(f, consumer))
        ref = float(delta_eta_lower_bound(useful, r, consumer.G_inv, DAMPING))
        assert ref > 1e-3 * stats.eta
        assert abs(lb) <= 1e-8 * stats.eta, (lb, stats.eta)
        assert abs(ex) <= 1e-6 * stats.eta, (ex, stats.eta)


def test_span_feature_of_a_small_regression_net_scores_zero():
    """The reproduction of the damped-residual defect: a 1-D regression net with 3 hidden units
    after 30 Adam steps, and a candidate that lies in the span of the consumer's inputs."""
    torch.manual_seed(0)
    X = torch.linspace(-2, 2, 64, dtype=torch.float64)[:, None]
    t = torch.sin(3 * X)
    model = GrowingMLP(1, 1, (3,)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    mse = lambda out, y: 0.5 * ((out - y) ** 2).sum()  # noqa: E731
    for _ in range(30):
        opt.zero_grad()
        mse(model(X), t).backward()
        opt.step()
    stats = collect_kfac(model, X, t, damping=DAMPING, loss_fn=mse)
    out = stats.layers[-1]
    f = out.a[:, :1] - 0.5 * out.a[:, 1:2] + 0.2  # hidden units 0 and 1, and the bias
    lb = float(delta_eta_lower_bound(f, residual(out), out.G_inv, DAMPING))
    assert stats.eta > 0
    assert lb / stats.eta < 1e-8 and lb / stats.lam < 1e-8


@pytest.mark.parametrize("k", [1, 3])
def test_exact_delta_eta_equals_dense_augmented_eta(trained, k):
    """Δη of :func:`delta_eta_exact` is the increase of the dense η with an undamped input factor,
    whatever the K-FAC damping of the statistics (it only enters through G)."""
    model, X, y = trained
    stats = collect_kfac(model, X, y, damping=DAMPING)
    n = X.shape[0]
    g = torch.Generator().manual_seed(20 + k)
    for consumer in stats.layers[1:]:
        G_inv = consumer.G_inv.inverse()
        eta0 = float(torch.trace(torch.linalg.solve(consumer.A, consumer.grad.T) @ G_inv @ consumer.grad))
        for kind in ("noise", "mixed"):
            f = _random_features(consumer, k, g, kind)
            aug = torch.cat([consumer.a, f], dim=1)
            A_aug = aug.T @ aug / n
            grad_aug = consumer.delta.T @ aug / n
            eta_aug = float(torch.trace(torch.linalg.solve(A_aug, grad_aug.T) @ G_inv @ grad_aug))
            ex = float(delta_eta_exact(f, consumer))
            assert ex > 0
            assert ex == pytest.approx(eta_aug - eta0, rel=1e-6, abs=1e-12)


def test_residual_is_orthogonal_to_consumer_inputs(trained):
    """The residual is the least-squares one whatever the damping: ``E[a rᵀ] = 0``."""
    model, X, y = trained
    n = X.shape[0]
    for damping in (1e-9, DAMPING, 1.0):
        stats = collect_kfac(model, X, y, damping=damping)
        for consumer in stats.layers:
            r = residual(consumer)
            assert r.shape == consumer.delta.shape
            cross = r.T @ consumer.a / n
            scale = float(consumer.grad.abs().max())
            assert scale > 1e-6
            assert float(cross.abs().max()) <= 1e-8 * scale


def test_lower_bound_gradient_matches_finite_difference(trained):
    model, X, y = trained
    stats = collect_kfac(model, X, y, damping=DAMPING)
    consumer = stats.layers[1]
    r = residual(consumer)
    g = torch.Generator().manual_seed(5)
    f0 = _random_features(consumer, 2, g, "mixed") + 0.5 * r[:, :2]
    f = f0.clone().requires_grad_(True)
    val = delta_eta_lower_bound(f, r, consumer.G_inv, DAMPING)
    assert val.ndim == 0
    (grad,) = torch.autograd.grad(val, f)
    assert float(grad.abs().max()) > 0
    eps = 1e-6
    for trial in range(4):
        v = torch.randn(f0.shape, generator=g, dtype=torch.float64)
        plus = float(delta_eta_lower_bound(f0 + eps * v, r, consumer.G_inv, DAMPING))
        minus = float(delta_eta_lower_bound(f0 - eps * v, r, consumer.G_inv, DAMPING))
        fd = (plus - minus) / (2 * eps)
        ad = float((grad * v).sum())
        assert ad == pytest.approx(fd, rel=1e-5, abs=1e-10), trial
    # single coordinates too
    for n_idx, j in [(0, 0), (17, 1), (100, 0)]:
        e = torch.zeros_like(f0)
        e[n_idx, j] = 1.0
        fd = (
            float(delta_eta_lower_bound(f0 + eps * e, r, consumer.G_inv, DAMPING))
            - float(delta_eta_lower_bound(f0 - eps * e, r, consumer.G_inv, DAMPING))
        ) / (2 * eps)
        assert float(grad[n_idx, j]) == pytest.approx(fd, rel=1e-4, abs=1e-9)


def test_heldout_estimate_is_unbiased_for_useless_features_and_positive_for_useful(trained):
    model, X, y = trained
    stats = collect_kfac(model, X, y, damping=DAMPING)
    consumer = stats.layers[-1]
    r = residual(consumer)
    n = r.shape[0]
    g = torch.Generator().manual_seed(99)
    held, biased = [], []
    for _ in range(400):
        f = torch.randn(n, 1, generator=g, dtype=torch.float64)
        held.append(delta_eta_heldout(f, r, consumer.G_inv, DAMPING))
        biased.append(float(delta_eta_lower_bound(f, r, consumer.G_inv, DAMPING)))
    held_t, biased_t = torch.tensor(held), torch.tensor(biased)
    assert float(biased_t.mean()) > 0
    assert (held_t < 0).any()  # the debiased estimate may go negative, the biased one never does
    assert (biased_t >= 0).all()
    # mean of the debiased estimate is ≈ 0: far below the noise floor of the biased one and
    # within a few standard errors of zero
    se = float(held_t.std()) / len(held) ** 0.5
    assert abs(float(held_t.mean())) < 0.1 * float(biased_t.mean())
    assert abs(float(held_t.mean())) < 4 * se + 1e-12

    # a feature that *is* a residual column is clearly useful
    f_good = r[:, :1].clone()
    good = delta_eta_heldout(f_good, r, consumer.G_inv, DAMPING)
    assert good > 10 * float(biased_t.mean())
    assert good > 0.5 * float(delta_eta_lower_bound(f_good, r, consumer.G_inv, DAMPING))


def test_eta_bounded_by_lambda_for_gauss_newton(trained):
    model, X, y = trained
    for damping in (DAMPING, 1e-6):
        stats = collect_kfac(model, X, y, damping=damping, fisher="gauss_newton")
        assert stats.eta > 0 and stats.lam > 0
        assert stats.eta <= stats.lam
        # each layer alone is a (projected) share of the output-gradient energy
        for layer in stats.layers:
            assert 0 <= layer.eta <= stats.lam
        # output layer: G = I, η_out is the least-squares projection of δ onto a: ≤ λ exactly
        out = stats.layers[-1]
        assert out.eta <= float((out.delta**2).sum(1).mean()) + 1e-15


# --------------------------------------------------------------------------- warm-started candidates


def test_warm_started_candidates_continue_from_the_pool(trained):
    from senn_automl.scores.candidates import best_neuron_candidate

    model, X, y = trained
    stats = collect_kfac(model, X, y, damping=DAMPING)
    with torch.no_grad():
        h = model.layer_inputs(X)[0]
    g = torch.Generator().manual_seed(0)
    cold = best_neuron_candidate(h, stats.layers[1], 0, n_candidates=16, steps=40, generator=g)
    # zero steps from a pool: the same pool and the same best candidate back
    same = best_neuron_candidate(h, stats.layers[1], 0, steps=0, init=cold.pool)
    torch.testing.assert_close(same.pool.weight, cold.pool.weight)
    assert same.score == pytest.approx(cold.score, rel=1e-5)
    # a few refinement steps from the optimised pool do not fall back to a random start's level
    random0 = best_neuron_candidate(h, stats.layers[1], 0, n_candidates=16, steps=0, generator=torch.Generator().manual_seed(0))
    warm = best_neuron_candidate(h, stats.layers[1], 0, steps=5, init=cold.pool)
    assert warm.score > random0.score
    # a pool of another input width is ignored (random start with n_candidates)
    other = best_neuron_candidate(h[:, :-1], stats.layers[1], 0, n_candidates=8, steps=0, init=cold.pool)
    assert other.pool.weight.shape == (8, h.shape[1] - 1)


def test_refine_steps_validated():
    from senn_automl.growth.natural import NaturalExpansionPolicy

    with pytest.raises(ValueError, match="refine_steps"):
        NaturalExpansionPolicy(refine_steps=-1)


# --------------------------------------------------------------------------- closed-form candidate gradients


def _candidate_problem(trained, consumer_idx, k, seed, identity):
    """Inputs h_1 (B, d), the consumer's residual and G⁻¹, and packed candidate parameters (k, d + 4)."""
    from senn_automl.scores.candidates import _init

    model, X, y = trained
    stats = collect_kfac(model, X, y, damping=DAMPING)
    with torch.no_grad():
        h = model.layer_inputs(X)[1]
    consumer = stats.layers[consumer_idx]
    g = torch.Generator().manual_seed(seed)
    k = k or h.shape[1]
    params = _init(k, h.shape[1], g, torch.float64, "cpu", identity_weight=identity)
    params[:, -3:] += 0.3 * torch.randn(k, 3, generator=g, dtype=torch.float64)  # away from the default activation
    return h, consumer, residual(consumer), consumer.G_inv.inverse(), params


def test_neuron_candidate_gradient_matches_autograd(trained):
    """The closed-form ascent gradient of Σ_p log Δη'_p (the one the search steps along) equals
    autograd through the rational activation."""
    from senn_automl.models.mlp import rational
    from senn_automl.scores.candidates import _neuron_grad, _split

    h, _, r, G_inv, params = _candidate_problem(trained, 2, 7, seed=1, identity=False)
    n, prior = h.shape[0], 0.01
    closed = _neuron_grad(params, h, r, r @ G_inv, G_inv, DAMPING, prior)

    p = params.clone().requires_grad_(True)
    W, b, theta = _split(p)
    f = rational(h @ W.T + b, theta[:, 0], theta[:, 1], theta[:, 2])
    C = f.T @ r / n
    score = (C * (C @ G_inv)).sum(1) / ((f * f).mean(0) * (1 + DAMPING) + 1e-12)
    (-torch.log(score).sum() + prior / 2 * (p * p).sum()).backward()
    torch.testing.assert_close(closed, p.grad, rtol=1e-9, atol=1e-12)


def test_layer_candidate_gradient_matches_autograd(trained):
    """Closed-form ∂(−log Δη')/∂params of a layer candidate (the search's gradient), with the
    damping's own dependence on F and the prior on B − I and s."""
    from senn_automl.models.mlp import rational
    from senn_automl.scores.candidates import _layer_grad, _split

    h, consumer, r, G_inv, params = _candidate_problem(trained, 1, None, seed=2, identity=True)
    k, prior = h.shape[1], 0.01
    anchor = torch.zeros_like(params)
    anchor[:, :k] = torch.eye(k, dtype=h.dtype)
    mask = torch.zeros_like(params)
    mask[:, : k + 1] = 1.0
    closed = _layer_grad(params, h, r, G_inv, DAMPING, prior, anchor, mask)

    p = params.clone().requires_grad_(True)
    W, b, theta = _split(p)
    f = rational(h @ W.T + b, theta[:, 0], theta[:, 1], theta[:, 2])
    loss = -torch.log(delta_eta_lower_bound(f, r, consumer.G_inv, DAMPING)) + prior / 2 * (mask * (p - anchor)).pow(2).sum()
    loss.backward()
    torch.testing.assert_close(closed, p.grad, rtol=1e-8, atol=1e-12)


def test_candidate_adam_matches_torch_adam():
    """The search's written-out Adam takes the same steps as ``torch.optim.Adam``."""
    from senn_automl.scores.candidates import _adam

    g = torch.Generator().manual_seed(0)
    target = torch.randn(5, 7, generator=g, dtype=torch.float64)
    start = torch.randn(5, 7, generator=g, dtype=torch.float64)

    def grad(params, rows):
        return (params - target) ** 3

    ours = start.clone()
    _adam(ours, grad, 30, 0.05, 1, None, g)
    ref = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.05)
    for _ in range(30):
        ref.grad = grad(ref.detach(), None)
        opt.step()
    torch.testing.assert_close(ours, ref.detach(), rtol=1e-12, atol=1e-12)


def test_stochastic_ascent_on_row_subsets_still_finds_useful_neurons(trained):
    """Ascent on random 64-row subsets per step: finite scores on all rows, far above a random start."""
    from senn_automl.scores.candidates import best_neuron_candidate, layer_candidate

    model, X, y = trained
    stats = collect_kfac(model, X, y, damping=DAMPING)
    with torch.no_grad():
        h = model.layer_inputs(X)
    start = best_neuron_candidate(h[1], stats.layers[2], 1, n_candidates=16, steps=0, generator=torch.Generator().manual_seed(0))
    sub = best_neuron_candidate(h[1], stats.layers[2], 1, n_candidates=16, steps=80, batch_rows=64, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(torch.tensor(sub.score)) and sub.score > 2 * start.score
    layer0 = layer_candidate(h[1], stats.layers[1], 1, steps=0, generator=torch.Generator().manual_seed(0))
    layer = layer_candidate(h[1], stats.layers[1], 1, steps=40, batch_rows=64, generator=torch.Generator().manual_seed(0))
    assert layer.score > layer0.score
    # a layer candidate warm-started from another of the same width, with zero steps, is returned unchanged
    again = layer_candidate(h[1], stats.layers[1], 1, steps=0, init=layer)
    torch.testing.assert_close(again.weight, layer.weight)


@pytest.mark.parametrize("bad", [dict(candidate_batch_size=1), dict(candidate_batch_size=2.5), dict(warm_checks="yes")])
def test_candidate_batch_size_and_warm_checks_validated(bad):
    from senn_automl.growth.natural import NaturalExpansionPolicy

    with pytest.raises(ValueError, match=next(iter(bad))):
        NaturalExpansionPolicy(**bad)


def test_pools_padded_when_their_inputs_gained_units():
    """A pool made before its input layer grew starts the next search with the same features on
    the old inputs (zero weights on the new ones); a layer candidate also gains pass-through units
    so it stays as wide as its inputs; a pool with more inputs than the layer has is not used."""
    from senn_automl.models.mlp import DEFAULT_ACTIVATION
    from senn_automl.scores.candidates import CandidatePool, _features, _pack, _split, starts_from

    g = torch.Generator().manual_seed(0)
    h_old = torch.randn(50, 4, generator=g, dtype=torch.float64)
    h_new = torch.cat([h_old, torch.randn(50, 2, generator=g, dtype=torch.float64)], 1)  # 2 units appended
    pool = CandidatePool(torch.randn(7, 4, generator=g), torch.randn(7, generator=g), torch.randn(7, 3, generator=g))
    assert starts_from(pool, h_new) and starts_from(pool, h_old) and not starts_from(pool, h_new[:, :3])

    W, b, theta = _split(_pack(pool, h_new))
    assert W.shape == (7, 6) and W.dtype == torch.float64
    torch.testing.assert_close(_features(h_new, W, b, theta), pool.features(h_old))

    layer = CandidatePool(torch.randn(4, 4, generator=g), torch.randn(4, generator=g), torch.randn(4, 3, generator=g))
    W, b, theta = _split(_pack(layer, h_new, layer=True))
    assert W.shape == (6, 6)
    f = _features(h_new, W, b, theta)
    torch.testing.assert_close(f[:, :4], layer.features(h_old))
    torch.testing.assert_close(W[4:], torch.eye(6, dtype=W.dtype)[4:])
    torch.testing.assert_close(theta[4:], torch.tensor(DEFAULT_ACTIVATION, dtype=W.dtype).expand(2, 3))


@pytest.mark.parametrize("hidden", [(), (5,), (5, 4, 3)])
@pytest.mark.parametrize("fisher", ["gauss_newton", "empirical"])
def test_mlp_chain_rule_statistics_equal_autograd(hidden, fisher):
    """collect_kfac's chain-rule pass for a GrowingMLP gives the same factors, gradients, η and λ
    as its generic path (forward hooks and a batched autograd backward pass)."""
    torch.manual_seed(0)
    X, y = _task(64, 6, 3, seed=2)
    model = GrowingMLP(6, 3, hidden, max_depth=3).double()
    with torch.no_grad():  # activations away from their initial values
        for act in model.activations:
            for p in act.parameters():
                p.add_(0.3 * torch.randn_like(p))
    fast = collect_kfac(model, X, y, damping=DAMPING, fisher=fisher)
    generic = collect_kfac(model, X, y, damping=DAMPING, fisher=fisher, layers=list(model.linears))
    assert len(fast.layers) == len(generic.layers) == len(hidden) + 1
    for a, b in zip(fast.layers, generic.layers):
        for name in ("a", "delta", "A", "G", "grad"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-10, atol=1e-13)
        assert a.eta == pytest.approx(b.eta, rel=1e-9)
    assert fast.lam == pytest.approx(generic.lam, rel=1e-12) and fast.loss == pytest.approx(generic.loss, rel=1e-12)


def test_layer_candidates_are_scaled_orthogonal_so_the_consumer_keeps_its_scale(trained):
    """A layer candidate's B has all singular values equal (its polar factor times their mean),
    so after insertion the consumer's weights W B⁻¹ are W rotated and divided by σ̄: no
    direction of the consumer is amplified (what destabilised Adam after insertions)."""
    from senn_automl.scores.candidates import layer_candidate

    model, X, y = trained
    stats = collect_kfac(model, X, y, damping=DAMPING)
    with torch.no_grad():
        h = model.layer_inputs(X)
    cand = layer_candidate(h[1], stats.layers[1], 1, steps=60, generator=torch.Generator().manual_seed(0))
    S = torch.linalg.svdvals(cand.weight.double())
    assert float(S.max() / S.min()) < 1 + 1e-5
    W = model.linears[1].weight.detach().double().clone()
    with torch.no_grad():
        out = model(X)
        model.insert_layer(1, cand.weight.to(W.dtype), cand.bias.to(W.dtype))
        torch.testing.assert_close(model(X), out, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(torch.linalg.svdvals(model.linears[2].weight.detach().double()), torch.linalg.svdvals(W) / S.mean(),
                               rtol=1e-5, atol=1e-8)


def test_heldout_eta_is_the_mean_over_pairs_of_distinct_samples():
    """``eta_heldout`` = Σ_c Σ_{n≠m} ⟨z_n, z_m⟩_{(G⊗A)⁻¹} / (B(B−1)) with the per-sample gradients
    ``z_n = δ_n a_nᵀ`` (computed densely with the Kronecker product of the damped factors):
    the U-statistic of η with no ``n = m`` (noise) terms."""
    model, X, y = _tiny_problem(n=12)
    stats = collect_kfac(model, X, y, damping=DAMPING)
    total = 0.0
    for c, layer in enumerate(stats.layers):
        F_c = torch.kron(_damped(layer.G, DAMPING), _damped(layer.A, DAMPING))
        Z = torch.einsum("ni,nj->nij", layer.delta, layer.a).reshape(12, -1)  # vec(z_n), row-major
        gram = Z @ torch.linalg.solve(F_c, Z.T)
        total += float(gram.sum() - gram.diagonal().sum()) / (12 * 11)
        assert eta_heldout(stats, c) == pytest.approx(float(gram.sum() - gram.diagonal().sum()) / (12 * 11), rel=1e-8)
    assert eta_heldout(stats) == pytest.approx(total, rel=1e-8)
    assert eta_heldout(stats) < stats.eta  # the removed diagonal terms are positive


def test_heldout_eta_removes_the_noise_floor_of_small_batches(trained):
    """On 64-row batches η is far above its value on 20,000 rows (its noise floor ~ params·λ/B);
    the debiased estimate averages close to the large-sample value."""
    model, _, _ = trained
    X, y = _task(20000, 6, 3, seed=11)
    ref = collect_kfac(model, X, y, damping=DAMPING).eta
    g = torch.Generator().manual_seed(0)
    raw, debiased = [], []
    for _ in range(200):
        rows = torch.randperm(len(X), generator=g)[:64]
        st = collect_kfac(model, X[rows], y[rows], damping=DAMPING)
        raw.append(st.eta)
        debiased.append(eta_heldout(st))
    raw_bias, bias = np.mean(raw) - ref, np.mean(debiased) - ref
    assert raw_bias > 2 * ref  # the noise floor dominates η on 64 rows
    assert abs(bias) < 0.25 * raw_bias, (ref, np.mean(raw), np.mean(debiased))


@pytest.mark.parametrize("fisher", ["unit_gradient", "gauss_newton", "empirical"])
@pytest.mark.parametrize("layer", [0, 1])
def test_statistics_after_a_new_neuron_equal_collected_ones(trained, fisher, layer):
    """``with_new_neuron`` (no pass over the data) gives the statistics collect_kfac gives on the
    network with the neuron appended: every factor, gradient, damped solve, η_c, η and λ."""
    import copy

    model, X, y = trained
    model = copy.deepcopy(model)
    stats = collect_kfac(model, X, y, damping=DAMPING, fisher=fisher)
    g = torch.Generator().manual_seed(layer)
    d_in = model.linears[layer].in_features
    w, b = torch.randn(1, d_in, generator=g, dtype=X.dtype), torch.randn(1, generator=g, dtype=X.dtype)
    act = torch.tensor([[0.7, 0.2, 0.5]], dtype=X.dtype)
    with torch.no_grad():
        model.add_neurons(layer, w, b, act)
        f = model.activations[layer](model.linears[layer](model.layer_inputs(X)[layer]))[:, -1]
    new = with_new_neuron(stats, layer, f, DAMPING)
    ref = collect_kfac(model, X, y, damping=DAMPING, fisher=fisher)
    for got, want in zip(new.layers, ref.layers):
        for name in ("a", "delta", "A", "G", "grad"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-10, atol=1e-12)
        probe = torch.randn(got.A.shape[0], 2, generator=g, dtype=X.dtype)
        torch.testing.assert_close(got.A_inv.solve(probe), want.A_inv.solve(probe), rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(got.A_ls.solve(probe), want.A_ls.solve(probe), rtol=1e-6, atol=1e-8)
        probe = torch.randn(got.G.shape[0], 2, generator=g, dtype=X.dtype)
        torch.testing.assert_close(got.G_inv.solve(probe), want.G_inv.solve(probe), rtol=1e-8, atol=1e-10)
        assert got.eta == pytest.approx(want.eta, rel=1e-10)
    assert new.eta == pytest.approx(ref.eta, rel=1e-10) and new.lam == pytest.approx(ref.lam, rel=1e-12)
    assert new.layers[layer + 1].eta != stats.layers[layer + 1].eta  # the consumer really changed
