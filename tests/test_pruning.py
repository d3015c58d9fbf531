"""Pruning for the natural policy: η-share, OBS saliency, K-FAC compensation, neuron removal."""


import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from senn_automl.growth.base import make_policy
from senn_automl.growth.natural import NaturalExpansionPolicy
from senn_automl.models.mlp import GrowingMLP
from senn_automl.scores.curvature import collect_kfac, input_saliency, prune_compensation
from senn_automl.training.surgery import apply_edit
from senn_automl.training.trainer import TrainConfig, Trainer


def _digits():
    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)


def _trained(hidden=(12,), steps=60, seed=0):
    torch.manual_seed(seed)
    X, y = _digits()
    model = GrowingMLP(64, 10, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return model, opt, X, y


def test_eta_share_is_the_score_lost_without_the_input():
    model, _, X, y = _trained()
    damping = 0.1
    st = collect_kfac(model, X[:400], y[:400], damping=damping).layers[1]
    share, obs = input_saliency(st, model.linears[1].weight, damping)
    k = st.A.shape[0]
    shift = damping * st.A.diagonal().mean() + 1e-12
    A_hat = st.A + shift * torch.eye(k, dtype=st.A.dtype)
    full = float((st.grad @ torch.linalg.inv(A_hat) * st.G_inv.solve(st.grad)).sum())
    assert full == pytest.approx(st.eta, rel=1e-6)
    for i in (0, 5, 11):
        S = [j for j in range(k) if j != i]
        g = st.grad[:, S]
        without = float((g @ torch.linalg.inv(A_hat[S][:, S]) * st.G_inv.solve(g)).sum())
        assert float(share[i]) == pytest.approx(full - without, rel=1e-5, abs=1e-12)
    assert (share >= -1e-12).all() and (obs >= 0).all() and share.shape == obs.shape == (12,)


def test_compensation_is_the_least_squares_optimum_and_beats_plain_removal():
    model, _, X, y = _trained()
    st = collect_kfac(model, X, y, damping=1e-8).layers[1]
    lin = model.linears[1]
    drop = [2, 7]
    delta = prune_compensation(st, lin.weight, lin.bias, drop, damping=1e-8)
    h = model.layer_inputs(X)[1].detach()
    keep = [i for i in range(12) if i not in drop]
    target = h @ lin.weight.detach().T + lin.bias.detach()
    plain = h[:, keep] @ lin.weight.detach()[:, keep].T + lin.bias.detach()
    compensated = plain + h[:, keep] @ delta[:, :-1].float().T + delta[:, -1].float()
    a = torch.cat([h[:, keep], torch.ones(len(h), 1)], 1).double()
    lstsq = torch.linalg.lstsq(a, (target - plain).double()).solution.T  # (d_out, |S|+1)
    assert torch.allclose(delta, lstsq, atol=1e-4 * float(lstsq.abs().max()))
    assert (compensated - target).pow(2).mean() < 0.5 * (plain - target).pow(2).mean()


def test_remove_neurons_keeps_survivors_optimizer_state_and_trains():
    model, opt, X, y = _trained()
    old_w = model.linears[0].weight
    m_old = opt.state[old_w]["exp_avg"].clone()
    keep = [i for i in range(12) if i not in (1, 4)]
    changes, _ = apply_edit(model, lambda m: m.remove_neurons(0, [4, 1]), probe=X[:32], optimizer=opt, tolerance=float("inf"))
    assert model.hidden == [10] and model.linears[1].weight.shape == (10, 10)
    assert torch.equal(opt.state[model.linears[0].weight]["exp_avg"], m_old[keep])
    assert sum(p.numel() for p in model.parameters()) == model.n_params()
    loss0 = float(F.cross_entropy(model(X), y).detach())
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    assert float(F.cross_entropy(model(X), y).detach()) < loss0
    rebuilt = GrowingMLP.from_spec(model.spec())
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt(X), model(X))


@pytest.mark.parametrize("bad", [[], [0, 99], list(range(12))])
def test_remove_neurons_bad_indices(bad):
    model, _, _, _ = _trained(steps=0)
    if not bad:
        model.remove_neurons(0, bad)  # removing nothing is allowed
        assert model.hidden == [12]
        return
    with pytest.raises(ValueError, match="out of range|empty"):
        model.remove_neurons(0, bad)


@pytest.mark.parametrize("kwargs, name", [({"prune_after": 0}, "prune_after"), ({"prune_after": 1.5}, "prune_after"),
                                          ({"prune_threshold": 1.0}, "prune_threshold"), ({"prune_threshold": -0.1}, "prune_threshold")])
def test_bad_pruning_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_policy("natural", **kwargs)


def test_natural_policy_prunes_its_new_neurons_after_the_delay():
    X, y = _digits()
    torch.manual_seed(0)
    model = GrowingMLP(64, 10, (4,), max_width=32, max_depth=1)
    policy = NaturalExpansionPolicy(expansion_interval=3, prune_after=2, prune_threshold=0.9, n_candidates=20,
                                    candidate_steps=10, grow_depth=False, max_additions=4)
    t = Trainer(model, policy, TrainConfig(max_epochs=8, seed=0, patience=None, restore_best=False))
    t.fit(X[:1200], y[:1200], X[1200:], y[1200:])
    grown = [e for e in t.growth_log if e.kind == "neuron"]
    pruned = [e for e in t.growth_log if e.kind == "prune"]
    assert grown and pruned
    first = grown[0].epoch
    assert pruned[0].epoch == first + 2  # reviewed exactly prune_after epochs later
    assert pruned[0].params_after < pruned[0].params_before and pruned[0].n >= 1
    assert 4 <= t.model.hidden[0] < 4 + len(grown)  # never prunes neurons that predate the event
    assert t.history[-1]["n_params"] == t.model.n_params()
