"""Tests for senn_automl.models.mlp: function-preserving growth edits, capacity, spec round trip."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import eval_outputs

from senn_automl.models.mlp import IDENTITY, GrowingMLP, ParamChange, RationalActivation, rational
from senn_automl.training.surgery import FunctionNotPreservedError, apply_edit

MSG_NOT_PRESERVED = r"growth edit changed the network outputs by .* on the probe batch"


def _random_neuron_edit(model: GrowingMLP, rng: random.Random, g: torch.Generator):
    layers = [i for i in range(model.depth) if model.can_add_neurons(i, 1)]
    if not layers:
        return None
    layer = rng.choice(layers)
    room = model.max_width - model.hidden[layer]
    k = rng.randint(1, min(3, room))
    d_in = model.linears[layer].in_features
    weight = torch.randn(k, d_in, generator=g) * rng.choice([0.3, 1.0, 3.0])
    bias = torch.randn(k, generator=g)
    act = torch.randn(k, 3, generator=g)
    return ("neuron", layer, k), (lambda m: m.add_neurons(layer, weight, bias, act))


def _random_layer_edit(model: GrowingMLP, rng: random.Random, g: torch.Generator):
    positions = [p for p in range(model.depth + 1) if model.can_insert_layer(p)]
    if not positions:
        return None
    p = rng.choice(positions)
    d = model.linears[p].in_features
    B = torch.eye(d) + rng.choice([0.05, 0.2, 0.5]) * torch.randn(d, d, generator=g) / d**0.5
    s = 0.3 * torch.randn(d, generator=g)
    return ("layer", p, d), (lambda m: m.insert_layer(p, B, s))


@pytest.mark.parametrize("seed", range(24))
def test_random_growth_sequences_preserve_function(seed):
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    in_f, out_f = rng.randint(1, 6), rng.randint(1, 4)
    start = [(), (rng.randint(1, 4),), (rng.randint(1, 4), rng.randint(1, 4))][seed % 3]
    model = GrowingMLP(in_f, out_f, start, max_width=8, max_depth=4)
    X = 3 * torch.randn(64, in_f, generator=g)
    kinds = []
    for step in range(8):
        options = [e for e in (_random_neuron_edit(model, rng, g), _random_layer_edit(model, rng, g)) if e]
        if not options:
            break
        (kind, where, k), edit = rng.choice(options)
        before = eval_outputs(model, X)
        hidden_before, n_before = list(model.hidden), model.n_params()
        changes = edit(model)
        after = eval_outputs(model, X)
        assert torch.isfinite(after).all()
        tol = 1e-4 * max(1.0, float(before.abs().max()))
        assert float((after - before).abs().max()) <= tol, (seed, step, kind, where)
        assert all(isinstance(c, ParamChange) for c in changes)
        # structure changed as promised
        if kind == "neuron":
            assert model.hidden[where] == hidden_before[where] + k
            assert model.linears[where].out_features == model.hidden[where]
            assert model.linears[where + 1].in_features == model.hidden[where]
            assert model.linears[where + 1].weight.shape[1] == model.hidden[where]
            assert all(c.old is not None for c in changes)
            for c in changes:
                # the old values sit unchanged in the recorded slice of the new parameter
                assert torch.equal(c.new.detach()[c.index], c.old.detach())
        else:
            assert model.hidden == hidden_before[:where] + [k] + hidden_before[where:]
            assert all(c.old is None for c in changes)
            new_ids = {id(p) for p in model.parameters()}
            assert all(id(c.new) in new_ids for c in changes)
        assert model.n_params() > n_before
        assert model.depth <= model.max_depth and all(h <= model.max_width for h in model.hidden)
        kinds.append(kind)
    assert kinds, "no edit was possible"
    if start == ():
        assert kinds[0] == "layer"


def test_linear_model_grows_by_layer_then_neurons():
    model = GrowingMLP(3, 2, (), max_width=8, max_depth=3)
    assert not model.can_add_neurons(0)
    X = 3 * torch.randn(32, 3)
    before = eval_outputs(model, X)
    model.insert_layer(0, torch.eye(3) + 0.1 * torch.randn(3, 3), torch.zeros(3))
    model.add_neurons(0, torch.randn(2, 3), torch.randn(2), torch.randn(2, 3))
    model.insert_layer(1, torch.eye(5) + 0.1 * torch.randn(5, 5), 0.1 * torch.randn(5))
    assert model.hidden == [5, 5]
    assert float((eval_outputs(model, X) - before).abs().max()) <= 1e-4 * max(1.0, float(before.abs().max()))


def test_inserted_layer_is_identity_activated_and_conditioned():
    model = GrowingMLP(4, 3, (5,), max_width=8, max_depth=3)
    B = torch.eye(5)
    B[0] = B[1]  # singular: clipped singular values keep the inverse finite
    X = 3 * torch.randn(40, 4)
    before = eval_outputs(model, X)
    model.insert_layer(1, B, torch.zeros(5))
    assert float((eval_outputs(model, X) - before).abs().max()) <= 1e-4 * max(1.0, float(before.abs().max()))
    act = model.activations[1]
    assert torch.equal(act.v.detach(), torch.zeros(5)) and torch.equal(act.c.detach(), torch.zeros(5))
    assert torch.equal(act.l.detach(), torch.ones(5))
    S = torch.linalg.svdvals(model.linears[1].weight.detach().double())
    S_orig = torch.linalg.svdvals(B.double())
    assert float(S_orig.min()) < 1e-6  # B itself is singular
    # singular values are clipped at 1e-3 * mean of B's singular values
    assert float(S.min()) == pytest.approx(1e-3 * float(S_orig.mean()), rel=1e-4)
    assert torch.isfinite(model.linears[2].weight).all()


# --------------------------------------------------------------------------- capacity and validation


def test_capacity_limits_and_bad_shapes_raise():
    model = GrowingMLP(4, 3, (5,), max_width=6, max_depth=2)
    model.add_neurons(0, torch.randn(1, 4), torch.randn(1), torch.randn(1, 3))  # width 6 = max
    assert model.hidden == [6]
    assert not model.can_add_neurons(0)
    with pytest.raises(ValueError, match="max_width"):
        model.add_neurons(0, torch.randn(1, 4), torch.randn(1), torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"layer=1 is not a hidden layer \(depth 1\)"):
        model.add_neurons(1, torch.randn(1, 6), torch.randn(1), torch.randn(1, 3))  # not a hidden layer
    with pytest.raises(ValueError, match=r"layer=-1 is not a hidden layer"):
        model.add_neurons(-1, torch.randn(1, 4), torch.randn(1), torch.randn(1, 3))

    model2 = GrowingMLP(4, 3, (5,), max_width=8, max_depth=2)
    for w, b, a in [
        (torch.randn(1, 3), torch.randn(1), torch.randn(1, 3)),  # wrong d_in
        (torch.randn(2, 4), torch.randn(1), torch.randn(2, 3)),  # bias size
        (torch.randn(2, 4), torch.randn(2), torch.randn(2, 2)),  # act params
        (torch.randn(1, 4), torch.randn(1, 1), torch.randn(1, 3)),  # bias ndim
    ]:
        with pytest.raises(ValueError, match=r"candidate shapes .* do not fit layer 0 with 4 inputs"):
            model2.add_neurons(0, w, b, a)
    assert model2.hidden == [5]  # failed edits left the model untouched
    with pytest.raises(ValueError, match=r"layer candidate shapes \(4, 4\), \(5,\) do not match width 5"):
        model2.insert_layer(1, torch.eye(4), torch.zeros(5))  # wrong B shape
    with pytest.raises(ValueError, match=r"layer candidate shapes \(5, 5\), \(4,\) do not match width 5"):
        model2.insert_layer(1, torch.eye(5), torch.zeros(4))  # wrong bias shape
    with pytest.raises(ValueError, match=r"position=3 must be in \[0, 1\]"):
        model2.insert_layer(3, torch.eye(5), torch.zeros(5))  # position out of range
    with pytest.raises(ValueError, match=r"position=-1 must be in \[0, 1\]"):
        model2.insert_layer(-1, torch.eye(5), torch.zeros(5))
    assert model2.depth == 1

    model2.insert_layer(1, torch.eye(5), torch.zeros(5))  # depth 2 = max
    assert model2.depth == 2
    assert not model2.can_insert_layer(0)
    with pytest.raises(ValueError, match="max_depth"):
        model2.insert_layer(0, torch.eye(4), torch.zeros(4))

    # inserted width must fit max_width (input layer is wider than the capacity)
    wide = GrowingMLP(10, 2, (3,), max_width=4, max_depth=3)
    assert not wide.can_insert_layer(0)
    with pytest.raises(ValueError, match="inserting a layer at 0 exceeds max_depth=3 or max_width=4"):
        wide.insert_layer(0, torch.eye(10), torch.zeros(10))
    wide.insert_layer(1, torch.eye(3), torch.zeros(3))
    assert wide.hidden == [3, 3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden=(10,), max_width=8), r"max_width=8 is below the widest layer \(10 neurons\) of hidden=\[10\]"),
        (dict(hidden=(2, 2, 2), max_depth=2), r"max_depth=2 is below the depth 3 of hidden=\[2, 2, 2\]"),
        (dict(hidden=(0,)), r"hidden=\[0\]: every hidden width must be >= 1"),
        (dict(hidden=(3, -1)), r"hidden=\[3, -1\]: every hidden width must be >= 1"),
        (dict(in_features=0), r"in_features=0 and out_features=3 must be >= 1"),
        (dict(out_features=0), r"in_features=4 and out_features=0 must be >= 1"),
    ],
)
def test_constructor_rejects_bad_sizes(kwargs, message):
    args = dict(in_features=4, out_features=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        GrowingMLP(args.pop("in_features"), args.pop("out_features"), **args)


def test_constructor_accepts_start_at_capacity():
    model = GrowingMLP(4, 3, (8, 8), max_width=8, max_depth=2)
    assert model.hidden == [8, 8] and not model.can_add_neurons(0) and not model.can_insert_layer(1)
    assert GrowingMLP(4, 3, (), max_depth=0).depth == 0


# --------------------------------------------------------------------------- spec round trip


def test_spec_round_trip_reproduces_grown_model_exactly():
    torch.manual_seed(0)
    model = GrowingMLP(5, 3, (4,), max_width=9, max_depth=3, activation_init=(0.5, 0.1, 0.7))
    model.add_neurons(0, torch.randn(2, 5), torch.randn(2), torch.randn(2, 3))
    model.insert_layer(1, torch.eye(6) + 0.1 * torch.randn(6, 6), torch.randn(6))
    model.add_neurons(1, torch.randn(3, 6), torch.randn(3), torch.randn(3, 3))
    model.insert_layer(0, torch.eye(5) + 0.1 * torch.randn(5, 5), torch.randn(5))
    with torch.no_grad():  # make every parameter non-trivial, incl. the zero outgoing weights
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    spec = model.spec()
    text = json.dumps(spec)
    spec2 = json.loads(text)
    assert spec2 == spec
    assert spec2["hidden"] == [5, 6, 9] == model.hidden
    rebuilt = GrowingMLP.from_spec(spec2)
    assert rebuilt.spec() == spec
    rebuilt.load_state_dict(model.state_dict())
    X = 3 * torch.randn(50, 5)
    assert torch.equal(eval_outputs(rebuilt, X), eval_outputs(model, X))
    assert rebuilt.n_params() == model.n_params()
    # a model rebuilt from the start size cannot take the grown state dict
    with pytest.raises(RuntimeError, match="size mismatch for linears.0.weight"):
        GrowingMLP(5, 3, (4,), max_width=9, max_depth=3).load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="spec type 'Other' is not 'GrowingMLP'"):
        GrowingMLP.from_spec({**spec, "type": "Other"})


# --------------------------------------------------------------------------- rational activation


def test_rational_activation_identity_and_gradients():
    x = torch.linspace(-5, 5, 101)
    act = RationalActivation(101, IDENTITY)
    y = act(x)
    assert torch.equal(y, x)
    # per-neuron gradients at the identity: d/dv = 2x/(1+x^2), d/dc = 1/(1+x^2)
    y.sum().backward()
    torch.testing.assert_close(act.v.grad, 2 * x / (1 + x * x))
    torch.testing.assert_close(act.c.grad, 1 / (1 + x * x))
    assert (act.c.grad > 0).all()
    assert (act.v.grad[x != 0] != 0).all()
    # scalar-parameter form too, on random inputs
    v, c, l = (torch.tensor(t, requires_grad=True) for t in IDENTITY)
    z = torch.randn(1000)
    out = rational(z, v, c, l)
    assert torch.equal(out, z)
    gv, gc = torch.autograd.grad((out * z).sum(), (v, c))
    assert float(gv) > 0 and float(gc) != 0
    # it is scale-invariant in (v, c, l) and not the identity elsewhere
    torch.testing.assert_close(rational(z, torch.tensor(0.0), torch.tensor(0.0), torch.tensor(3.0)), z)
    assert not torch.allclose(rational(z, torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.5)), z)


# --------------------------------------------------------------------------- apply_edit check


def test_apply_edit_rejects_function_changing_edit():
    torch.manual_seed(1)
    model = GrowingMLP(4, 3, (5,))
    probe = 3 * torch.randn(32, 4)

    def bad_edit(m):
        m.linears[0].weight.add_(0.5)
        return []

    with pytest.raises(FunctionNotPreservedError, match=MSG_NOT_PRESERVED):
        apply_edit(model, bad_edit, probe=probe)

    def bad_neuron(m):
        changes = m.add_neurons(0, torch.randn(1, 4), torch.randn(1), torch.randn(1, 3))
        m.linears[1].weight[:, -1] = 1.0  # non-zero outgoing weight: function changes
        return changes

    with pytest.raises(FunctionNotPreservedError, match=MSG_NOT_PRESERVED):
        apply_edit(GrowingMLP(4, 3, (5,)), bad_neuron, probe=probe)

    # a genuine edit passes, returns its changes and a small measured difference; mode is restored
    model.train()
    changes, diff = apply_edit(
        model, lambda m: m.add_neurons(0, torch.randn(2, 4), torch.randn(2), torch.randn(2, 3)), probe=probe
    )
    assert len(changes) == 6 and diff <= 1e-6
    assert model.training


def test_insert_layer_with_zero_matrix_is_rejected_or_preserves_function():
    torch.manual_seed(2)
    model = GrowingMLP(4, 3, (5,), max_width=8, max_depth=3)
    X = 3 * torch.randn(16, 4)
    before = eval_outputs(model, X)
    try:
        model.insert_layer(1, torch.zeros(5, 5), torch.zeros(5))
    except ValueError:
        assert model.depth == 1 and torch.equal(eval_outputs(model, X), before)
        return
    after = eval_outputs(model, X)
    assert torch.isfinite(after).all()
    assert float((after - before).abs().max()) <= 1e-4 * max(1.0, float(before.abs().max()))
