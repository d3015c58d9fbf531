"""SENNRegressor: scikit-learn compatibility, targets in the user's units, bad input, growth on a
regression task (squared error through the same trainer, statistics and policies)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.compose import TransformedTargetRegressor
from sklearn.datasets import load_diabetes, load_linnerud, make_friedman1
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from senn_automl.integrations.estimator import SENNClassifier, SENNRegressor

FAST = dict(max_epochs=30, expansion_interval=5, n_candidates=16, candidate_steps=10, lr=1e-2, batch_size=32,
            random_state=0, device="cpu")


def _fast(**kw) -> SENNRegressor:
    return SENNRegressor(**{**FAST, **kw})


@parametrize_with_checks(
    [_fast()],
    expected_failed_checks=lambda est: {
        "check_sample_weight_equivalence_on_dense_data": (
            "minibatch training shuffles and draws scoring rows differently for repeated rows than for integer "
            "weights, and trains in float32, so predictions agree to about 1e-6, not the check's rtol 1e-7"
        ),
    },
)
def test_sklearn_compatible_regressor(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_predictions_come_back_in_the_units_of_y(diabetes):
    """The target standardisation lives inside model_: shifting and scaling y shifts and scales the
    predictions the same way (same seed, same standardised problem), and model_ alone predicts them."""
    X, y = diabetes
    a = _fast().fit(X, y)
    b = _fast().fit(X, 1000.0 + 3.0 * y)
    np.testing.assert_allclose(b.predict(X), 1000.0 + 3.0 * a.predict(X), rtol=1e-4)
    assert a.score(X, y) > 0.3  # in y's units: a network predicting standardised values would score R² < -3
    import torch

    with torch.no_grad():
        raw = a.model_(torch.tensor(X, dtype=torch.float32)).numpy()[:, 0]
    np.testing.assert_allclose(raw, a.predict(X), rtol=1e-4, atol=1e-3)


def test_multi_output_targets_and_pickle():
    X, Y = load_linnerud(return_X_y=True)
    reg = _fast().fit(X, Y)
    assert reg.n_outputs_ == 3
    assert reg.predict(X).shape == (20, 3)
    assert reg.model_.linears[-1].out_features == 3
    again = pickle.loads(pickle.dumps(reg))
    np.testing.assert_array_equal(again.predict(X), reg.predict(X))
    one = _fast().fit(X, Y[:, 0])
    assert one.predict(X).shape == (20,)


def test_works_in_pipeline_grid_search_and_transformed_target(diabetes):
    X, y = diabetes
    pipe = make_pipeline(StandardScaler(), _fast(max_epochs=10))
    scores = cross_val_score(pipe, X, y, cv=KFold(3, shuffle=True, random_state=0), scoring="r2")
    assert scores.shape == (3,) and np.all(np.isfinite(scores))
    grid = GridSearchCV(_fast(max_epochs=10), {"lr": [3e-3, 1e-2]}, cv=2).fit(X, y)
    assert grid.best_params_["lr"] in (3e-3, 1e-2)
    ttr = TransformedTargetRegressor(regressor=_fast(max_epochs=10), func=np.log, inverse_func=np.exp).fit(X, y)
    assert np.all(ttr.predict(X) > 0)


def test_score_is_r2(diabetes):
    X, y = diabetes
    reg = _fast().fit(X[:300], y[:300])
    assert reg.score(X[300:], y[300:]) == pytest.approx(r2_score(y[300:], reg.predict(X[300:])))
    assert reg.history_[-1]["val_r2"] <= 1.0 and "val_acc" not in reg.history_[-1]


@pytest.mark.parametrize(
    "y, match",
    [
        (np.array(["a", "b"] * 10), "y holds strings: SENNRegressor fits numbers; for class labels use SENNClassifier"),
        (np.array([True, False] * 10), "y holds booleans"),
        (np.r_[np.nan, np.ones(19)], "y has non-finite values"),
        (np.r_[np.inf, np.ones(19)], "y has non-finite values"),
        (np.ones((20, 2, 2)), r"y has 3 dimensions .*pass y of shape \(n_samples,\) or \(n_samples, n_outputs\)"),
        (np.ones(19), "inconsistent numbers of samples"),
    ],
)
def test_bad_targets_get_a_clear_error_before_training(y, match):
    reg = _fast()
    with pytest.raises(ValueError, match=match):
        reg.fit(np.random.default_rng(0).random((20, 3)), y)
    assert not hasattr(reg, "model_")


def test_classifier_given_continuous_targets_names_the_regressor():
    X = np.random.default_rng(0).random((20, 3))
    with pytest.raises(ValueError, match="SENNClassifier needs class labels: for regression use SENNRegressor"):
        SENNClassifier(**FAST).fit(X, X[:, 0] * 1.7)


def test_failed_fit_keeps_the_fitted_regressor(diabetes):
    X, y = diabetes
    reg = _fast(max_epochs=5).fit(X, y)
    before = reg.predict(X)
    with pytest.raises(ValueError, match="non-finite"):
        reg.fit(X, np.r_[np.nan, y[1:]])
    np.testing.assert_array_equal(reg.predict(X), before)


def test_warm_start_continues_in_the_units_of_y(diabetes):
    X, y = diabetes
    reg = _fast(max_epochs=5, warm_start=True).fit(X, y)
    first = reg.score(X, y)
    reg.fit(X, y)
    assert reg.n_iter_ == 10
    assert reg.score(X, y) > first - 0.05  # continued, not restarted from a scale-free network
    with pytest.raises(ValueError, match="fitted on 1 output"):
        reg.fit(X, np.c_[y, y])


def test_grows_on_friedman1():
    """make_friedman1 needs more than the 10 start units: the default regressor adds some, and its
    test R² is that of a fitted model (the noise-free R² ceiling is about 0.96 at noise 1.0)."""
    X, y = make_friedman1(n_samples=2000, noise=1.0, random_state=0)
    reg = SENNRegressor(random_state=0, device="cpu").fit(X[:1500], y[:1500])
    assert len(reg.growth_history_) >= 1
    assert reg.model_.hidden[0] > 10
    assert reg.score(X[1500:], y[1500:]) > 0.85


def test_cnn_and_edge_policies_regress():
    """The SECNN policy grows a CNN on image inputs and the edge policy an EdgeMLP, both on squared
    error, and both predict in the target's units."""
    from sklearn.datasets import load_digits

    X, _ = load_digits(return_X_y=True)
    images = (X / 16).reshape(-1, 1, 8, 8)
    t = 3 * X.mean(1) + 2  # the mean grey level: a smooth function of the image
    cnn = SENNRegressor(policy="secnn", max_epochs=4, random_state=0, device="cpu").fit(images[:1200], t[:1200])
    assert cnn.image_shape_ == (1, 8, 8) and type(cnn.model_).__name__ == "GrowingCNN"
    assert cnn.score(images[1200:], t[1200:]) > 0.8
    Xf, yf = make_friedman1(n_samples=1000, noise=1.0, random_state=0)
    edge = SENNRegressor(policy="edges", hidden_layer_sizes=(), max_epochs=60, random_state=0, device="cpu").fit(Xf[:800], yf[:800])
    assert type(edge.model_).__name__ == "EdgeMLP" and len(edge.growth_history_) >= 1  # grew on a plateau
    assert edge.score(Xf[800:], yf[800:]) > 0.4  # a fit of the signal, not of the noise (R² 0 predicts the mean)
