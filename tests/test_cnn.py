"""Tests for senn_automl.models.cnn: GrowingCNN shapes, exactly function-preserving edits, optimiser state, spec, limits."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import eval_outputs

from senn_automl.models.cnn import GrowingCNN
from senn_automl.models.mlp import ParamChange
from senn_automl.models.registry import model_from_spec
from senn_automl.training.surgery import apply_edit

SHAPES = [(1, 8, 8), (3, 32, 32)]


def _train_out(model, X):
    """Train-mode output (batch statistics) without touching the model's running statistics."""
    clone = copy.deepcopy(model).train()
    with torch.no_grad():
        return clone(X)


def _train_steps(model, X, y, n, lr=1e-2):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(n):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()


def _data(shape, n=16, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return X, y


def _check_consistent(model: GrowingCNN):
    """Every module's recorded sizes agree with its tensors."""
    c_in = model.in_shape[0]
    for block in model.blocks:
        for layer in block:
            conv, bn = layer.conv, layer.bn
            assert conv.weight.shape == (conv.out_channels, conv.in_channels, 3, 3)
            assert conv.in_channels == c_in
            assert bn.num_features == conv.out_channels
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                assert t.shape == (conv.out_channels,)
            c_in = conv.out_channels
    assert model.head_conv.weight_z.shape[1] == model.widths[-1]
    assert model.head_conv.weight_s.shape[1] == model.widths[0]


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_shapes_and_flat_input(shape):
    torch.manual_seed(0)
    model = GrowingCNN(shape, 10)
    X, _ = _data(shape, n=4)
    out = model(X)
    assert out.shape == (4, 10) and out.dtype == torch.float32
    assert torch.equal(eval_outputs(model, X), eval_outputs(model, X.reshape(4, -1)))
    assert model.hidden == [[16], [16], [16]]
    assert model.n_params() == sum(p.numel() for p in model.parameters())


def test_mnist_shape_forward():
    model = GrowingCNN((1, 28, 28), 10, (8, 8, 8))
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", range(4))
def test_random_edit_sequences_preserve_function(shape, seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = GrowingCNN(shape, 5, (rng.choice([4, 6]), rng.choice([4, 6]), 5), max_layers=3, max_channels=14, head_channels=8)
    X, y = _data(shape, n=12 if shape[0] == 1 else 6, seed=seed)
    _train_steps(model, X, y, 3)  # running statistics and BN affine parameters move away from their init
    for step in range(6):
        options = [("layer", b, 1) for b in range(model.n_blocks) if model.can_add_layer(b)]
        options += [("widen", b, k) for b in range(model.n_blocks) for k in (1, 3) if model.can_widen(b, k)]
        if not options:
            break
        kind, b, k = rng.choice(options)
        before_eval, before_train = eval_outputs(model, X), _train_out(model, X)
        hidden, n_before = model.hidden, model.n_params()
        changes = model.add_conv_layer(b, generator=g) if kind == "layer" else model.widen_block(b, k, g)
        assert all(isinstance(c, ParamChange) for c in changes)
        assert float((eval_outputs(model, X) - before_eval).abs().max()) < 1e-5, (seed, step, kind, b)
        assert float((_train_out(model, X) - before_train).abs().max()) < 1e-5, (seed, step, kind, b)
        _check_consistent(model)
        if kind == "layer":
            assert model.hidden[b] == hidden[b] + [hidden[b][0]]
            assert all(c.old is None for c in changes)
        else:
            assert model.hidden[b] == [w + k for w in hidden[b]]
            assert all(c.old is not None for c in changes)
        assert model.n_params() > n_before
        new_ids = {id(p) for p in model.parameters()}
        assert all(id(c.new) in new_ids for c in changes)
        _train_steps(model, X, y, 2)  # new parameters move: later edits start from a non-trivial state


def test_widening_the_last_block_inserts_head_columns_before_the_skip():
    """The head reads cat([last block, skip]): the last block's new columns go before the skip's."""
    torch.manual_seed(1)
    model = GrowingCNN((1, 8, 8), 3, (4, 4), max_channels=16, head_channels=6)
    X, y = _data((1, 8, 8), n=8, classes=3)
    _train_steps(model, X, y, 2)
    w_before = model.head_conv.weight.detach().clone()  # (6, 4 + 4, 1, 1)
    model.widen_block(1, 2)
    w = model.head_conv.weight.detach()
    assert w.shape == (6, 10, 1, 1)
    assert torch.equal(w[:, :4], w_before[:, :4]) and torch.equal(w[:, 6:], w_before[:, 4:])
    assert torch.all(w[:, 4:6] == 0)
    model.widen_block(0, 3)
    w = model.head_conv.weight.detach()
    assert w.shape == (6, 13, 1, 1) and torch.all(w[:, 10:] == 0)
    assert torch.equal(w[:, 6:10], w_before[:, 4:])


def test_new_residual_layer_gamma_gets_gradient():
    torch.manual_seed(0)
    model = GrowingCNN((1, 8, 8), 3, (4, 4))
    X, y = _data((1, 8, 8), n=8, classes=3)
    model.add_conv_layer(0)
    layer = model.blocks[0][-1]
    assert torch.all(layer.bn.weight == 0)
    F.cross_entropy(model(X), y).backward()
    assert float(layer.bn.weight.grad.abs().sum()) > 0
    assert float(layer.conv.weight.grad.abs().sum()) == 0  # gated by γ = 0 until γ moves


def test_add_conv_layer_uses_given_weight():
    model = GrowingCNN((1, 8, 8), 3, (4, 4))
    w = torch.randn(4, 4, 3, 3)
    model.add_conv_layer(1, w)
    assert torch.equal(model.blocks[1][-1].conv.weight.detach(), w)
    with pytest.raises(ValueError, match=r"expected \(4, 4, 3, 3\)"):
        model.add_conv_layer(1, torch.randn(4, 5, 3, 3))


def test_optimizer_state_carried_into_slices_and_training_continues():
    torch.manual_seed(0)
    X, y = _data((1, 8, 8), n=64, classes=4, seed=3)
    model = GrowingCNN((1, 8, 8), 4, (6, 6, 6), max_channels=12)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    saved = {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}
    loss_before = float(F.cross_entropy(eval_outputs(model, X), y))

    changes, diff = apply_edit(model, lambda m: m.widen_block(0, 4), probe=X, optimizer=opt)
    assert diff < 1e-5
    changes2, _ = apply_edit(model, lambda m: m.add_conv_layer(1), probe=X, optimizer=opt)
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model.parameters()}
    for c in changes:
        st = opt.state[c.new]
        for key in ("exp_avg", "exp_avg_sq"):
            old = saved[id(c.old)][key]
            assert torch.equal(st[key][c.index], old)
            new = torch.ones_like(st[key], dtype=torch.bool)
            new[c.index] = False
            # new entries: zero first moment, the old entries' mean second moment
            fill = float(old.mean()) if key == "exp_avg_sq" else 0.0
            assert new.any() and torch.all(st[key][new] == fill)
    old_v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in model.parameters()
                       if p in opt.state and not any(p is c.new for c in changes2)])
    for c in changes2:  # brand-new parameters: the others' step, zero first moment, mean second moment
        st = opt.state[c.new]
        assert float(st["step"]) == 5.0 and not st["exp_avg"].any()
        torch.testing.assert_close(st["exp_avg_sq"], torch.full_like(c.new, float(old_v.mean())))
    kept = [p for p in model.parameters() if id(p) in saved]
    assert kept and all(torch.equal(opt.state[p]["exp_avg"], saved[id(p)]["exp_avg"]) for p in kept)

    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < min(losses[0], loss_before)
    assert float(model.blocks[1][-1].bn.weight.detach().abs().sum()) > 0  # the new layer trains


@pytest.mark.parametrize("shape", SHAPES)
def test_spec_round_trip(shape):
    torch.manual_seed(0)
    model = GrowingCNN(shape, 5, (4, 6, 5), max_layers=4, max_channels=20, head_channels=7, negative_slope=0.05)
    X, y = _data(shape, n=8)
    _train_steps(model, X, y, 2)
    model.widen_block(0, 2)
    model.add_conv_layer(1)
    model.widen_block(1, 3)
    model.add_conv_layer(2)
    _train_steps(model, X, y, 2)
    spec = json.loads(json.dumps(model.spec()))
    assert spec["type"] == "GrowingCNN" and spec["channels"] == [[6], [9, 9], [5, 5]]
    json.dumps(model.hidden)
    for rebuilt in (GrowingCNN.from_spec(spec), model_from_spec(spec)):
        assert isinstance(rebuilt, GrowingCNN) and rebuilt.spec() == model.spec()
        rebuilt.load_state_dict(model.state_dict())
        assert torch.equal(eval_outputs(rebuilt, X), eval_outputs(model, X))
        assert torch.equal(_train_out(rebuilt, X), _train_out(model, X))
        assert rebuilt.n_params() == model.n_params()
    with pytest.raises(ValueError, match="not 'GrowingCNN'"):
        GrowingCNN.from_spec({**spec, "type": "GrowingMLP"})


def test_from_spec_leaves_global_rng_alone():
    spec = GrowingCNN((1, 8, 8), 3).spec()
    torch.manual_seed(5)
    a = torch.rand(1)
    torch.manual_seed(5)
    GrowingCNN.from_spec(spec)
    assert torch.equal(torch.rand(1), a)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_shape=(8, 8)), "in_shape"),
        (dict(in_shape=(1, 0, 8)), "in_shape"),
        (dict(in_shape=(1, 3, 3)), "too small"),
        (dict(channels=(16,)), "at least 2 blocks"),
        (dict(channels=(16, [16, 8])), "equal widths"),
        (dict(channels=(16, 0)), "positive width"),
        (dict(channels=(16, [16] * 4), max_layers=3), "max_layers=3"),
        (dict(channels=(16, 32), max_channels=24), "max_channels=24"),
        (dict(n_classes=0), "n_classes"),
        (dict(head_channels=0), "head_channels"),
    ],
)
def test_constructor_errors(kwargs, match):
    args = dict(in_shape=(1, 8, 8), n_classes=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        GrowingCNN(args.pop("in_shape"), args.pop("n_classes"), **args)


def test_capacity_limits():
    model = GrowingCNN((1, 8, 8), 3, (4, 4), max_layers=2, max_channels=6)
    assert model.can_add_layer(0)
    model.add_conv_layer(0)
    assert not model.can_add_layer(0) and model.can_add_layer(1)
    with pytest.raises(ValueError, match="max_layers=2"):
        model.add_conv_layer(0)
    assert model.can_widen(1, 2) and not model.can_widen(1, 3) and not model.can_widen(1, 0)
    with pytest.raises(ValueError, match="max_channels=6"):
        model.widen_block(1, 3)
    with pytest.raises(ValueError, match="block=5"):
        model.widen_block(5, 1)
    with pytest.raises(ValueError, match="k=0"):
        model.widen_block(0, 0)
    assert not model.can_add_layer(7) and not model.can_widen(-1, 1)
    with pytest.raises(ValueError, match="does not match"):
        model(torch.randn(2, 3, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_edits_on_cuda():
    torch.manual_seed(0)
    model = GrowingCNN((3, 32, 32), 10).cuda()
    X, y = _data((3, 32, 32), n=8)
    X, y = X.cuda(), y.cuda()
    _train_steps(model, X, y, 2)
    g = torch.Generator(device="cuda").manual_seed(0)
    for edit in (lambda m: m.widen_block(0, 4, g), lambda m: m.add_conv_layer(2, generator=g), lambda m: m.widen_block(2, 4)):
        before = eval_outputs(model, X)
        edit(model)
        assert all(p.is_cuda for p in model.parameters()) and all(b.is_cuda for b in model.buffers())
        assert float((eval_outputs(model, X) - before).abs().max()) < 1e-5
