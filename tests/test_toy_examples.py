"""End-to-end runs of SENN's toy-figure examples (``examples/senn_toy_regression.py`` and
``examples/senn_toy_classification.py``), shortened; real training, no mocks.

Each asserts the point its figure makes, so a regression in growth scoring, candidate search,
function-preserving edits or optimiser surgery shows up here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    """Import ``examples/<name>.py`` as a module (the examples folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy_regression_adds_neurons_where_the_fit_is_poor(tmp_path):
    ex = _load("senn_toy_regression")
    r = ex.main(tmp_path, seed=0, steps=1400)  # checks at steps 200, 400, ..., 1200
    assert (tmp_path / "senn_toy_regression.png").stat().st_size > 10_000
    assert r["hidden"] > 1 and len(r["positions"]) == r["hidden"] == len(r["added_at"])
    # the grown fit is far better than one neuron, on training and on held-out points
    assert r["mse_final"] < 0.25 * min(r["mse_start"], r["mse_baseline"])
    assert r["val_mse_final"] < 0.25 * r["val_mse_baseline"]
    # every new neuron bends where the residual was larger than elsewhere
    ratios = np.asarray(r["near_vs_elsewhere"])
    assert len(ratios) == r["hidden"] - 1
    assert np.all(ratios > 1.0) and np.median(ratios) > 1.5
    # and every bump of the target lies in the bend of a narrow neuron (|w·x + b| < 1, the bands of
    # the figure, at most 0.5 wide on each side: the bumps are 0.1-0.3 wide, the x range 6)
    for centre, _, _ in ex.BUMPS:
        assert any(abs(p - centre) < h < 0.5 for p, h in zip(r["positions"], r["bend_widths"])), (centre, r["positions"])


def test_toy_classification_inserts_layers_and_beats_the_linear_model(tmp_path):
    ex = _load("senn_toy_classification")
    r = ex.main(tmp_path, seed=0, epochs=30)
    assert (tmp_path / "senn_toy_classification.png").stat().st_size > 10_000
    assert r["layer_events"] >= 1 and len(r["hidden"]) >= 1
    assert r["max_abs_diff"] < 1e-4  # every edit was function-preserving on the probe batch
    assert r["val_acc_final"] > max(r["val_acc_linear"], r["val_acc_linear_full"]) + 0.1


def test_depth_circles_grows_a_layer_that_logistic_regression_lacks(tmp_path):
    """examples/depth_circles.py: from no hidden layer, growth inserts one and separates the circles,
    which the same start trained as long without growth cannot (its baseline is a real linear model,
    not the grown net after a few epochs)."""
    r = _load("depth_circles").main(tmp_path, seed=0)
    assert (tmp_path / "circles_growth.png").stat().st_size > 10_000
    assert r["depth_events"] >= 1 and len(r["hidden"]) >= 1
    assert r["test_acc_linear"] < 0.7 < 0.95 < r["test_acc"]
