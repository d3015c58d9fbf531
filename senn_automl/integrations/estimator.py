"""scikit-learn estimators: :class:`SENNClassifier` and :class:`SENNRegressor`, whose network grows while it trains.

It wraps a growable model (:class:`~senn_automl.models.mlp.GrowingMLP`, ``GrowingCNN`` for images,
``EdgeMLP``), :class:`~senn_automl.training.trainer.Trainer` and a growth policy (``natural``, ``secnn``,
``edges`` or ``fixed``) behind the scikit-learn 1.9 estimator API, so it works
in ``Pipeline``, ``clone``, ``GridSearchCV``, ``cross_val_score`` and passes
``sklearn.utils.estimator_checks``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from senn_automl.growth.base import POLICIES, GrowthEvent, make_policy
from senn_automl.growth.natural import NaturalExpansionPolicy
from senn_automl.models.registry import model_from_spec
from senn_automl.scores.tasks import CLASSIFICATION, REGRESSION, Task
from senn_automl.training import config as _config
from senn_automl.training.trainer import PrintGrowth, TrainConfig, Trainer, check_sample_weight, resolve_device
from senn_automl.validation import is_real, is_whole

_PARAMETERS_DOC = """    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(10,)
        Start widths (neurons) of the hidden layers, input side first. ``()`` starts with zero
        hidden layers (a linear model); depth can still grow up to ``max_depth``.
    max_width : int, default=64
        Capacity of every hidden layer, in neurons; growth never makes a layer wider, and a layer
        can only be inserted where the incoming width is at most ``max_width``. Must be at least
        ``max(hidden_layer_sizes)``.
    max_depth : int, default=3
        Capacity in hidden layers. Must be at least ``len(hidden_layer_sizes)``.
    policy : {"natural", "north", "secnn", "edges", "fixed"}, default="natural"
        ``"natural"``: SENN's natural expansion policy (MLP). ``"north"``: units while a hidden
        layer's activations are full rank (NORTH*'s effective rank, MLP; give it room, e.g.
        ``max_width=128``). ``"secnn"``: SECNN block growth of
        a CNN (images). ``"edges"``: edge-based expansion with pruning (EdgeMLP). ``"fixed"``:
        no growth (baseline). The natural-policy parameters below (``tau`` ... ``damping``) are
        validated whatever the policy, so switching policy never reveals a latent error; the
        other policies have their own defaults and take their settings from ``policy_params``
        (their ``tau``, for one, has another meaning).
    policy_params : dict or None, default=None
        Further parameters of the chosen policy by name, e.g. ``{"metric": "abs_grad",
        "prune_after": 5}`` for ``"edges"``, ``{"widen_step": 8, "tau": 1.02}`` for ``"secnn"``,
        ``{"prune_after": 10}`` for ``"natural"`` (overriding the parameters above). Unknown names
        raise ``ValueError`` listing the valid ones.
    model : {"auto", "mlp", "cnn", "edge"}, default="auto"
        Network kind; ``"auto"`` uses the one the policy grows (secnn → cnn, edges → edge,
        otherwise mlp). ``"cnn"`` needs images: ``X`` of shape (n, C, H, W), or flat rows with
        ``image_shape``.
    image_shape : tuple (C, H, W) or None, default=None
        Shape of one image when ``X`` holds flattened images (channels first, C·H·W columns).
        Taken from ``X`` when ``X`` is 4-D.
    start_channels, start_blocks : int, default=16, 3
        CNN start: ``start_blocks`` blocks of ``start_channels`` channels (SECNN's start).
    block_capacity : int, default=10
        CNN: most conv layers per block (SECNN's N).
    max_channels : int, default=128
        CNN: most channels per block.
    tau : float, default=0.03
        Relative threshold τ > 0 (dimensionless): accept an addition only if it raises the
        natural expansion score η by more than the fraction ``tau`` of the reference η
        (arXiv:2307.04526, §3.3; official MNIST value 0.03).
    growth_alpha : float, default=2.5e-3
        SENN's absolute threshold α in (0, 1) (dimensionless): the increase Δη' must also exceed
        ``growth_alpha`` times λ = E‖∂ℓ/∂y‖² (arXiv:2307.04526, Theorem 3.1; official 2.5e-3).
        Together τ and α bound the additions per check by ⌈1 + ln(1/α)/ln(1+τ)⌉. The policy,
        its growth events and ``policy_params`` call it ``alpha``.
    relative_to : {"total", "layer"}, default="total"
        Reference η of the ``tau`` test: the whole network's (Theorem 3.1) or the consuming
        layer's (as in the official code).
    layer_cost : float, default=20.0
        Depth cost multiplier ≥ 1 (dimensionless): a layer proposal's score is divided by it.
    expansion_interval : int, default=3
        Epochs between growth checks, ≥ 1. Candidates are optimised on training rows and accepted
        on the validation split, so what a check adds must help there; training residuals stop
        carrying over to held-out data once the net fits its training rows, so checks come early
        and often (every 3 epochs: growth in every fold of digits, wine and breast_cancer, against
        1 of 5 on digits every 10 epochs; BENCHMARKS.md, "Growth against the same network
        trained fixed").
    depth_cooldown : int, default=3
        Growth checks without layer proposals after a check that proposed layers, ≥ 0.
    n_candidates : int, default=32
        Neuron candidates optimised per hidden layer at each check, ≥ 1 (the paper's code uses
        100; on digits 32 find as good a neuron in 40 % of the time).
    candidate_steps : int, default=50
        Gradient-ascent steps on each candidate's score, ≥ 0.
    damping : float, default=0.1
        Damping γ > 0 added to the K-FAC curvature factors (dimensionless).
    optimizer : {"adam", "adamw", "sgd"}, default="adam"
        Weight optimiser (SGD uses momentum 0.9).
    lr : float, default=3e-3
        Learning rate > 0.
    weight_decay : float or "auto", default="auto"
        L2 penalty (adam, sgd) or decoupled decay (adamw), ≥ 0, on every parameter: the gradient
        gains ``weight_decay · w``. ``"auto"``: 1e-3 for the MLP (``model="mlp"``, the natural and
        fixed policies), the official SENN MNIST experiments' value; 0 for the CNN and the
        EdgeMLP. Measured with 5-fold CV at the defaults (BENCHMARKS.md, "Growth that pays"): on
        the MLP, 1e-3 against 0 scores digits 0.9739 / 0.9711, breast_cancer 0.975 / 0.972,
        friedman1 R² 0.950 / 0.948, wine and diabetes the same, MNIST 0.908 / 0.910 grown, and
        fixed one-hidden-layer nets of 64-256 units on MNIST gain 2.1-2.4 points (their
        validation loss then falls until about epoch 85, not 7); the SECNN setting on digits
        loses 1 point with it (3 folds), so the CNN keeps 0. ``MLPClassifier``'s ``alpha`` adds ``alpha · w / batch_size``
        to the gradient of its weights (not its biases), so ``weight_decay = alpha / batch_size``
        with adam or sgd is the nearest match.
    batch_size : int, default=64
        Minibatch size in samples, ≥ 1.
    max_epochs : int, default=100
        Maximum number of passes over the training data, ≥ 1.
    patience : int or None, default=30
        Early stopping: stop after this many epochs without a lower validation loss (an epoch
        with growth resets the count). ``None`` disables early stopping. The model with the
        lowest validation loss is restored at the end.
    validation_fraction : float, default=0.15
        Fraction in [0, 1) of the training samples held out (for the classifier stratified when
        every class has ≥ 2 samples and the split holds ≥ 1 sample of every class) for early
        stopping and for scoring growth proposals. With ``0`` or fewer than 10 samples no split is made and the
        training data is used for both.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, weight initialisation, minibatch shuffling and candidate
        search. An int gives reproducible fits; the global torch RNG is never touched.
    device : str, default="auto"
        Torch device for training: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``,
        ``"cuda"``, ``"cuda:1"``, ... The fitted model is always moved back to the CPU.
    scale_features : bool, default=True
        Rescale the features on the training split before training an MLP, then fold the map
        into the first linear layer (``W·scale``, ``b + W·shift``), so ``model_`` itself reads raw
        features: predictions, pickles and exported MLflow models need no scaler. When every
        value lies in [0, 1] (images divided by their maximum, indicator matrices: one unit for
        all columns) nothing is changed. Otherwise every column is standardised (scikit-learn's
        ``StandardScaler``, weighted by ``sample_weight``; a constant column is only centred)
        except sparse unit-scale columns (values in [0, 1], at least half of them 0: one-hot,
        rare indicators), which are left as they are; a ``StandardScaler`` in front then changes
        the fit only by float rounding. Why, measured (``bench/input_scaling.py``; docs/design.md,
        "Features are rescaled inside the estimator"): min-max scaling squashes the bulk of a
        column with outliers, standardising rare pixels or rare categories turns them into
        outliers of tens of standard deviations, and rescaling some pixels but not others breaks
        the unit they share. Raw 0–255 images: divide by 255 first, or pass 4-D ``X`` /
        ``image_shape``. Not applied to image inputs (4-D ``X`` or ``image_shape``, whatever the
        model) or to the edge-expansion model.
    warm_start : bool, default=False
        ``True``: a :meth:`fit` on a fitted estimator continues training and growing the fitted
        network ``model_`` (its current architecture and weights; ``hidden_layer_sizes`` and the
        start sizes are then ignored) for up to ``max_epochs`` more epochs, with a new optimiser
        and a new validation split of the new data, the input scaling of the first fit, and the
        capacities (``max_width``, ``max_depth``, ``block_capacity``, ``max_channels``) as set
        now. ``history_`` and ``growth_history_`` go on where they ended and ``n_iter_`` counts
        all epochs, as in ``MLPClassifier``. Raises ``ValueError`` if ``y`` has other classes,
        ``X`` another number of features, or the policy grows another kind of network than the
        fitted one, or if a capacity is now below the fitted network's size.
    verbose : int, default=0
        ``> 0``: show a progress bar (tqdm) and print every growth event.

"""

__all__ = ["SENNClassifier", "SENNRegressor"]

#: Rows per forward pass at inference.
_INFER_CHUNK = 8192
#: Marks a ``model_`` that :meth:`SENNClassifier.__getstate__` replaced by spec + CPU weights.
_PICKLED_MODEL = "__senn_pickled_model__"
#: estimator parameters of the natural policy (other policies take theirs from ``policy_params``)
_NATURAL_PARAMS = ("tau", "growth_alpha", "relative_to", "layer_cost", "expansion_interval", "depth_cooldown",
                   "n_candidates", "candidate_steps", "damping")
#: estimator parameter -> NaturalExpansionPolicy parameter, where the names differ
_POLICY_NAME = {"growth_alpha": "alpha"}
#: fitted-network spec key -> estimator parameter: the capacities a warm start applies anew
_CAPACITY = {"max_width": "max_width", "max_depth": "max_depth", "max_layers": "block_capacity",
             "max_channels": "max_channels"}


def _plain(x):
    """numpy scalars -> Python scalars (GridSearchCV may hand numpy ints/floats to the params)."""
    return x.item() if isinstance(x, (np.integer, np.floating)) else x


class _SENNEstimator(BaseEstimator):
    """What :class:`SENNClassifier` and :class:`SENNRegressor` share: parameters, validation, the
    fit (split, scaling, growth, training) and pickling. A subclass names its task
    (:mod:`senn_automl.scores.tasks`) and encodes its targets."""

    #: the task (loss and metric) of the subclass, and the scikit-learn MLP it parallels
    _task: ClassVar[Task]
    _sklearn_mlp: ClassVar[str]

    def __init__(
        self,
        hidden_layer_sizes=(10,),
        max_width=64,
        max_depth=3,
        policy="natural",
        policy_params=None,
        model="auto",
        image_shape=None,
        start_channels=16,
        start_blocks=3,
        block_capacity=10,
        max_channels=128,
        tau=0.03,
        growth_alpha=2.5e-3,
        relative_to="total",
        layer_cost=20.0,
        expansion_interval=3,
        depth_cooldown=3,
        n_candidates=32,
        candidate_steps=50,
        damping=0.1,
        optimizer="adam",
        lr=3e-3,
        weight_decay="auto",
        batch_size=64,
        max_epochs=100,
        patience=30,
        validation_fraction=0.15,
        scale_features=True,
        random_state=None,
        device="auto",
        warm_start=False,
        verbose=0,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.max_width = max_width
        self.max_depth = max_depth
        self.policy = policy
        self.policy_params = policy_params
        self.model = model
        self.image_shape = image_shape
        self.start_channels = start_channels
        self.start_blocks = start_blocks
        self.block_capacity = block_capacity
        self.max_channels = max_channels
        self.tau = tau
        self.growth_alpha = growth_alpha
        self.relative_to = relative_to
        self.layer_cost = layer_cost
        self.expansion_interval = expansion_interval
        self.depth_cooldown = depth_cooldown
        self.n_candidates = n_candidates
        self.candidate_steps = candidate_steps
        self.damping = damping
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.scale_features = scale_features
        self.random_state = random_state
        self.device = device
        self.warm_start = warm_start
        self.verbose = verbose

    def set_params(self, **params):
        """Set parameters (scikit-learn API). ``alpha`` gets a ``ValueError`` that points to
        ``growth_alpha`` (SENN's threshold) and ``weight_decay`` (the L2 penalty that
        ``MLPClassifier`` calls ``alpha``)."""
        if "alpha" in params:
            raise ValueError(
                f"{type(self).__name__} has no parameter 'alpha': SENN's absolute growth threshold is 'growth_alpha', "
                f"and the L2 penalty that {self._sklearn_mlp} calls 'alpha' is 'weight_decay' (weight_decay = alpha / batch_size "
                f"gives {self._sklearn_mlp}'s penalty)"
            )
        return super().set_params(**params)

    # ------------------------------------------------------------------ tags
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        # Fits are reproducible for a fixed random_state (all randomness is seeded from it).
        tags.non_deterministic = False
        return tags

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> tuple[list[int], Any, TrainConfig]:
        """Validate every parameter (no data needed); return (hidden, policy, train config)."""
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise ValueError(
                f"hidden_layer_sizes={hidden!r} is invalid: use a tuple of positive ints, e.g. (10,), or () for no hidden layer"
            )
        hidden = list(hidden)
        if not all(is_whole(h) and h >= 1 for h in hidden):
            raise ValueError(
                f"hidden_layer_sizes={self.hidden_layer_sizes!r} is invalid: every width must be a whole number >= 1"
            )
        hidden = [int(h) for h in hidden]
        if not (is_whole(self.max_width) and self.max_width >= 1):
            raise ValueError(f"max_width={self.max_width!r} is invalid: use a whole number of neurons >= 1")
        if not (is_whole(self.max_depth) and self.max_depth >= 0):
            raise ValueError(f"max_depth={self.max_depth!r} is invalid: use a whole number of hidden layers >= 0")
        if hidden and self.max_width < max(hidden):
            raise ValueError(
                f"max_width={self.max_width!r} is below the start width {max(hidden)} of hidden_layer_sizes="
                f"{self.hidden_layer_sizes!r}; raise max_width or shrink hidden_layer_sizes"
            )
        if self.max_depth < len(hidden):
            raise ValueError(
                f"max_depth={self.max_depth!r} is below the start depth {len(hidden)} of hidden_layer_sizes="
                f"{self.hidden_layer_sizes!r}; raise max_depth or use fewer hidden layers"
            )
        if not (isinstance(self.policy, str) and self.policy in POLICIES):
            raise ValueError(f"policy={self.policy!r} is unknown; choose one of: {', '.join(map(repr, POLICIES))}")
        vf = _plain(self.validation_fraction)
        if not (is_real(vf) and 0 <= vf < 1):
            raise ValueError(
                f"validation_fraction={self.validation_fraction!r} is invalid: use a fraction in [0, 1), e.g. 0.15 (0 = no split)"
            )
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise ValueError(f"warm_start={self.warm_start!r} is invalid: use True (continue from the fitted network) or False")
        if not isinstance(self.scale_features, (bool, np.bool_)):
            raise ValueError(f"scale_features={self.scale_features!r} is invalid: use True (rescale features inside the model) or False")
        if not (is_whole(self.verbose) or isinstance(self.verbose, bool)):
            raise ValueError(f"verbose={self.verbose!r} is invalid: use an int (0 = silent)")
        # Built for validation whatever the policy (raises ValueError naming the argument).
        natural = {_POLICY_NAME.get(k, k): _plain(getattr(self, k)) for k in _NATURAL_PARAMS}
        try:
            NaturalExpansionPolicy(**natural)
        except ValueError as exc:  # name the estimator's parameter, not the policy's
            names = {v: k for k, v in _POLICY_NAME.items()}
            key = str(exc).split("=", 1)[0]
            if key in names:
                raise ValueError(names[key] + str(exc)[len(key):]) from exc
            raise
        extra = self.policy_params if self.policy_params is not None else {}
        if not isinstance(extra, dict):
            raise ValueError(f"policy_params={extra!r} is invalid: use a dict of policy parameters, e.g. {{'prune_after': 5}}, or None")
        shared = natural if self.policy == "natural" else {}
        policy = make_policy(self.policy, **{**shared, **{k: _plain(v) for k, v in extra.items()}})
        if self.model not in _config.MODELS:
            raise ValueError(f"model={self.model!r} is unknown; choose one of: {', '.join(map(repr, _config.MODELS))}")
        for key in ("start_channels", "start_blocks", "block_capacity", "max_channels"):
            if not (is_whole(getattr(self, key)) and getattr(self, key) >= 1):
                raise ValueError(f"{key}={getattr(self, key)!r} is invalid: use a whole number >= 1")
        weight_decay = _config.weight_decay_for(_plain(self.weight_decay),
                                                _config.model_kind({"model": self.model, "policy": self.policy}))
        config = TrainConfig(
            max_epochs=_plain(self.max_epochs),
            batch_size=_plain(self.batch_size),
            optimizer=self.optimizer,
            lr=_plain(self.lr),
            weight_decay=weight_decay,
            patience=_plain(self.patience),
            restore_best=True,
            seed=0,  # replaced by the seed drawn from random_state in fit
            device=self.device,
            task=self._task.name,
            progress=bool(self.verbose and self.verbose > 0),
        )
        if resolve_device(config.device).type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} is invalid: CUDA is not available here; use 'auto' or 'cpu'")
        return hidden, policy, config

    def _image_shape(self, X) -> tuple[tuple[int, int, int] | None, Any]:
        """(C, H, W) of the images in ``X`` (4-D, or flat rows with ``image_shape``) and ``X``
        flattened to (n, C·H·W); ``(None, X)`` for tabular data. Raises ``ValueError`` for a
        shape that does not match, or images that look channels-last."""
        shape = self.image_shape
        if shape is not None:
            if not (isinstance(shape, (tuple, list)) and len(shape) == 3 and all(is_whole(s) and s >= 1 for s in shape)):
                raise ValueError(f"image_shape={shape!r} is invalid: use (channels, height, width), e.g. (1, 28, 28)")
            shape = tuple(int(s) for s in shape)
        if getattr(X, "ndim", 2) in (3, 4) or shape is not None:
            from senn_automl.data import as_images

            arr = np.asarray(X)
            if arr.ndim == 4 and shape is None:
                shape = tuple(int(s) for s in arr.shape[1:])
                if shape[2] in (1, 3) and shape[0] not in (1, 3):
                    raise ValueError(
                        f"X of shape {arr.shape} looks channels-last (N, H, W, C); pass channels-first images: "
                        "X.transpose(0, 3, 1, 2)"
                    )
            if arr.ndim == 3 and shape is None:
                raise ValueError(f"X has shape {arr.shape}: pass images as (n, C, H, W) or set image_shape")
            if arr.dtype.kind in "fiub":
                return shape, as_images(arr, shape).reshape(len(arr), -1)
        return shape, X

    def _validate_fit_data(self, X, y, warm: bool):
        shape, X = self._image_shape(X)
        try:
            # A warm start keeps n_features_in_ and checks X against it.
            X, y = validate_data(self, X, y, dtype=np.float32, reset=not warm, **self._y_checks)
        except ValueError as exc:
            msg = str(exc)
            if "inconsistent numbers of samples" in msg:
                raise ValueError(f"X and y have inconsistent numbers of samples ({msg}); y needs one target per row of X") from exc
            self._reraise_clear_y_error(exc, y)
            _reraise_clear_X_error(exc)
            raise
        if warm and shape != self.image_shape_:
            raise ValueError(
                f"warm_start=True continues a network fitted on {'images of shape ' + str(self.image_shape_) if self.image_shape_ else 'tabular rows'}, "
                f"but this X gives {'images of shape ' + str(shape) if shape else 'tabular rows'}; pass data like the first fit's or set warm_start=False"
            )
        self.image_shape_ = shape
        return X, y

    #: keyword arguments of ``validate_data`` for ``y``
    _y_checks: ClassVar[dict[str, Any]] = {}

    def _reraise_clear_y_error(self, exc: ValueError, y) -> None:
        """Re-raise a ``validate_data`` error about ``y`` with the fix (subclasses)."""

    def _encode_targets(self, y, warm: bool) -> tuple[np.ndarray, int, np.ndarray | None, Any]:
        """(targets as the trainer takes them, number of network outputs, class indices to stratify
        the validation split by or ``None``, what :meth:`_set_target_attributes` sets); raises
        ``ValueError`` for targets this estimator cannot fit."""
        raise NotImplementedError

    def _fit_targets(self, y_tr: np.ndarray, w_tr: np.ndarray | None, warm: bool):
        """(training targets, validation-target transform, output scaling to fold into the model
        or ``None``): the regressor standardises its targets here."""
        return y_tr, (lambda v: v), None

    def _set_target_attributes(self, y_info) -> None:
        """Set the fitted target attributes (``classes_``, ``n_outputs_``, ...) of this fit."""

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, sample_weight=None):
        """Train (and grow) the network on ``X`` (n_samples, n_features) and targets ``y``
        (classifier: labels (n_samples,); regressor: values (n_samples,) or (n_samples, n_outputs)).

        ``sample_weight`` (n_samples,), optional: non-negative weights per row. Training minimises
        the weighted mean loss ``Σ wᵢ ℓᵢ / Σ wᵢ`` (cross-entropy or squared error); the growth
        statistics (η, λ, K-FAC factors) and the held-out scoring of proposals use rows drawn with
        probability ∝ weight, and early stopping and the best model use the weighted validation
        loss (details in :meth:`Trainer.fit <senn_automl.training.trainer.Trainer.fit>`). The
        validation split takes its rows' weights along. Equal weights give the same fit as no
        weights.

        Returns ``self``. Raises ``ValueError`` naming the argument for bad parameters or data; a
        failing fit leaves the estimator's previous fitted state unchanged.
        """
        saved = dict(self.__dict__)
        try:
            return self._fit(X, y, sample_weight)
        except BaseException:
            # validate_data sets n_features_in_/feature_names_in_ early: undo any partial change.
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _fit(self, X, y, sample_weight):
        hidden, policy, config = self._check_params()
        warm = bool(self.warm_start) and hasattr(self, "model_")
        X, y = self._validate_fit_data(X, y, warm)
        weight = _check_weights(sample_weight, len(y))
        y_enc, n_outputs, strata, y_info = self._encode_targets(y, warm)
        try:
            rng = check_random_state(self.random_state)
        except ValueError as exc:
            raise ValueError(
                f"random_state={self.random_state!r} is invalid: use None, an int or a numpy RandomState ({exc})"
            ) from exc
        seed = int(rng.randint(np.iinfo(np.int32).max))
        split_seed = int(rng.randint(np.iinfo(np.int32).max))
        config.seed = seed
        X_tr, y_tr, X_val, y_val, w_tr, w_val = self._split(X, y_enc, weight, strata, split_seed)
        kind = _config.model_kind({"model": self.model, "policy": self.policy})
        if warm and kind != self._model_kind:
            raise ValueError(
                f"warm_start=True continues the fitted {self._model_kind!r} network, but model={self.model!r} with "
                f"policy={self.policy!r} grows a {kind!r} network; use a policy for the fitted network or set warm_start=False"
            )
        scaler = None
        if warm:
            scaler = self._input_scaler  # the scaling folded into model_, kept whatever scale_features says now
        elif self.scale_features and kind == "mlp" and self.image_shape_ is None:
            # On the training split only, weighted: a row of weight k counts as k copies of it.
            scaler = _FeatureScaling(X_tr, w_tr)
        if scaler is not None:
            X_tr = scaler.transform(X_tr).astype(np.float32)
            X_val = None if X_val is None else scaler.transform(X_val).astype(np.float32)
        y_tr, to_scaled, out_scaler = self._fit_targets(y_tr, w_tr, warm)
        y_val = None if y_val is None else to_scaled(y_val)

        device = resolve_device(config.device)
        fork_devices = []
        if device.type == "cuda":
            fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=fork_devices):
            # Seed only the CPU generator (torch.manual_seed would also reseed every CUDA
            # generator process-wide); the model is built on CPU, so this fixes weight init.
            torch.default_generator.manual_seed(seed)
            if warm:
                model = self._continued_model(scaler, out_scaler)
                config.max_epochs = self.n_iter_ + config.max_epochs  # max_epochs more
            else:
                model = _config.make_model(
                    kind, X.shape[1], n_outputs, hidden=tuple(hidden), max_width=int(self.max_width),
                    max_depth=int(self.max_depth), image_shape=self.image_shape_,
                    channels=(int(self.start_channels),) * int(self.start_blocks),
                    block_capacity=int(self.block_capacity), max_channels=int(self.max_channels),
                )
            callbacks = [PrintGrowth(prefix=f"[{type(self).__name__}] ")] if config.progress else []
            trainer = Trainer(model, policy, config, callbacks)
            if warm:  # epochs, history and growth events go on where the last fit ended
                trainer.epoch = self.n_iter_
                trainer.history = [dict(r) for r in self.history_]
                trainer.growth_log = [GrowthEvent.from_dict(e) for e in self.growth_history_]
            # Inside fork_rng too: layer insertion builds an nn.Linear (global RNG init, then overwritten).
            val = (None, None) if X_val is None else (_tensor(X_val), _tensor(y_val))
            trainer.fit(_tensor(X_tr), _tensor(y_tr), *val, sample_weight=w_tr, val_sample_weight=w_val)

        model = trainer.model.cpu().eval()
        if scaler is not None:
            _fold_feature_scaling(model, scaler.scale_, scaler.shift_)
        if out_scaler is not None:
            _fold_output_scaling(model, out_scaler.scale_, out_scaler.mean_)
        # Set all fitted attributes together, only after everything succeeded.
        self._set_target_attributes(y_info)
        self.model_ = model
        self._input_scaler = scaler
        self._output_scaler = out_scaler
        self._model_kind = kind
        self.growth_history_ = [e.to_dict() for e in trainer.growth_log]
        self.history_ = [dict(r) for r in trainer.history]
        self.n_iter_ = int(trainer.epoch)
        self.n_params_ = int(model.n_params())
        return self

    def _split(self, X, y, weight, strata, seed: int):
        """Hold out ``validation_fraction`` of the rows, each with its weight, stratified by
        ``strata`` (class indices) where every class can be; returns (X_tr, y_tr, X_val, y_val,
        w_tr, w_val), the validation parts ``None`` without a split and the weights ``None``
        without ``weight``."""
        frac = float(_plain(self.validation_fraction))
        n = len(y)
        n_val = math.ceil(frac * n)
        n_tr = n - n_val
        if frac == 0 or n < 10 or n_tr < 1:
            return X, y, None, None, weight, None
        stratify = None
        if strata is not None:
            counts = np.bincount(strata)
            n_classes = len(counts)
            stratify = strata if (counts.min() >= 2 and n_val >= n_classes and n_tr >= n_classes) else None
        w = np.ones(n) if weight is None else weight
        X_tr, X_val, y_tr, y_val, w_tr, w_val = train_test_split(X, y, w, test_size=n_val, random_state=seed, stratify=stratify)
        if weight is None:
            return X_tr, y_tr, X_val, y_val, None, None
        return X_tr, y_tr, X_val, y_val, w_tr, w_val

    def _continued_model(self, scaler, out_scaler):
        """A copy of ``model_`` with the capacities set now and the input (and output) scaling
        unfolded (the trainer sees scaled features and targets again). Raises ``ValueError`` when
        a capacity is below the fitted network's size."""
        spec = self.model_.spec()
        for key, param in _CAPACITY.items():
            if key in spec:
                spec[key] = int(getattr(self, param))
        try:
            model = model_from_spec(spec)
        except ValueError as exc:
            key = str(exc).split("=", 1)[0]
            name = f"{_CAPACITY[key]}={spec[key]}" if key in _CAPACITY else "a capacity"
            raise ValueError(
                f"warm_start=True continues the fitted network (hidden {self.model_.hidden}), which {name} cannot hold "
                f"({exc}); raise it or set warm_start=False"
            ) from exc
        model.load_state_dict(self.model_.state_dict())
        if scaler is not None:
            _fold_feature_scaling(model, scaler.scale_, scaler.shift_, inverse=True)
        if out_scaler is not None:
            _fold_output_scaling(model, out_scaler.scale_, out_scaler.mean_, inverse=True)
        return model

    # ------------------------------------------------------------------ inference
    def _outputs(self, X) -> torch.Tensor:
        """The network's outputs (n_samples, n_outputs) on ``X``, float64, computed on a float64
        copy of the model (the fitted model is not modified)."""
        check_is_fitted(self)
        if getattr(X, "ndim", 2) in (3, 4):
            X = np.asarray(X).reshape(len(X), -1)
        try:
            X = validate_data(self, X, dtype=np.float64, reset=False)
        except ValueError as exc:
            _reraise_clear_X_error(exc)
            raise
        model = copy.deepcopy(self.model_).cpu().double().eval()
        Xt = torch.tensor(X, dtype=torch.float64)
        with torch.no_grad():
            out = [model(Xt[i : i + _INFER_CHUNK]) for i in range(0, len(Xt), _INFER_CHUNK)]
        return torch.cat(out) if out else torch.zeros((0, _n_outputs(self.model_)), dtype=torch.float64)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        # A copy: object.__getstate__ (used by BaseEstimator's) returns self.__dict__ itself.
        state = dict(super().__getstate__())
        model = state.get("model_")
        if isinstance(model, torch.nn.Module) and hasattr(model, "spec"):
            state["model_"] = {
                _PICKLED_MODEL: True,
                "spec": model.spec(),
                "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
        return state

    def __setstate__(self, state):
        model = state.get("model_")
        if isinstance(model, dict) and model.get(_PICKLED_MODEL):
            state = dict(state)
            with torch.random.fork_rng(devices=[]):  # from_spec initialises weights with the global RNG
                rebuilt = model_from_spec(model["spec"])
            rebuilt.load_state_dict(model["state_dict"])
            state["model_"] = rebuilt.eval()
        super().__setstate__(state)


class SENNClassifier(ClassifierMixin, _SENNEstimator):
    """Self-expanding neural network classifier (SENN, Mitchell et al., arXiv:2307.04526).

    An MLP with per-neuron rational activations that starts at ``hidden_layer_sizes`` and, every
    ``expansion_interval`` epochs, adds neurons or whole hidden layers when the natural expansion
    score says the addition would reduce the loss enough: a proposal is accepted when
    ``Δη'/η > tau`` **and** ``Δη'/λ > growth_alpha`` (arXiv:2307.04526, §3.3, Theorem 3.1). Every
    edit is function-preserving, so training continues smoothly after growth.

    Names follow ``MLPClassifier`` where the meaning is the same (``hidden_layer_sizes``,
    ``batch_size``, ``validation_fraction``, ``warm_start``, ``random_state``). SENN's absolute
    threshold α is ``growth_alpha``, not ``alpha``, because ``MLPClassifier``'s ``alpha`` is the L2
    penalty (here ``weight_decay``); ``set_params(alpha=...)`` raises a ``ValueError`` that names
    both.

{params}    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (sorted).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, only when ``X`` had string column names.
    image_shape_ : tuple (C, H, W) or None
        Image shape the model reads each row as (from 4-D ``X`` or ``image_shape``).
    model_ : GrowingMLP, GrowingCNN or EdgeMLP
        The trained (possibly grown) network, on CPU, in eval mode; ``n_classes`` outputs
        (2 for a binary problem). It is the model of the epoch with the lowest validation loss,
        so it may be smaller than the last architecture in ``growth_history_``.
    growth_history_ : list of dict
        Every accepted growth event during training (:meth:`GrowthEvent.to_dict`: ``step``,
        ``epoch``, ``kind``, ``where``, ``score``, ``eta``, ``lam``, ``ratio``, ``tau``,
        ``alpha``, ``params_before``, ``params_after``, ``hidden_after``, ``max_abs_diff``).
    history_ : list of dict
        One record per epoch (``train_loss``, ``val_loss``, ``val_acc``, ``n_params``,
        ``hidden``, ...), from :attr:`Trainer.history`.
    n_iter_ : int
        Number of epochs run (≥ 1).
    n_params_ : int
        Number of trainable parameters of ``model_``.

    Notes
    -----
    All parameters are checked at the start of :meth:`fit`, before any fitted attribute is set;
    a failing fit (bad parameter or bad data) raises ``ValueError`` naming the argument and
    leaves a previously fitted estimator exactly as it was.

    References
    ----------
    R. Mitchell, R. Menzenbach, K. Kersting, M. Mundt, "Self-Expanding Neural Networks",
    arXiv:2307.04526.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from senn_automl.integrations.estimator import SENNClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = SENNClassifier(max_epochs=10, n_candidates=16, candidate_steps=10, random_state=0).fit(X, y)
    >>> clf.predict(X[:2]).shape
    (2,)
    """

    _task = CLASSIFICATION
    _sklearn_mlp = "MLPClassifier"

    def _encode_targets(self, y, warm: bool):
        try:
            check_classification_targets(y)
        except ValueError as exc:
            if "continuous" in str(exc):
                raise ValueError(
                    f"y holds continuous values ({exc}); SENNClassifier needs class labels: for regression "
                    "use SENNRegressor, or bin y into classes"
                ) from exc
            raise
        classes, y_enc = np.unique(y, return_inverse=True)
        if warm and not np.array_equal(classes, self.classes_):
            raise ValueError(
                f"warm_start=True continues a network fitted on classes {self.classes_.tolist()}, but y has classes "
                f"{classes.tolist()}; pass the same classes or set warm_start=False"
            )
        if len(classes) < 2:
            raise ValueError(
                f"y has a single class (found 1 class, {classes.tolist()[0]!r}, in {len(y)} sample(s)); "
                "a classifier needs at least 2 classes: pass samples of at least two classes"
            )
        y_enc = y_enc.astype(np.int64).reshape(-1)
        return y_enc, len(classes), y_enc, classes

    def _set_target_attributes(self, classes) -> None:
        self.classes_ = classes

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in the order of ``classes_``.

        Computed in float64 on a float64 copy of the model (the fitted model is not modified).
        """
        return torch.softmax(self._outputs(X), dim=1).numpy()

    def predict(self, X):
        """Predicted class labels, shape (n_samples,)."""
        proba = self.predict_proba(X)  # first: raises NotFittedError before classes_ is touched
        return self.classes_[np.argmax(proba, axis=1)]


if SENNClassifier.__doc__:  # None under python -OO
    SENNClassifier.__doc__ = SENNClassifier.__doc__.format(params=_PARAMETERS_DOC.strip("\n") + "\n\n")


class SENNRegressor(RegressorMixin, _SENNEstimator):
    """Self-expanding neural network regressor (SENN, Mitchell et al., arXiv:2307.04526).

    The network, the growth policies and every parameter are those of :class:`SENNClassifier`;
    the loss is the squared error (:data:`senn_automl.scores.tasks.REGRESSION`: the mean over
    outputs of ``(y − t)²``), for which η, λ, Δη' and the thresholds ``tau`` and ``growth_alpha``
    keep their meaning (they depend on the loss only through the output gradients, and are
    invariant to its scale). Early stopping and the best model use the validation MSE; the
    history records ``val_r2``, the R² averaged over outputs. ``score`` is R²
    (``RegressorMixin``).

    Targets are standardised on the training split (per output: mean 0, variance 1; sample
    weights taken into account) and the map is folded into the network's output layer after
    training (``W ← diag(σ)·W``, ``b ← σ·b + μ``), so ``model_`` itself predicts in the units of
    ``y``: predictions, pickles and exported MLflow models need no scaler. Multi-output ``y`` of
    shape (n_samples, n_outputs) fits one network with ``n_outputs`` outputs.

    Names follow ``MLPRegressor`` where the meaning is the same; ``set_params(alpha=...)``
    raises a ``ValueError`` naming ``growth_alpha`` and ``weight_decay``.

{params}
    Attributes
    ----------
    n_outputs_ : int
        Number of targets (1 for a 1-D ``y``).
    n_features_in_, feature_names_in_, image_shape_, growth_history_, n_iter_, n_params_
        As in :class:`SENNClassifier`.
    model_ : GrowingMLP, GrowingCNN or EdgeMLP
        The trained network, on CPU, in eval mode, ``n_outputs_`` outputs in the units of ``y``;
        the model of the epoch with the lowest validation MSE.
    history_ : list of dict
        One record per epoch (``train_loss`` and ``val_loss``: MSE of the standardised targets,
        ``val_r2``, ``n_params``, ``hidden``, ...).

    Notes
    -----
    Bad targets raise ``ValueError`` before any training: non-numeric (class labels: use
    :class:`SENNClassifier`), non-finite, of the wrong length, or with more than 2 dimensions.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from senn_automl.integrations.estimator import SENNRegressor
    >>> X, y = load_diabetes(return_X_y=True)
    >>> reg = SENNRegressor(max_epochs=10, n_candidates=16, candidate_steps=10, random_state=0).fit(X, y)
    >>> reg.predict(X[:2]).shape
    (2,)
    """

    _task = REGRESSION
    _sklearn_mlp = "MLPRegressor"
    _y_checks = {"multi_output": True, "y_numeric": True}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _reraise_clear_y_error(self, exc: ValueError, y) -> None:
        msg = str(exc)
        if "could not convert" in msg or "dtype='numeric' is not compatible" in msg:
            raise ValueError(
                f"y must be numeric ({msg}); SENNRegressor fits numbers: for class labels use SENNClassifier"
            ) from exc
        if "Found array with dim" in msg:
            raise ValueError(
                f"y has {np.ndim(y)} dimensions ({msg}); pass y of shape (n_samples,) or (n_samples, n_outputs)"
            ) from exc
        if "Input y contains" in msg or "y contains" in msg:
            raise ValueError(f"y has non-finite values ({msg}): drop or impute those rows first") from exc

    def _encode_targets(self, y, warm: bool):
        kind = np.asarray(y).dtype.kind
        if kind not in "fiu":
            what = {"b": "booleans", "U": "strings", "S": "strings"}.get(kind, f"values of dtype {np.asarray(y).dtype}")
            raise ValueError(f"y holds {what}: SENNRegressor fits numbers; for class labels use SENNClassifier")
        y = np.asarray(y, dtype=np.float64)
        one = y.ndim == 1
        y2 = y.reshape(len(y), -1)
        if warm and y2.shape[1] != self.n_outputs_:
            raise ValueError(
                f"warm_start=True continues a network fitted on {self.n_outputs_} output(s), but y has "
                f"{y2.shape[1]}; pass targets like the first fit's or set warm_start=False"
            )
        return y2, y2.shape[1], None, (y2.shape[1], one)

    def _fit_targets(self, y_tr, w_tr, warm: bool):
        scaler = self._output_scaler if warm else StandardScaler().fit(
            y_tr, sample_weight=None if w_tr is None else w_tr)

        def to_scaled(v):
            return scaler.transform(v).astype(np.float32)

        return to_scaled(y_tr), to_scaled, scaler

    def _set_target_attributes(self, info) -> None:
        self.n_outputs_, self._y_1d = info

    def predict(self, X):
        """Predicted values in the units of ``y``: shape (n_samples,) for a 1-D ``y``, else
        (n_samples, n_outputs_). Computed in float64 on a float64 copy of the model."""
        out = self._outputs(X).numpy()
        return out[:, 0] if self._y_1d else out


if SENNRegressor.__doc__:
    SENNRegressor.__doc__ = SENNRegressor.__doc__.format(params=_PARAMETERS_DOC.strip("\n") + "\n")


def _output_layer(model):
    """The last linear map of a growable model (``weight`` (k, d), ``bias`` (k,)): an MLP's last
    linear layer, a CNN's ``fc``, an EdgeMLP's last expanding layer."""
    if hasattr(model, "fc"):
        return model.fc
    if hasattr(model, "linears"):
        return model.linears[-1]
    return model.layers[-1]


def _n_outputs(model) -> int:
    return int(_output_layer(model).bias.shape[0])


@torch.no_grad()
def _fold_output_scaling(model, scale: np.ndarray, shift: np.ndarray, inverse: bool = False) -> None:
    """Fold ``y ↦ y·scale + shift`` (per output, ``scale > 0``) into the output layer:
    ``W ← diag(scale)·W``, ``b ← scale·b + shift`` (float64), so the model predicts in the units
    the targets were standardised from; ``inverse=True`` undoes it."""
    lin = _output_layer(model)
    W, b = lin.weight.double(), lin.bias.double()
    scale = torch.as_tensor(scale, dtype=torch.float64)
    shift = torch.as_tensor(shift, dtype=torch.float64)
    if inverse:
        W, b = W / scale[:, None], (b - shift) / scale
    else:
        W, b = W * scale[:, None], b * scale + shift
    lin.weight.copy_(W.to(lin.weight))
    lin.bias.copy_(b.to(lin.bias))


class _FeatureScaling:
    """The input scaling of ``scale_features=True``: ``x ↦ x·scale_ + shift_`` per feature, fitted
    on ``X`` (n_samples, n_features) with optional ``sample_weight`` (n_samples,): a row of weight k
    counts as k copies, a row of weight 0 as removed.

    - Every value of ``X`` in [0, 1] (images divided by their maximum, indicator matrices): one
      unit shared by all columns, left as it is (``scale_ = 1``, ``shift_ = 0``).
    - Otherwise the columns are in different units: sparse unit-scale columns (values in [0, 1],
      at least half of them 0: one-hot, rare indicators) are left as they are, every other column
      is standardised (``StandardScaler``'s ``1/scale_`` and ``−mean_/scale_``; a constant
      column has ``scale_`` 1).

    Both arrays are float64 (n_features,), scales positive."""

    def __init__(self, X: np.ndarray, sample_weight: np.ndarray | None = None):
        X = np.asarray(X, dtype=np.float64)
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        kept = X[w > 0]
        unit = (kept.min(axis=0) >= 0) & (kept.max(axis=0) <= 1)
        if unit.all():
            self.scale_, self.shift_ = np.ones(X.shape[1]), np.zeros(X.shape[1])
            return
        std = StandardScaler().fit(X, sample_weight=w)
        keep = unit & ((w[:, None] * (X == 0)).sum(axis=0) / w.sum() >= 0.5)
        self.scale_ = np.where(keep, 1.0, 1.0 / std.scale_)
        self.shift_ = np.where(keep, 0.0, -std.mean_ / std.scale_)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return X * self.scale_ + self.shift_


@torch.no_grad()
def _fold_feature_scaling(model, scale: np.ndarray, shift: np.ndarray, inverse: bool = False) -> None:
    """Fold ``x ↦ x·scale + shift`` (per feature, ``scale > 0``) into the first linear layer of
    ``model`` (a GrowingMLP): ``W ← W·diag(scale)``, ``b ← b + W·shift``, computed in float64. The
    model then maps raw features to the outputs the trained one gave on scaled features.
    ``inverse=True`` undoes it (``W ← W·diag(1/scale)``, ``b ← b − W·shift``)."""
    lin = model.linears[0]
    W, b = lin.weight.double(), lin.bias.double()
    scale = torch.as_tensor(scale, dtype=torch.float64)
    shift = torch.as_tensor(shift, dtype=torch.float64)
    if inverse:
        W = W / scale
        b = b - W @ shift
    else:
        b = b + W @ shift
        W = W * scale
    lin.weight.copy_(W.to(lin.weight))
    lin.bias.copy_(b.to(lin.bias))


def _check_weights(sample_weight, n: int) -> np.ndarray | None:
    """``sample_weight`` as a float64 (n,) array, or ``None``: converted by ``check_array`` (lists,
    pandas, NaN), then checked by :func:`~senn_automl.training.trainer.check_sample_weight`."""
    if sample_weight is None:
        return None
    w = check_array(sample_weight, ensure_2d=False, dtype=np.float64, input_name="sample_weight")
    return check_sample_weight(w, n).numpy()


def _tensor(a: np.ndarray) -> torch.Tensor:
    # A copy: the input may be a read-only memmap, which torch.as_tensor would warn about.
    return torch.tensor(np.ascontiguousarray(a))


def _reraise_clear_X_error(exc: ValueError) -> None:
    """Re-raise validate_data messages that do not say which input is wrong, naming X."""
    msg = str(exc)
    if "could not convert" in msg:
        raise ValueError(
            f"X must be numeric: {msg}. Encode string/categorical features first, e.g. with OneHotEncoder or OrdinalEncoder"
        ) from exc
    if "0 sample(s)" in msg:
        raise ValueError(f"X is empty: {msg}") from exc
    if "0 feature(s)" in msg:
        raise ValueError(f"X has no features: {msg}") from exc
