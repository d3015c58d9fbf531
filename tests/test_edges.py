"""Tests for senn_automl.growth.edges: edge metrics, function-preserving edge expansion, pruning, the edges policy."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from senn_automl.growth import GrowthContext
from senn_automl.growth.base import make_policy
from senn_automl.growth.edges import EdgeExpansionPolicy
from senn_automl.models.edge_mlp import EdgeMLP
from senn_automl.models.mlp import GrowingMLP, ParamChange
from senn_automl.models.registry import model_from_spec
from senn_automl.scores.edge_metrics import METRICS, edge_metrics, layer_edge_metrics, normalise_metric
from senn_automl.training.surgery import apply_edit


def _out(model, X):
    model.eval()
    with torch.no_grad():
        return model(X)


def _train(model, opt, X, y, steps):
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()


def _apply_fn(model, opt, probe):
    def apply(edit, check=True):
        return apply_edit(model, edit, probe=probe, optimizer=opt, tolerance=1e-4 if check else math.inf)

    return apply


def _grown_model(seed=0, in_f=6, out_f=3, hidden=(), events=3, k=4):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = EdgeMLP(in_f, out_f, hidden)
    for _ in range(events):
        lin = model.layers[-1]
        live = torch.nonzero(lin.weight_mask > 0)
        pick = live[torch.randperm(len(live), generator=g)[:k]]
        model.expand_edges(-1, pick[:, 0], pick[:, 1])
    return model


# --------------------------------------------------------------------------- expansion


@pytest.mark.parametrize("seed", range(10))
def test_random_expansion_sequences_preserve_function(seed):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    in_f, out_f = rng.randint(2, 8), rng.randint(2, 5)
    hidden = [(), (rng.randint(2, 5),)][seed % 2]
    model = EdgeMLP(in_f, out_f, hidden)
    X = 3 * torch.randn(128, in_f, generator=g)  # signed inputs: ReLU vertices would fail here
    y = torch.randint(0, out_f, (128,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    used_new_vertex = False
    for step in range(6):
        _train(model, opt, X, y, 3)  # move weights and activations away from their initial values
        layer = rng.randrange(len(model.layers))
        lin = model.layers[layer]
        live = torch.nonzero(lin.weight_mask > 0)
        new_cols = live[live[:, 1] >= lin.in_features]
        k = rng.randint(1, min(8, len(live)))
        pick = live[torch.randperm(len(live), generator=g)[:k]]
        if len(new_cols) and rng.random() < 0.7:  # select edges leaving vertices added earlier
            pick = torch.cat([new_cols[torch.randperm(len(new_cols), generator=g)[:2]], pick]).unique(dim=0)
            used_new_vertex = True
        before, n_before = _out(model, X), model.n_params()
        changes, diff = apply_edit(
            model, lambda m, layer=layer, pick=pick: m.expand_edges(layer, pick[:, 0], pick[:, 1]), probe=X, optimizer=opt
        )
        after = _out(model, X)
        assert float((after - before).abs().max()) < 1e-5, (seed, step)
        assert diff < 1e-5
        assert all(isinstance(c, ParamChange) for c in changes)
        assert changes[0].old is not None and all(c.old is None for c in changes[1:])
        n, p = len(pick), len(pick[:, 1].unique())
        assert len(lin.blocks[-1].parents) == p and lin.blocks[-1].n == n
        # new params: n*p in-edges + out*n W entries + 3n activation parameters - n replaced edges
        assert model.n_params() - n_before == n * p + lin.out_features * n + 3 * n - n
    if seed % 2 == 0:
        assert used_new_vertex


def test_expansion_structure_and_zero_init():
    model = EdgeMLP(4, 3)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.arange(12.0).reshape(3, 4) - 5)
    rows, cols = torch.tensor([2, 0, 1]), torch.tensor([1, 1, 3])
    model.expand_edges(0, rows, cols)
    lin, block = model.layers[0], model.layers[0].blocks[0]
    assert block.parents.tolist() == [1, 3]
    assert block.w_in.tolist() == [[1, 0], [1, 0], [0, 1]]  # primary 1, extras exactly 0
    W, M = lin.weight, lin.weight_mask
    assert W.shape == (3, 7)
    for i, (c, p) in enumerate(zip(rows.tolist(), cols.tolist())):
        assert M[c, p] == 0 and W[c, p] == 0  # replaced edge is gone
        assert W[c, 4 + i] == float(c * 4 + p - 5)  # its weight moved to the vertex
        others = [r for r in range(3) if r != c]
        assert W[others, 4 + i].abs().sum() == 0  # extra out-edges start at exactly zero
    assert model.hidden == [[3]]
    assert torch.equal(block.act.v, torch.zeros(3)) and torch.equal(block.act.l, torch.ones(3))


def test_expansion_scales_to_thousands_of_edges():
    torch.manual_seed(0)
    model = EdgeMLP(784, 10)
    X = torch.rand(64, 784)
    before = _out(model, X)
    idx = torch.randperm(7840)[:3000]
    model.expand_edges(0, idx // 784, idx % 784)
    live = torch.nonzero(model.layers[0].weight_mask > 0)
    idx2 = torch.randperm(len(live))[:2000]
    model.expand_edges(0, live[idx2, 0], live[idx2, 1])
    assert float((_out(model, X) - before).abs().max()) < 1e-5
    assert [len(h) for h in model.hidden] == [2] and model.hidden[0] == [3000, 2000]


def test_parameters_and_state_dict_include_every_new_edge():
    model = _grown_model(events=3)
    params = {id(p) for p in model.parameters()}
    keys = set(model.state_dict())
    for k, block in enumerate(model.layers[0].blocks):
        for name, p in (("w_in", block.w_in), ("act.v", block.act.v), ("act.c", block.act.c), ("act.l", block.act.l)):
            assert id(p) in params and p.requires_grad
            assert f"layers.0.blocks.{k}.{name}" in keys
        for buf in ("parents", "primary_pos", "targets", "in_mask", "alive"):
            assert f"layers.0.blocks.{k}.{buf}" in keys
    assert model.state_dict()["layers.0.weight"].shape == model.layers[0].weight.shape
    # every new edge gets a gradient (zero-initialised extras included)
    X, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    F.cross_entropy(model(X), y).backward()
    for block in model.layers[0].blocks:
        assert (block.w_in.grad != 0).float().mean() > 0.5


def test_spec_round_trip_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = EdgeMLP(5, 3, (4,))
    X = 2 * torch.randn(16, 5)
    for layer in (0, 1, 1, 0):
        lin = model.layers[layer]
        live = torch.nonzero(lin.weight_mask > 0)
        pick = live[torch.randperm(len(live))[:3]]
        model.expand_edges(layer, pick[:, 0], pick[:, 1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, X, torch.randint(0, 3, (16,)), 5)
    lin = model.layers[1]  # prune something so masks and dead vertices must round-trip too
    lin.remove([torch.rand(t.shape) < 0.3 for t, _ in lin.edge_tensors()])
    spec = json.loads(json.dumps(model.spec()))
    rebuilt = model_from_spec(spec)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(_out(rebuilt, X), _out(model, X))
    assert rebuilt.n_params() == model.n_params() and rebuilt.hidden == model.hidden
    torch.save({"state": model.state_dict(), "X": X, "out": _out(model, X)}, tmp_path / "m.pt")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code = textwrap.dedent(
        f"""
        import json, torch
        from senn_automl.models.registry import model_from_spec
        d = torch.load({str(tmp_path / 'm.pt')!r}, weights_only=True)
        m = model_from_spec(json.load(open({str(tmp_path / 'spec.json')!r})))
        m.load_state_dict(d["state"]); m.eval()
        with torch.no_grad():
            assert torch.equal(m(d["X"]), d["out"])
        print("ok", m.n_params())
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["ok", str(model.n_params())]


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("metric", METRICS)
def test_metrics_match_direct_computation(metric):
    g = torch.Generator().manual_seed(1)
    model = EdgeMLP(3, 2)
    X, y = torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g)
    W, b = model.layers[0].weight.detach(), model.layers[0].bias.detach()
    grads = []
    for i in range(0, 10, 4):  # batches of 4, 4, 2
        Xb, yb = X[i : i + 4], y[i : i + 4]
        r = torch.softmax(Xb @ W.T + b, 1) - F.one_hot(yb, 2)
        grads.append((r.T @ Xb / len(Xb)).abs())  # |∂(mean CE)/∂W| of the batch
    G = torch.stack(grads)
    expected = {
        "abs_grad": G.mean(0),
        "grad_variance": G.var(0, correction=0),
        "weight_sq": W**2,
        "weight_abs": W.abs(),
    }[metric]
    raw = edge_metrics(model, X, y, metric, batch_size=4, normalise=False)
    torch.testing.assert_close(raw, expected, rtol=1e-5, atol=1e-7)
    norm = edge_metrics(model, X, y, metric, batch_size=4)
    torch.testing.assert_close(norm, (expected - expected.min()) / (expected.max() - expected.min()), rtol=1e-5, atol=1e-6)
    assert float(norm.min()) == 0.0 and float(norm.max()) == 1.0


def test_metrics_cover_blocks_and_respect_masks():
    model = _grown_model(events=2)
    X, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
    ms = layer_edge_metrics(model, X, y, "abs_grad", batch_size=16)
    tensors = model.layers[0].edge_tensors()
    assert [m.shape for m in ms] == [p.shape for p, _ in tensors]
    for m, (_, mask) in zip(ms, tensors):
        assert float(m.min()) >= 0 and float(m.max()) <= 1
        assert bool((m[mask == 0] == 0).all())
    assert normalise_metric(torch.full((3, 4), 2.0), torch.ones(3, 4)).abs().sum() == 0  # constant -> zeros
    with pytest.raises(ValueError, match="metric='fisher' is invalid: use one of: 'abs_grad', 'grad_variance', 'weight_sq', 'weight_abs'"):
        edge_metrics(model, X, y, "fisher")


# --------------------------------------------------------------------------- pruning


def _pruning_setup(prune_existing=False):
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    X = 2 * torch.randn(96, 8, generator=g)
    y = (X[:, 0] * X[:, 1] > 0).long() + (X[:, 2] > 0).long()
    model = EdgeMLP(8, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    apply = _apply_fn(model, opt, X[:32])
    policy = EdgeExpansionPolicy(when="interval", expansion_interval=1, min_gap=0, max_edges=12, edge_threshold=0.1,
                                 prune_after=2, prune_threshold=0.3, prune_existing=prune_existing, metric_batch_size=32)
    _train(model, opt, X, y, 10)
    events = policy.grow(model, GrowthContext(X, y, epoch=0, apply=apply))
    assert len(events) == 1 and events[0].kind == "edges"
    _train(model, opt, X, y, 10)
    return model, opt, apply, policy, X, y


def test_pruning_removes_low_metric_extras_and_keeps_survivor_state():
    model, opt, apply, policy, X, y = _pruning_setup()
    lin, block = model.layers[0], model.layers[0].blocks[0]
    off = lin.offset(0)
    assert policy.prune(model, GrowthContext(X, y, epoch=1, apply=apply)) == []  # not due yet
    metrics = layer_edge_metrics(model, X, y, policy.metric, batch_size=policy.metric_batch_size)
    old_W = lin.weight.detach().clone()
    masks_before = [m.clone() for _, m in lin.edge_tensors()]
    state_before = {p: {k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in model.parameters()}
    n_before = model.n_params()
    events = policy.prune(model, GrowthContext(X, y, epoch=2, apply=apply))
    assert len(events) == 1
    ev = events[0]
    assert ev.kind == "prune" and ev.n > 0 and ev.params_before == n_before and ev.params_after == model.n_params()
    assert n_before - model.n_params() >= ev.n
    removed = [(mb > 0) & (m == 0) for mb, (_, m) in zip(masks_before, lin.edge_tensors())]
    assert sum(int(r.sum()) for r in removed) == ev.n
    # only the event's zero-initialised extras, and only those at or below the threshold
    assert not removed[0][:, :off].any()
    assert not removed[0][block.targets, off + torch.arange(block.n)].any()
    assert not removed[1][torch.arange(block.n), block.primary_pos].any()
    for r, m in zip(removed, metrics):
        assert bool((m[r] <= policy.prune_threshold).all())
    extras_kept = (lin.weight_mask[:, off:] > 0) & (metrics[0][:, off:] > policy.prune_threshold)
    assert extras_kept.any() or not (metrics[0][:, off:] > policy.prune_threshold).any()
    # parameters predating the event are untouched; survivors keep their optimiser state
    assert torch.equal(lin.weight.detach()[:, :off], old_W[:, :off])
    for p in model.parameters():
        assert p in opt.state
        for k, v in state_before[p].items():
            assert torch.equal(opt.state[p][k], v), k
    assert len(policy._pending) == 0
    # removed entries stay removed while training goes on
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        for r, (p, _) in zip(removed, lin.edge_tensors()):
            assert bool((p.grad[r] == 0).all())
        opt.step()
    for r, (p, m) in zip(removed, lin.edge_tensors()):
        assert bool(((p * m)[r] == 0).all()) and bool((m[r] == 0).all())
    policy.prune(model, GrowthContext(X, y, epoch=5, apply=apply))  # every epoch: stored values of masked entries reset to 0
    for r, (p, _) in zip(removed, lin.edge_tensors()):
        assert bool((p[r] == 0).all())


def test_prune_existing_may_touch_older_edges_and_dead_vertices_go():
    model, _, apply, policy, X, y = _pruning_setup(prune_existing=True)
    lin = model.layers[0]
    off = lin.offset(0)
    mask0 = lin.weight_mask[:, :off].clone()
    events = policy.prune(model, GrowthContext(X, y, epoch=2, apply=apply))
    assert events and bool((lin.weight_mask[:, :off] < mask0).any())
    # a vertex whose outgoing edges are all removed is removed with its in-edges and activation
    block = lin.blocks[0]
    n_before, alive_before = model.n_params(), int(block.alive.sum())
    i = int(torch.nonzero(block.alive)[0])
    live_out = int(lin.weight_mask[:, off + i].sum())
    live_in = int(block.in_mask[i].sum())
    remove = [torch.zeros(p.shape, dtype=torch.bool) for p, _ in lin.edge_tensors()]
    remove[0][:, off + i] = True
    model.remove_edges(0, remove)
    assert not block.alive[i] and block.in_mask[i].sum() == 0
    assert int(block.alive.sum()) == alive_before - 1 and model.hidden == [[alive_before - 1]]
    assert model.n_params() == n_before - live_out - live_in - 3


def test_no_selected_edges_does_nothing():
    model = EdgeMLP(5, 3)
    X, y = torch.randn(20, 5), torch.randint(0, 3, (20,))
    with torch.no_grad():
        model.layers[0].weight.fill_(0.5)  # constant metric -> normalised zeros
    opt = torch.optim.Adam(model.parameters())
    apply = _apply_fn(model, opt, X)
    spec, n = model.spec(), model.n_params()
    for policy in (
        EdgeExpansionPolicy(metric="weight_abs", edge_threshold=0.1),  # constant metric
        EdgeExpansionPolicy(metric="abs_grad", edge_threshold=1.0),  # nothing exceeds the maximum
    ):
        assert policy.grow(model, GrowthContext(X, y, epoch=0, apply=apply)) == []
        assert policy.step(model, GrowthContext(X, y, epoch=0, history=[], apply=apply)) == []
        assert model.spec() == spec and model.n_params() == n and policy._pending == []


def test_selection_is_top_k_above_threshold():
    torch.manual_seed(0)
    model = EdgeMLP(10, 4)
    X, y = torch.randn(50, 10), torch.randint(0, 4, (50,))
    policy = EdgeExpansionPolicy(metric="weight_abs", edge_threshold=0.3, max_edges=5)
    rows, cols, scores = policy.select(model, X, y)
    S = edge_metrics(model, X, y, "weight_abs")
    assert len(rows) == min(5, int((S > 0.3).sum()))
    assert bool((scores[:-1] >= scores[1:]).all()) and bool((scores > 0.3).all())
    assert torch.equal(S[rows, cols], scores)
    assert float(scores[-1]) >= float(S.flatten().sort(descending=True).values[len(rows) - 1])


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(metric="hessian"), "metric='hessian' is invalid: use one of: 'abs_grad', 'grad_variance', 'weight_sq', 'weight_abs'"),
        (dict(edge_threshold=0.0), "edge_threshold"),
        (dict(edge_threshold=1.5), "edge_threshold"),
        (dict(edge_threshold=float("nan")), "edge_threshold"),
        (dict(max_edges=0), "max_edges"),
        (dict(prune_after=0), "pruning delay shorter than allowed"),
        (dict(prune_after=-3), "pruning delay shorter than allowed"),
        (dict(prune_threshold=1.0), "prune_threshold"),
        (dict(prune_threshold=-0.1), "prune_threshold"),
        (dict(prune_existing="yes"), "prune_existing"),
        (dict(layer=0.5), "layer"),
        (dict(metric_batch_size=0), "metric_batch_size"),
        (dict(max_events=0), "max_events"),
        (dict(when="sometimes"), "when"),
    ],
)
def test_bad_policy_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_policy("edges", **kwargs)


def test_bad_models_and_edits():
    policy = make_policy("edges")
    assert policy.when == "plateau" and policy.model_types == ("EdgeMLP",)
    with pytest.raises(ValueError, match="cannot grow a GrowingMLP"):
        policy.check_model(GrowingMLP(4, 3, (5,)))
    policy.check_model(EdgeMLP(4, 3))
    with pytest.raises(ValueError, match="invalid parameter"):
        make_policy("edges", threshold=0.5)
    model = EdgeMLP(4, 3)
    with pytest.raises(ValueError, match="layer=3 is out of range"):
        EdgeExpansionPolicy(layer=3).select(model, torch.randn(4, 4), torch.zeros(4, dtype=torch.long))
    model.expand_edges(0, torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="masked"):
        model.expand_edges(0, torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="same edge twice"):
        model.expand_edges(0, torch.tensor([1, 1]), torch.tensor([2, 2]))
    with pytest.raises(ValueError, match="out of range"):
        model.expand_edges(0, torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="not 'EdgeMLP'"):
        EdgeMLP.from_spec(GrowingMLP(4, 3).spec())


# --------------------------------------------------------------------------- policy with the trainer


def test_trainer_on_digits_grows_and_prunes(tmp_path):
    from senn_automl.data import load_dataset
    from senn_automl.training.trainer import TrainConfig, Trainer, load_checkpoint

    ds = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    policy = make_policy("edges", when="interval", expansion_interval=3, min_gap=0, max_edges=40, edge_threshold=0.2,
                         prune_after=2, prune_threshold=0.2)
    cfg = TrainConfig(max_epochs=10, batch_size=64, lr=3e-3, patience=None, restore_best=False, device="cpu", seed=0)
    tr = Trainer(EdgeMLP(64, 10), policy, cfg).fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
    kinds = [e.kind for e in tr.growth_log]
    assert "edges" in kinds and "prune" in kinds
    for e in tr.growth_log:
        assert e.where == 0 and e.n > 0
        if e.kind == "edges":
            assert e.params_after > e.params_before and e.max_abs_diff < 1e-4
            assert 0 < e.score <= 1 and e.tau == policy.edge_threshold and math.isnan(e.eta)
        else:
            assert e.params_after < e.params_before
        assert "edges" in e.describe() or "pruned" in e.describe()
    assert tr.history[-1]["n_params"] == tr.model.n_params()
    assert tr.history[-1]["hidden"] == tr.model.hidden
    assert tr.history[-1]["val_acc"] > 0.85
    json.dumps(tr.history)  # JSON-able records
    tr.save_checkpoint(tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck", device="cpu")
    X = torch.as_tensor(ds.X_val)
    assert torch.equal(_out(back.model, X), _out(tr.model, X))
    assert back.policy.state_dict() == tr.policy.state_dict()
    back.fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val, epochs=2)  # training continues after loading
