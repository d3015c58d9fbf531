"""Regression data (bundled diabetes, linnerud, friedman1; CSV files) and ``senn-automl fit`` on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, make_friedman1
from typer.testing import CliRunner

from senn_automl.cli import app
from senn_automl.data import FRIEDMAN1, REGRESSION_DATASETS, load_csv, load_dataset


def _text(result) -> str:
    """A CLI result's output with Typer's error box and line wrapping removed."""
    return " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize("name, k", [("diabetes", 1), ("linnerud", 3), ("friedman1", 1)])
def test_bundled_regression_sets(name, k):
    ds = load_dataset(name, seed=1)
    assert ds.task == "regression" and ds.is_regression and ds.n_outputs == k and ds.n_classes == 0
    assert ds.y_train.dtype == np.float32 and ds.y_train.shape == (len(ds.X_train), k)
    # standardised on the train split; raw_targets gives the source's units back
    np.testing.assert_allclose(ds.y_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.y_train.std(0), 1, atol=1e-4)
    n = len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert ds.as_dict()["n_outputs"] == k and ds.as_dict()["task"] == "regression"
    raw = np.concatenate([ds.raw_targets(s) for s in ("train", "val", "test")])
    if name == "diabetes":
        y = load_diabetes(return_X_y=True)[1]
        assert n == 442
        np.testing.assert_allclose(np.sort(raw[:, 0]), np.sort(y), rtol=1e-5)
    if name == "friedman1":
        assert n == FRIEDMAN1["n_samples"] == 2000
        y = make_friedman1(**FRIEDMAN1, random_state=0)[1]
        np.testing.assert_allclose(np.sort(raw[:, 0]), np.sort(y), rtol=1e-5)
    assert set(REGRESSION_DATASETS) == {"diabetes", "linnerud", "friedman1"}
    with pytest.raises(ValueError, match="classification set"):
        load_dataset("iris").raw_targets("test")


@pytest.fixture()
def csv_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = 3 * np.sin(x[:, 0]) + x[:, 1] ** 2 + 0.1 * rng.normal(size=300)
    path = tmp_path / "toy.csv"
    lines = ["a,b,c,price,label"] + [f"{r[0]},{r[1]},{r[2]},{v},{'hi' if v > 1 else 'lo'}" for r, v in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_regression_and_classification(csv_file, tmp_path):
    numeric = tmp_path / "numeric.csv"
    numeric.write_text("\n".join(",".join(line.split(",")[:4]) for line in csv_file.read_text().splitlines()) + "\n")
    reg = load_csv(numeric, "price")  # continuous values: regression
    assert reg.task == "regression" and reg.n_outputs == 1 and reg.name == "numeric" and reg.n_features == 3
    clf = load_csv(csv_file, "label")  # strings: classification, the other four columns are features
    assert clf.task == "classification" and clf.classes == ("hi", "lo") and clf.n_features == 4
    with pytest.raises(ValueError, match=r"feature column\(s\) \['label'\] .* are not numeric"):
        load_csv(csv_file, "price")
    with pytest.raises(ValueError, match=r"column\(s\) \['cost'\] not in .*its columns are: a, b, c, price, label"):
        load_csv(csv_file, "cost")
    with pytest.raises(ValueError, match="target column.*not numeric: a regression target must be"):
        load_csv(csv_file, ["label"], task="regression")
    with pytest.raises(FileNotFoundError, match="not found: pass the path of a CSV file"):
        load_csv(csv_file.parent / "nope.csv", "price")


def test_fit_cli_regression_reports_r2_and_rmse_in_target_units(tmp_path):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["fit", "--dataset", "friedman1", "--epochs", "40", "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "test R²:" in r.output and "RMSE" in r.output and "test accuracy" not in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_r2"] > 0.7
    # RMSE in y's units: friedman1's noise has standard deviation 1, its y about 5
    assert 0.9 < summary["test_rmse"] < 3.0
    assert summary["config"]["task"] == "regression"
    assert (out / "growth.png").stat().st_size > 10_000


def test_fit_cli_csv_and_bad_arguments(tmp_path, csv_file):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["fit", "--dataset", str(csv_file), "--target", "price", "--epochs", "5", "--quiet",
                                 "--out", str(out), "--set", "model=mlp"])
    # the label column is text, so it cannot be a feature: the message names it
    assert r.exit_code != 0 and "['label']" in _text(r) and "not numeric" in _text(r)
    no_target = CliRunner().invoke(app, ["fit", "--dataset", str(csv_file), "--quiet", "--out", str(out)])
    assert no_target.exit_code != 0 and "--target COLUMN" in _text(no_target)
    clash = CliRunner().invoke(app, ["fit", "--dataset", "friedman1", "--set", "task=classification", "--out", str(out)])
    assert clash.exit_code != 0 and "a regression set: drop --set task" in _text(clash)
    numeric = tmp_path / "num.csv"
    numeric.write_text("\n".join(["a,b,y"] + [f"{i % 7},{i % 3},{(i % 7) * 0.5 + (i % 3) * 1.5 + 0.01 * i}" for i in range(120)]) + "\n")
    ok = CliRunner().invoke(app, ["fit", "--dataset", str(numeric), "--target", "y", "--epochs", "5", "--quiet", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "test R²:" in ok.output


def test_csv_of_whole_number_prices_regresses_with_set_task(tmp_path):
    """A target of whole numbers (prices in dollars) looks like class labels to load_csv's guess;
    `--set task=regression` makes it a regression, in `fit` as in `load_any`."""
    from senn_automl.data import load_any

    X, y = load_diabetes(return_X_y=True)
    path = tmp_path / "prices.csv"
    path.write_text("\n".join([",".join([f"x{i}" for i in range(10)] + ["price"])]
                              + [",".join([*map(str, row), str(int(v))]) for row, v in zip(X, y)]) + "\n")
    with pytest.raises(ValueError, match=r"214 distinct values .* were read as class labels; if they are a quantity, "
                                         r"pass task='regression' \(--set task=regression\)"):
        load_any(str(path), target="price")  # the guess: 214 classes, too few rows each to split
    reg = load_any(str(path), target="price", task="regression")
    assert reg.task == "regression" and reg.n_outputs == 1
    out = tmp_path / "run"
    guessed = CliRunner().invoke(app, ["fit", "--dataset", str(path), "--target", "price", "--epochs", "3", "--quiet",
                                       "--out", str(out)])
    assert guessed.exit_code != 0 and "--set task=regression" in _text(guessed)
    r = CliRunner().invoke(app, ["fit", "--dataset", str(path), "--target", "price", "--epochs", "3", "--quiet",
                                 "--out", str(out), "--set", "task=regression"])
    assert r.exit_code == 0, r.output
    assert "test R²:" in r.output
    with pytest.raises(ValueError, match="task='regression' does not fit dataset 'digits', a classification set: drop --set task"):
        load_any("digits", task="regression")


def test_registering_a_model_needs_a_tracking_store(tmp_path):
    """--registered-model-name without --tracking-uri (or `mlflow run`) is refused before training, not ignored."""
    r = CliRunner().invoke(app, ["fit", "--dataset", "iris", "--epochs", "2", "--quiet", "--out", str(tmp_path / "run"),
                                 "--registered-model-name", "iris-net"], env={"MLFLOW_RUN_ID": ""})
    assert r.exit_code != 0 and "--registered-model-name needs --tracking-uri" in _text(r)
    assert not (tmp_path / "run").exists()


def test_fit_cli_names_its_own_flag_for_folder_datasets(tmp_path):
    """A folder dataset without a folder, or a misspelt name: the error gives the CLI's --data-root,
    not only the Python API's root=PATH."""
    for dataset in ("mnist_idx", "digitz"):
        r = CliRunner().invoke(app, ["fit", "--dataset", dataset, "--quiet", "--out", str(tmp_path / "run")])
        assert r.exit_code == 2, r.output
        assert "--data-root PATH" in _text(r), r.output
