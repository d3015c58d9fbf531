"""The task module: one per-sample loss for the trainer and every growth score, and its metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import r2_score

from senn_automl.models.cnn import GrowingCNN
from senn_automl.models.mlp import GrowingMLP
from senn_automl.scores.conv import collect_cnn_stats
from senn_automl.scores.curvature import collect_kfac, delta_eta_exact, delta_eta_lower_bound, residual
from senn_automl.scores.tasks import CLASSIFICATION, REGRESSION, get_task
from senn_automl.training.trainer import TrainConfig

DAMPING = 0.1


def test_r2_equals_scikit_learn_weighted_multi_output():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(300, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1]) + 5
    out = t + 0.5 * torch.randn(300, 3, generator=g)
    w = torch.rand(300, generator=g)
    parts = sum(REGRESSION.score_parts(out[i : i + 64], t[i : i + 64], w[i : i + 64]) for i in range(0, 300, 64))
    ours = REGRESSION.finish_score(parts, float(w.sum()))
    assert ours == pytest.approx(r2_score(t.numpy(), out.numpy(), sample_weight=w.numpy()), rel=1e-6)
    const = torch.ones(10, 1)
    assert REGRESSION.finish_score(REGRESSION.score_parts(const, const), 10.0) == 1.0
    assert REGRESSION.finish_score(REGRESSION.score_parts(const + 1, const), 10.0) == 0.0


def test_accuracy_parts():
    out = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    t = torch.tensor([0, 0, 0])
    assert CLASSIFICATION.finish_score(CLASSIFICATION.score_parts(out, t), 3.0) == pytest.approx(2 / 3)
    w = torch.tensor([1.0, 2.0, 1.0])
    assert CLASSIFICATION.finish_score(CLASSIFICATION.score_parts(out, t, w), 4.0) == pytest.approx(0.5)


def test_summed_loss_gives_the_per_sample_output_gradients():
    """∂(Σ ℓ_n)/∂y_n is the per-sample δ_n the statistics use: (2/k)(y − t) for squared error,
    softmax − one-hot for cross-entropy; and the mean of ℓ_n is the training loss."""
    g = torch.Generator().manual_seed(1)
    out = torch.randn(8, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(8, 3, generator=g, dtype=torch.float64)
    (d,) = torch.autograd.grad(REGRESSION.summed(out, t), out)
    torch.testing.assert_close(d, 2 / 3 * (out - t).detach())
    assert float(REGRESSION.loss(out.detach(), t)) == pytest.approx(float(REGRESSION.losses(out.detach(), t).mean()))
    labels = torch.tensor([0, 2, 1, 1, 0, 2, 2, 0])
    (d,) = torch.autograd.grad(CLASSIFICATION.summed(out, labels), out)
    torch.testing.assert_close(d, (torch.softmax(out, 1) - F.one_hot(labels, 3)).detach())
    assert REGRESSION.targets(np.arange(4.0), "cpu").shape == (4, 1)


@pytest.fixture(scope="module")
def regression_net():
    """A 2-output regression MLP after 200 Adam steps on a smooth target, in float64."""
    torch.manual_seed(0)
    X = torch.rand(256, 4, dtype=torch.float64) * 4 - 2
    t = torch.stack([torch.sin(2 * X[:, 0]) * X[:, 1], X[:, 2] ** 2 - X[:, 3]], dim=1)
    model = GrowingMLP(4, 2, (6,)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        REGRESSION.loss(model(X), t).backward()
        opt.step()
    return model, X, t


def test_regression_statistics_lambda_and_bound(regression_net):
    model, X, t = regression_net
    stats = collect_kfac(model, X, t, damping=DAMPING, loss_fn=REGRESSION.summed)
    with torch.no_grad():
        delta = 2 / 2 * (model(X) - t)
    assert stats.lam == pytest.approx(float((delta**2).sum(1).mean()), rel=1e-9)
    with torch.no_grad():
        assert stats.loss == pytest.approx(float(REGRESSION.loss(model(X), t)), rel=1e-6)
    assert 0 < stats.eta <= stats.lam  # Gauss-Newton factor: η is a projection of the output gradients
    g = torch.Generator().manual_seed(3)
    consumer = stats.layers[1]
    r = residual(consumer)
    for _ in range(20):
        f = torch.randn(len(X), 1, generator=g, dtype=torch.float64)
        lb = float(delta_eta_lower_bound(f, r, consumer.G_inv, DAMPING))
        assert 0 <= lb <= float(delta_eta_exact(f, consumer)) * (1 + 1e-9) + 1e-15
    useful = r[:, :1]  # a feature equal to the residual: the bound is far from zero
    assert float(delta_eta_lower_bound(useful, r, consumer.G_inv, DAMPING)) > 0.01 * stats.eta


def test_cnn_statistics_take_the_task_loss():
    """λ of the CNN pass is E‖∂ℓ/∂y‖² of the given loss: softmax − one-hot by default, the residual
    for squared error."""
    torch.manual_seed(0)
    model = GrowingCNN((1, 8, 8), 3, (4, 4)).double().train()
    X = torch.randn(16, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    ce = collect_cnn_stats(model, X, y, parts=1, fisher="empirical")
    with torch.no_grad():
        e = torch.softmax(model(X), 1) - F.one_hot(y, 3)
    assert ce.lam == pytest.approx(float((e**2).sum(1).mean()), rel=1e-6)
    t = torch.randn(16, 3, dtype=torch.float64)
    mse = collect_cnn_stats(model, X, t, parts=1, fisher="empirical", loss_fn=REGRESSION.summed)
    with torch.no_grad():
        r = 2 / 3 * (model(X) - t)
    assert mse.lam == pytest.approx(float((r**2).sum(1).mean()), rel=1e-6)


def test_task_and_monitor_validated():
    with pytest.raises(ValueError, match="task='ranking' is invalid"):
        TrainConfig(task="ranking")
    with pytest.raises(ValueError, match="monitor='val_acc' is invalid: use 'val_loss' or 'val_r2' for task='regression'"):
        TrainConfig(task="regression", monitor="val_acc")
    assert TrainConfig(task="regression", monitor="val_r2").monitor == "val_r2"
    with pytest.raises(ValueError, match="task="):
        get_task("ranking")
