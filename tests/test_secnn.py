"""Tests for senn_automl.growth.secnn: conv K-FAC statistics, candidate scores, and SECNNPolicy on real data."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from senn_automl.growth import GrowthContext
from senn_automl.growth.base import make_policy, policy_params
from senn_automl.growth.natural import NaturalExpansionPolicy
from senn_automl.growth.secnn import SECNNPolicy, propose_layer, propose_widen
from senn_automl.models.cnn import GrowingCNN, kaiming_normal
from senn_automl.models.mlp import GrowingMLP
from senn_automl.scores.conv import (
    collect_cnn_stats,
    conv_kfac,
    conv_patches,
    kfac_layers,
    new_columns_score,
    norm_layers,
    weight_matrix,
)
from senn_automl.scores.curvature import DampedFactor, collect_kfac
from senn_automl.training.trainer import TrainConfig, Trainer, load_checkpoint


def _damped(M, gamma):
    return M + (gamma * M.diagonal().mean() + 1e-12) * torch.eye(M.shape[0], dtype=M.dtype)


def _conv_problem(bias=True, stride=1, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(3, 4, 3, padding=1, stride=stride, bias=bias).double()
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    out = conv(x)
    target = torch.randn_like(out)
    loss = ((out - target) ** 2 * torch.linspace(0.5, 2, out.shape[-1], dtype=torch.float64)).sum()
    (delta,) = torch.autograd.grad(loss, out, retain_graph=True)
    return conv, x, delta, loss


# --------------------------------------------------------------------------- conv K-FAC


@pytest.mark.parametrize("bias, stride", [(True, 1), (False, 2)])
def test_conv_kfac_gradient_equals_autograd(bias, stride):
    conv, x, delta, loss = _conv_problem(bias, stride)
    st = conv_kfac(x, delta, conv)
    loss.backward()
    auto = conv.weight.grad.reshape(4, -1)
    if bias:
        auto = torch.cat([auto, conv.bias.grad[:, None]], dim=1)
    # stats hold the mean over the B samples of the per-sample gradient of the summed loss
    torch.testing.assert_close(st.grad * x.shape[0], auto)
    assert weight_matrix(conv).shape == auto.shape


def test_conv_kfac_factors_shapes_symmetry_and_values():
    conv, x, delta, _ = _conv_problem(bias=True)
    st = conv_kfac(x, delta, conv, damping=0.1)
    d = 3 * 3 * 3 + 1
    assert st.A.shape == (d, d) and st.G.shape == (4, 4) and st.grad.shape == (4, d)
    assert st.A.dtype == torch.float64
    torch.testing.assert_close(st.A, st.A.T)
    torch.testing.assert_close(st.G, st.G.T)
    assert float(torch.linalg.eigvalsh(st.A).min()) > -1e-10 and float(torch.linalg.eigvalsh(st.G).min()) > -1e-10
    # A: mean over samples and positions of the unfolded patches (bias row of ones); G: position sums of δ
    P = conv_patches(x, conv)  # (B, d, T)
    rows = P.transpose(1, 2).reshape(-1, d)
    torch.testing.assert_close(st.A, rows.T @ rows / rows.shape[0])
    assert float(st.A[-1, -1]) == pytest.approx(1.0)
    s = delta.sum((2, 3))
    torch.testing.assert_close(st.G, s.T @ s / x.shape[0])
    # η = tr(∇Wᵀ A⁻¹ ∇W G⁻¹) with damped factors
    g = st.grad
    eta = torch.trace(g.T @ torch.linalg.solve(_damped(st.G, 0.1), g) @ torch.linalg.inv(_damped(st.A, 0.1)))
    assert st.eta == pytest.approx(float(eta), rel=1e-8)
    assert st.eta >= 0


def test_conv_kfac_row_subsampling_keeps_A_valid():
    conv, x, delta, _ = _conv_problem(bias=False)
    full = conv_kfac(x, delta, conv)
    sub = conv_kfac(x, delta, conv, max_rows=40, generator=torch.Generator().manual_seed(0))
    assert sub.A.shape == full.A.shape
    torch.testing.assert_close(sub.A, sub.A.T)
    torch.testing.assert_close(sub.grad, full.grad)  # the gradient always uses every position
    torch.testing.assert_close(sub.G, full.G)
    assert float((sub.A - full.A).abs().max()) < float(full.A.abs().max())


def test_linear_layer_matches_curvature_collect_kfac():
    """For a linear layer (one position) the conv statistics reduce to SENN's linear K-FAC."""
    torch.manual_seed(0)
    model = GrowingMLP(3, 2, (4,)).double()
    X = torch.randn(32, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (32,))
    ref = collect_kfac(model, X, y, damping=0.1, fisher="empirical")
    layer = model.linears[0]
    h = layer(X)
    out = model.linears[1](model.activations[0](h))
    (delta,) = torch.autograd.grad(F.cross_entropy(out, y, reduction="sum"), h)
    st = conv_kfac(X, delta, layer, damping=0.1)
    torch.testing.assert_close(st.A, ref.layers[0].A)
    torch.testing.assert_close(st.G, ref.layers[0].G)
    torch.testing.assert_close(st.grad, ref.layers[0].grad)
    assert st.eta == pytest.approx(ref.layers[0].eta, rel=1e-8)


def test_new_columns_score_exact_equals_eta_increase_and_bounds():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 3, 3, padding=1, bias=False).double()
    x = torch.randn(64, 4, 5, 5, dtype=torch.float64)
    out = conv(x)
    (delta,) = torch.autograd.grad((out.tanh() * torch.randn_like(out)).sum(), out)
    st = conv_kfac(x, delta, conv, damping=1e-9)
    new = torch.arange(3 * 9, 4 * 9)  # input channel 3 is the "new" one
    old = torch.arange(0, 3 * 9)
    G_inv = DampedFactor(st.G, 1e-9)
    eta_full = st.eta
    eta_old = float((G_inv.solve(st.grad[:, old]) * DampedFactor(st.A[old][:, old], 1e-9).solve(st.grad[:, old].T).T).sum())
    exact = new_columns_score(st, new, 1e-9, cross=False, exact=True)
    lower = new_columns_score(st, new, 1e-9, cross=False)
    assert exact == pytest.approx(eta_full - eta_old, rel=1e-4)
    assert exact >= lower >= 0
    # with damping the ordering still holds
    st_d = conv_kfac(x, delta, conv, damping=0.1)
    assert new_columns_score(st_d, new, 0.1, cross=False, exact=True) >= new_columns_score(st_d, new, 0.1, cross=False) >= 0


def test_duplicate_features_score_nothing():
    """New input columns that copy an old channel add nothing the layer cannot already do."""
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 2, 3, padding=1, bias=False).double()
    x = torch.randn(48, 2, 5, 5, dtype=torch.float64)
    xx = torch.cat([x, x[:, :1] * 2.0], dim=1)  # channel 2 = 2 × channel 0
    out = conv(xx)
    (delta,) = torch.autograd.grad((out.sin() * torch.randn_like(out)).sum(), out)
    st = conv_kfac(xx, delta, conv, damping=1e-10)
    dup = new_columns_score(st, torch.arange(18, 27), 1e-10, cross=False)
    xr = torch.cat([x, torch.randn(48, 1, 5, 5, dtype=torch.float64)], dim=1)
    out = conv(xr)
    (delta,) = torch.autograd.grad((out.sin() * torch.randn_like(out)).sum(), out)
    fresh = new_columns_score(conv_kfac(xr, delta, conv, damping=1e-10), torch.arange(18, 27), 1e-10, cross=False)
    assert dup < 1e-6 * max(fresh, 1e-12) + 1e-9 and fresh > 1e-3


# --------------------------------------------------------------------------- whole-model statistics and candidates


def _digits(n_train=1000):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    idx = np.random.default_rng(0).permutation(len(X))
    tr, va = idx[:n_train], idx[n_train : n_train + 400]
    return X[tr], y[tr], X[va], y[va]


@pytest.fixture(scope="module")
def digits():
    return _digits()


@pytest.fixture(scope="module")
def trained_cnn(digits):
    Xtr, ytr, _, _ = digits
    torch.manual_seed(0)
    model = GrowingCNN((1, 8, 8), 10, (8, 8, 8), head_channels=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    X, y = torch.as_tensor(Xtr), torch.as_tensor(ytr)
    for _ in range(2):
        for i in range(0, len(X), 64):
            opt.zero_grad()
            F.cross_entropy(model(X[i : i + 64]), y[i : i + 64]).backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    return model, X[:256], y[:256]


@pytest.mark.parametrize("fisher", ["gauss_newton", "unit_gradient", "empirical"])
def test_collect_cnn_stats_covers_every_layer_and_leaves_model_alone(trained_cnn, fisher):
    model, X, y = trained_cnn
    state = copy.deepcopy(model.state_dict())
    trial = copy.deepcopy(model).train()
    st = collect_cnn_stats(trial, X, y, fisher=fisher)
    assert len(st.layers) == len(kfac_layers(model)) and len(st.bns) == len(norm_layers(model))
    assert st.eta == pytest.approx(sum(s.eta for s in st.layers + st.bns))
    assert st.eta > 0 and st.lam > 0 and math.isfinite(st.eta_cross)
    assert all(s.eta >= 0 for s in st.layers + st.bns)
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # gradient of the first conv equals autograd's (two halves, BN batch statistics per half)
    conv = model.blocks[0][0].conv
    grads = []
    for Xp, yp in zip(X.tensor_split(2), y.tensor_split(2)):
        m = copy.deepcopy(model).train()
        F.cross_entropy(m(Xp), yp).backward()
        grads.append(m.blocks[0][0].conv.weight.grad.reshape(conv.out_channels, -1).double())
    torch.testing.assert_close(st.layers[0].grads[0], grads[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(st.layers[0].grads[1], grads[1], rtol=1e-4, atol=1e-6)


def test_proposals_score_and_replay_the_scored_edit(trained_cnn):
    model, X, y = trained_cnn
    g = torch.Generator().manual_seed(0)
    widen = propose_widen(model, 1, 4, X, y, generator=g)
    layer = propose_layer(model, 2, X, y, generator=g)
    assert widen.kind == "channels" and widen.n == 4 and widen.block == 1
    assert layer.kind == "conv_layer" and layer.n == 1 and layer.block == 2
    for p in (widen, layer):
        assert math.isfinite(p.delta_eta)
        a, b = copy.deepcopy(model), copy.deepcopy(model)
        p.edit(a)
        p.edit(b)
        assert a.n_params() - model.n_params() == p.delta_params > 0
        for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(va, vb), k
    # without cross-fitting the scores are non-negative quadratic forms
    for p in (propose_widen(model, 0, 2, X, y, debias=False), propose_layer(model, 0, X, y, debias=False)):
        assert p.delta_eta >= 0


def test_unit_gradient_factor_is_the_empirical_one_over_the_output_gradient_norm(trained_cnn):
    # one sample: G_unit = s sᵀ / ‖∂ℓ/∂y‖² with s the position-summed δ, and ‖∂ℓ/∂y‖² = λ; so
    # λ·G_unit = G_empirical for every conv, head and output layer, and the same for each BN block
    model, X, y = trained_cnn
    for n in range(3):
        Xn, yn = X[n : n + 1], y[n : n + 1]
        unit = collect_cnn_stats(copy.deepcopy(model).train(), Xn, yn, fisher="unit_gradient", parts=1)
        emp = collect_cnn_stats(copy.deepcopy(model).train(), Xn, yn, fisher="empirical", parts=1)
        assert unit.lam == pytest.approx(emp.lam) and unit.lam > 0
        for u, e in zip(unit.layers, emp.layers):
            torch.testing.assert_close(u.G * unit.lam, e.G, rtol=1e-4, atol=1e-12)
        for u, e in zip(unit.bns, emp.bns):
            torch.testing.assert_close(u.F * unit.lam, e.F, rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("fisher", ["gauss_newton", "empirical"])
@pytest.mark.parametrize("debias", [True, False])
def test_new_layers_scored_in_one_pass_equal_a_pass_over_each_edited_network(trained_cnn, fisher, debias):
    model, X, y = trained_cnn
    weights = {b: kaiming_normal((8, 8, 3, 3), model.negative_slope, torch.Generator().manual_seed(b)) for b in range(3)}
    # no conv K-FAC in this pass, so the generator draws only the Gauss-Newton probes v, as in propose_layer
    shared = collect_cnn_stats(copy.deepcopy(model).train(), X, y, layers=[], bns=[], parts=2 if debias else 1,
                               fisher=fisher, generator=torch.Generator().manual_seed(5), new_layers=weights)
    for b in range(3):
        ref = propose_layer(model, b, X, y, debias=debias, fisher=fisher, generator=torch.Generator().manual_seed(b), row_seed=5)
        got = shared.new_layers[b]
        assert (got.eta_cross if debias else got.eta) == pytest.approx(ref.delta_eta, rel=1e-6, abs=1e-12)
    # the policy scores its layer candidates this way; each proposal's edit adds what it claims, exactly
    stats, proposals = SECNNPolicy().propose(model, X, y, torch.Generator().manual_seed(0))
    layers = [p for p in proposals if p.kind == "conv_layer"]
    assert [p.block for p in layers] == [0, 1, 2] and set(stats.new_layers) == {0, 1, 2}
    for p in layers:
        grown = copy.deepcopy(model).eval()
        p.edit(grown)
        assert grown.n_params() - model.n_params() == p.delta_params
        assert p.delta_eta == stats.new_layers[p.block].eta_cross
        torch.testing.assert_close(grown(X), copy.deepcopy(model).eval()(X), rtol=0, atol=1e-5)


# --------------------------------------------------------------------------- policy


def test_policy_grows_on_digits_and_records_every_event(digits):
    Xtr, ytr, Xva, yva = digits
    torch.manual_seed(0)
    model = GrowingCNN((1, 8, 8), 10)
    start = model.n_params()
    policy = SECNNPolicy(tau=1.005, min_gap=2)
    trainer = Trainer(model, policy, TrainConfig(max_epochs=8, seed=0, patience=None, restore_best=False, device="cpu"))
    trainer.fit(Xtr, ytr, Xva, yva)
    log = trainer.growth_log
    assert len(log) >= 1
    assert sum(r["grew"] for r in trainer.history) == len(log)
    prev = start
    for e in log:
        assert e.kind in ("conv_layer", "channels") and 0 <= e.where < 3
        assert e.params_before == prev and e.params_after > e.params_before
        prev = e.params_after
        assert e.max_abs_diff < 1e-4
        assert e.ratio > e.tau == 1.005 and e.eta > 0
        assert math.isnan(e.lam) and math.isnan(e.alpha)
        assert e.n == (4 if e.kind == "channels" else 1)
        json.dumps(e.to_dict())
    assert [list(b) for b in log[-1].hidden_after] == model.hidden
    assert model.n_params() == log[-1].params_after
    assert trainer.history[-1]["n_params"] == model.n_params()
    assert all(r["eta"] is not None for r in trainer.history)
    assert trainer.history[-1]["train_loss"] < trainer.history[0]["train_loss"] / 2
    assert trainer.history[-1]["val_acc"] > 0.85
    assert trainer.timings["growth"] < 10 * trainer.timings["train"] + 5


def test_policy_natural_rule_grows_and_records_lambda(digits):
    Xtr, ytr, Xva, yva = digits
    torch.manual_seed(1)
    model = GrowingCNN((1, 8, 8), 10, (8, 8))
    policy = make_policy("secnn", threshold_rule="natural", tau=0.005, min_gap=3, widen_step=2)
    trainer = Trainer(model, policy, TrainConfig(max_epochs=4, seed=1, patience=None, device="cpu"))
    trainer.fit(Xtr, ytr, Xva, yva)
    assert trainer.growth_log
    for e in trainer.growth_log:
        assert e.ratio > 0.005 and e.score / e.lam > policy.alpha and e.alpha == policy.alpha


def test_impossible_threshold_does_nothing(digits):
    Xtr, ytr, Xva, yva = digits
    torch.manual_seed(0)
    model = GrowingCNN((1, 8, 8), 10, (6, 6))
    spec = model.spec()
    policy = SECNNPolicy(tau=1e9, min_gap=0)
    trainer = Trainer(model, policy, TrainConfig(max_epochs=3, seed=0, device="cpu"))
    trainer.fit(Xtr, ytr, Xva, yva)
    assert trainer.growth_log == [] and trainer.model.spec() == spec
    assert policy.last_eta is not None and policy.last_eta > 0


def test_capacity_limits_are_respected(trained_cnn):
    model, X, y = trained_cnn
    full = GrowingCNN.from_spec({**model.spec(), "max_layers": 1, "max_channels": 8})
    full.load_state_dict(model.state_dict())
    _, props = SECNNPolicy().propose(full, X, y)
    assert props == []
    only_layers = GrowingCNN.from_spec({**model.spec(), "max_channels": 10})
    only_layers.load_state_dict(model.state_dict())
    _, props = SECNNPolicy(widen_step=4).propose(only_layers, X, y)
    assert {p.kind for p in props} == {"conv_layer"} and len(props) == 3
    _, props = SECNNPolicy(widen_step=2, grow_layers=False).propose(only_layers, X, y)
    assert {p.kind for p in props} == {"channels"} and len(props) == 3
    events = SECNNPolicy(tau=1.0000001).grow(full, GrowthContext(X, y, epoch=0, apply=lambda edit: pytest.fail("nothing may be applied")))
    assert events == []


def test_size_penalty_and_rules():
    from senn_automl.growth.secnn import Proposal

    p = Proposal("channels", 0, 4, 0.5, 1000, lambda m: [])
    score, ratio = SECNNPolicy().rate(p, 2.0)
    assert score == pytest.approx(2.5) and ratio == pytest.approx(1.25)
    score, ratio = SECNNPolicy(size_penalty=1e-7).rate(p, 2.0)
    assert score == pytest.approx(2.5 * math.exp(-0.1))
    score, ratio = SECNNPolicy(threshold_rule="natural").rate(p, 2.0)
    assert score == pytest.approx(0.5) and ratio == pytest.approx(0.25)
    assert SECNNPolicy().effective_tau == pytest.approx(1.01)
    assert SECNNPolicy(threshold_rule="natural").effective_tau == pytest.approx(0.01)
    assert SECNNPolicy(tau=3.0).effective_tau == 3.0


def test_make_policy_and_model_type_checks():
    policy = make_policy("secnn", tau=1.5, widen_step=2, size_penalty=1e-7)
    assert isinstance(policy, SECNNPolicy) and policy.tau == 1.5 and policy.expansion_interval == 1 and policy.min_gap == 5
    names = policy_params("secnn")
    for key in ("threshold_rule", "tau", "alpha", "size_penalty", "widen_step", "grow_layers", "grow_width", "damping",
                "fisher", "debias", "score_samples", "expansion_interval", "min_gap", "when"):
        assert key in names
    config = json.loads(json.dumps(policy.config()))
    assert config["policy"] == "secnn"
    rebuilt = make_policy(config.pop("policy"), **config)
    assert rebuilt.config() == policy.config()
    with pytest.raises(ValueError, match="invalid parameter"):
        make_policy("secnn", relative_to="total")
    cnn = GrowingCNN((1, 8, 8), 10)
    with pytest.raises(ValueError, match="cannot grow a GrowingCNN"):
        NaturalExpansionPolicy().check_model(cnn)
    with pytest.raises(ValueError, match="cannot grow a GrowingMLP"):
        SECNNPolicy().check_model(GrowingMLP(4, 2))
    SECNNPolicy().check_model(cnn)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(threshold_rule="max"), "threshold_rule"),
        (dict(tau=0.5), "tau"),
        (dict(tau=-1.0, threshold_rule="natural"), "tau"),
        (dict(tau=float("nan")), "tau"),
        (dict(alpha=1.5), "alpha"),
        (dict(size_penalty=-1e-7), "size_penalty"),
        (dict(widen_step=0), "widen_step"),
        (dict(widen_step=2.5), "widen_step"),
        (dict(grow_layers="yes"), "grow_layers"),
        (dict(grow_layers=False, grow_width=False), "grow_layers and grow_width"),
        (dict(damping=0.0), "damping"),
        (dict(fisher="true"), "fisher"),
        (dict(score_samples=2), "score_samples"),
        (dict(expansion_interval=0), "expansion_interval"),
        (dict(min_gap=-1), "min_gap"),
    ],
)
def test_validation_errors_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SECNNPolicy(**kwargs)


def test_checkpoint_round_trip_with_grown_cnn(digits, tmp_path):
    Xtr, ytr, Xva, yva = digits
    torch.manual_seed(0)
    model = GrowingCNN((1, 8, 8), 10, (6, 6))
    trainer = Trainer(model, SECNNPolicy(tau=1.0000001, min_gap=0), TrainConfig(max_epochs=2, seed=0, device="cpu", patience=None))
    trainer.fit(Xtr[:300], ytr[:300], Xva, yva)
    assert trainer.growth_log
    trainer.save_checkpoint(tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.model.spec() == trainer.model.spec() and isinstance(loaded.policy, SECNNPolicy)
    X = torch.as_tensor(Xva[:32])
    loaded.model.eval()
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.model(X), trainer.model(X))
    loaded.fit(Xtr[:300], ytr[:300], Xva, yva, epochs=1)
    assert loaded.epoch == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_policy_on_cuda(digits):
    Xtr, ytr, Xva, yva = digits
    torch.manual_seed(0)
    model = GrowingCNN((1, 8, 8), 10)
    trainer = Trainer(model, SECNNPolicy(tau=1.0000001, min_gap=0), TrainConfig(max_epochs=2, seed=0, device="cuda"))
    trainer.fit(Xtr, ytr, Xva, yva)
    assert trainer.growth_log and all(p.is_cuda for p in trainer.model.parameters())
