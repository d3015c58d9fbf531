"""Every place a model is chosen takes the CNN and the edge model: SENNClassifier (images, flat
rows with image_shape), `senn-automl fit --model`, and a Ray Tune search whose trials run the four
policies side by side, compared from MLflow."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from sklearn.datasets import load_digits

from senn_automl.integrations.estimator import SENNClassifier


@pytest.fixture(scope="module")
def digits_images():
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8), y


def test_classifier_grows_a_cnn_on_images(digits_images):
    X, y = digits_images
    clf = SENNClassifier(policy="secnn", max_epochs=4, random_state=0, policy_params={"min_gap": 1})
    clf.fit(X[:1200], y[:1200])
    assert type(clf.model_).__name__ == "GrowingCNN" and clf.image_shape_ == (1, 8, 8)
    assert clf.growth_history_ and {e["kind"] for e in clf.growth_history_} <= {"conv_layer", "channels"}
    acc = clf.score(X[1200:], y[1200:])
    assert acc > 0.8
    flat = X[1200:].reshape(len(X) - 1200, -1)
    assert np.array_equal(clf.predict(flat), clf.predict(X[1200:]))  # flat rows = the same images
    again = pickle.loads(pickle.dumps(clf))
    assert np.allclose(again.predict_proba(X[1200:1300]), clf.predict_proba(X[1200:1300]))
    # flat rows + image_shape choose the same network
    clf2 = SENNClassifier(policy="secnn", image_shape=(1, 8, 8), max_epochs=1, random_state=0).fit(flat[:300], y[1200:1500])
    assert type(clf2.model_).__name__ == "GrowingCNN"


def test_classifier_edges_policy_builds_an_edge_model(digits_images):
    X, y = digits_images
    flat = X.reshape(len(X), -1)
    clf = SENNClassifier(policy="edges", hidden_layer_sizes=(), max_epochs=3, random_state=0,
                         policy_params={"when": "interval", "expansion_interval": 1, "min_gap": 0})
    clf.fit(flat[:800], y[:800])
    assert type(clf.model_).__name__ == "EdgeMLP" and clf.n_params_ == clf.model_.n_params()
    assert [e["kind"] for e in clf.growth_history_].count("edges") >= 1


@pytest.mark.parametrize(
    "kwargs, X_fn, match",
    [
        ({"policy": "secnn"}, lambda X: X.transpose(0, 2, 3, 1).repeat(3, axis=3), "channels-last"),
        ({"policy": "secnn", "image_shape": (1, 7, 7)}, lambda X: X.reshape(len(X), -1), "64"),
        ({"policy": "natural", "model": "cnn"}, lambda X: X, "cannot grow a GrowingCNN"),
        ({"policy": "secnn"}, lambda X: X.reshape(len(X), -1), "needs images"),
        ({"policy": "edges", "policy_params": {"metric": "loudness"}}, lambda X: X.reshape(len(X), -1), "metric"),
        ({"policy": "natural", "policy_params": {"prune_after": 0}}, lambda X: X.reshape(len(X), -1), "prune_after"),
    ],
)
def test_classifier_bad_image_and_policy_input(digits_images, kwargs, X_fn, match):
    X, y = digits_images
    clf = SENNClassifier(max_epochs=1, **kwargs)
    with pytest.raises(ValueError, match=match):
        clf.fit(X_fn(X[:100]), y[:100])
    assert not hasattr(clf, "model_")  # nothing fitted, nothing lost


def test_cli_fit_cnn_and_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from senn_automl.cli import app
    from senn_automl.training.trainer import load_checkpoint

    out = tmp_path / "fit"
    r = CliRunner().invoke(app, ["fit", "--dataset", "digits", "--model", "cnn", "--epochs", "3", "--quiet",
                                 "--out", str(out), "--set", "min_gap=1"])
    assert r.exit_code == 0, r.output
    assert "GrowingCNN" in r.output and "block 0" in r.output and "test accuracy" in r.output
    t = load_checkpoint(out / "checkpoint")
    assert type(t.model).__name__ == "GrowingCNN" and t.policy.name == "secnn"
    assert (out / "growth.png").stat().st_size > 10_000
    bad = CliRunner().invoke(app, ["fit", "--dataset", "iris", "--model", "cnn", "--epochs", "1", "--quiet", "--out", str(out)])
    assert bad.exit_code != 0 and "needs images" in bad.output


@pytest.mark.slow  # a Ray Tune search and an mlflow store
def test_search_runs_every_policy_and_compare_shows_them(tmp_path):
    """One Ray Tune run over fixed configs: natural, edges, secnn (CNN on 1x8x8 digits) and fixed;
    each trial is a MLflow child run with registered versions; compare shows the four side by side."""
    import pandas as pd
    from conftest import descendants, kill_pids, pids_mentioning, short_tmp
    from mlflow.tracking import MlflowClient

    from senn_automl.integrations.compare import compare
    from senn_automl.integrations.tune import run_search

    ray_dir = short_tmp("pol")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tmp_path / "four.yaml"
    space.write_text(
        "constants: {n_candidates: 8, candidate_steps: 5}\n"
        "params:\n"
        "  policy: {type: categorical, choices: [natural, edges, secnn, fixed]}\n"
        "  expansion_interval: {type: int, low: 1, high: 3, when: {policy: [natural, edges]}}\n"
        "  start_depth: {type: int, low: 0, high: 1, when: {policy: edges}}\n"
        "  when: {type: categorical, choices: [interval, plateau], when: {policy: edges}}\n"
        "  min_gap: {type: int, low: 0, high: 3, when: {policy: [edges, secnn]}}\n"
        "  prune_after: {type: categorical, choices: [null, 1], when: {policy: edges}}\n"
    )
    configs = [
        {"policy": "natural", "expansion_interval": 1},
        {"policy": "edges", "start_depth": 0, "when": "interval", "expansion_interval": 1, "min_gap": 0, "prune_after": 1},
        {"policy": "secnn", "min_gap": 1},
        {"policy": "fixed"},
    ]
    try:
        res = run_search(
            "digits", str(space), tracking_uri=uri, out=tmp_path / "out", ray_temp_dir=ray_dir, progress=False,
            trial_overrides={"max_epochs": 3}, fixed_configs=configs, scheduler="fifo", max_concurrent=2,
        )
    finally:
        kill_pids(descendants(pids_mentioning(ray_dir)))
        shutil.rmtree(ray_dir, ignore_errors=True)
    lb = res.leaderboard
    assert sorted(lb["policy"]) == ["edges", "fixed", "natural", "secnn"]
    assert (lb["status"] == "complete").all() and (lb["epochs"] == 3).all()
    grew = lb.set_index("policy")["growth_events"]
    assert grew["fixed"] == 0 and grew["natural"] > 0 and grew["edges"] > 0 and grew["secnn"] > 0
    client = MlflowClient(tracking_uri=uri)
    versions = client.search_model_versions(f"name='{res.registered_model_name}'")
    assert {v.tags.get("policy") for v in versions} >= {"natural", "edges", "secnn", "fixed"}
    cmp = compare(uri, out=tmp_path / "cmp")
    summary = pd.read_csv(cmp.csv)
    assert sorted(summary["policy"]) == ["edges", "fixed", "natural", "secnn"]


def test_trainer_augments_image_batches_only_when_asked(digits_images):
    """augment=True changes what a CNN trains on (flips/shifts), leaves MLP training untouched, and
    a seeded run stays reproducible."""
    import torch

    from senn_automl.training.config import make_model
    from senn_automl.training.trainer import TrainConfig, Trainer

    X, y = digits_images
    flat = X.reshape(len(X), -1)[:400]

    def run(kind, augment):
        torch.manual_seed(0)
        model = make_model(kind, 64, 10, image_shape=(1, 8, 8), hidden=(8,))
        cfg = TrainConfig(max_epochs=2, seed=0, augment=augment, patience=None, restore_best=False, device="cpu")
        t = Trainer(model, None, cfg).fit(flat, y[:400])
        return torch.cat([p.detach().flatten() for p in t.model.parameters()])

    assert not torch.equal(run("cnn", True), run("cnn", False))
    assert torch.equal(run("cnn", True), run("cnn", True))
    assert torch.equal(run("mlp", True), run("mlp", False))
