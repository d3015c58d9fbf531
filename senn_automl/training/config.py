"""One flat configuration dict → model, growth policy and training settings (torch only).

The keys of this dict are the vocabulary shared by ``senn-automl fit``, the search spaces in
``search_spaces/*.yaml`` and the Ray Tune trainable. Unknown keys raise ``ValueError``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from senn_automl.growth.base import POLICIES, GrowthPolicy, make_policy, policy_defaults, policy_params
from senn_automl.models.mlp import GrowingMLP
from senn_automl.training.trainer import TrainConfig
from senn_automl.validation import is_whole, require

__all__ = ["AUTO_WEIGHT_DECAY", "DEFAULTS", "POLICY_KEYS", "TRAIN_KEYS", "MODEL_KEYS", "MODELS", "build", "make_model",
           "model_kind", "reconfigure", "resolve", "typed_default", "weight_decay_for"]

MODEL_KEYS = (
    "model", "start_width", "start_depth", "max_width", "max_depth",
    "start_channels", "start_blocks", "block_capacity", "max_channels",
)
#: model kinds: "mlp" (GrowingMLP), "cnn" (GrowingCNN, needs images), "edge" (EdgeMLP);
#: "auto" picks the one the policy grows (edges → edge, secnn → cnn, otherwise mlp).
MODELS = ("auto", "mlp", "cnn", "edge")
_MODEL_FOR_POLICY = {"edges": "edge", "secnn": "cnn"}
#: ``weight_decay="auto"`` for the MLP: the official SENN MNIST experiments' value (their configs
#: ``experiment3`` and ``experiment4``, ``opt.weight_decay: 1.0e-3``); 0 for the CNN and the EdgeMLP
#: (measured in BENCHMARKS.md, "Growth that pays", and ``SENNClassifier``'s ``weight_decay`` doc).
AUTO_WEIGHT_DECAY = 1e-3


def _policy_defaults() -> dict[str, Any]:
    """Defaults of every policy parameter; a key shared by several policies takes the natural
    policy's default (each policy receives only its own keys, see :func:`build`)."""
    out: dict[str, Any] = {}
    for name in reversed(list(POLICIES)):  # earlier-registered policies win: natural first
        out.update(policy_defaults(name))
    return out


_POLICY_DEFAULTS = _policy_defaults()
POLICY_KEYS = tuple(_POLICY_DEFAULTS)
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig))

#: Defaults of every key. MLP: one hidden layer of 10 neurons, capacity 64 wide × 3 deep
#: (``start_depth=0`` is logistic regression). CNN: 3 blocks of 16 channels (SECNN's start), at
#: most 10 conv layers per block (``block_capacity``, SECNN's N) and 128 channels.
DEFAULTS: dict[str, Any] = {
    "policy": "natural",
    "model": "auto",
    "start_width": 10,
    "start_depth": 1,
    "max_width": 64,
    "max_depth": 3,
    "start_channels": 16,
    "start_blocks": 3,
    "block_capacity": 10,
    "max_channels": 128,
    **_POLICY_DEFAULTS,
    **{f.name: f.default for f in dataclasses.fields(TrainConfig)},
    "weight_decay": "auto",
}


def typed_default(key: str) -> Any:
    """A value of the type ``key`` takes: its default, or for ``weight_decay`` (default ``"auto"``,
    a number otherwise) :data:`AUTO_WEIGHT_DECAY`. Raises ``KeyError`` for an unknown key."""
    return AUTO_WEIGHT_DECAY if key == "weight_decay" else DEFAULTS[key]


def weight_decay_for(value: Any, kind: str) -> Any:
    """``value`` with ``"auto"`` resolved for a model of ``kind``: :data:`AUTO_WEIGHT_DECAY` for
    the MLP, 0 otherwise. Any other value is returned as given (``TrainConfig`` checks it).
    Raises ``ValueError`` for any other string."""
    if isinstance(value, str):
        require(value == "auto", "weight_decay", value, "use 'auto' or a number >= 0, e.g. 1e-3")
        return AUTO_WEIGHT_DECAY if kind == "mlp" else 0.0
    return value


def resolve(config: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Merge ``config`` and ``overrides`` over :data:`DEFAULTS`, with the chosen policy's own
    defaults for its parameters (e.g. ``when="plateau"`` for ``policy="edges"``).

    Raises ``ValueError`` naming unknown keys.
    """
    merged = {**(config or {}), **overrides}
    unknown = sorted(set(merged) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown configuration key(s) {unknown}; valid keys: {', '.join(sorted(DEFAULTS))}")
    policy = merged.get("policy", DEFAULTS["policy"])
    own = policy_defaults(policy) if isinstance(policy, str) and policy in POLICIES else {}
    return {**DEFAULTS, **own, **merged}


def model_kind(config: dict[str, Any]) -> str:
    """The model kind a (resolved) config builds: its ``model``, or for ``"auto"`` the policy's."""
    kind = config.get("model", "auto")
    if kind not in MODELS:
        raise ValueError(f"model={kind!r} is unknown; choose one of: {', '.join(MODELS)}")
    return _MODEL_FOR_POLICY.get(config.get("policy"), "mlp") if kind == "auto" else kind


def make_model(
    kind: str,
    n_features: int,
    n_outputs: int,
    *,
    hidden: tuple[int, ...] = (10,),
    max_width: int = 64,
    max_depth: int = 3,
    image_shape: tuple[int, int, int] | None = None,
    channels: tuple[int, ...] = (16, 16, 16),
    block_capacity: int = 10,
    max_channels: int = 128,
):
    """A fresh growable model of ``kind`` ("mlp", "edge" or "cnn"; see :data:`MODELS`).

    Uses the global torch RNG for weights (seed it, or wrap in ``torch.random.fork_rng``).
    Raises ``ValueError`` for a CNN without a matching ``image_shape`` (C, H, W), C·H·W =
    ``n_features``, and for sizes the model rejects.
    """
    if kind == "mlp":
        return GrowingMLP(n_features, n_outputs, hidden, max_width=max_width, max_depth=max_depth)
    if kind == "edge":
        from senn_automl.models.edge_mlp import EdgeMLP

        return EdgeMLP(n_features, n_outputs, hidden)
    if kind != "cnn":
        raise ValueError(f"model={kind!r} is unknown; choose one of: {', '.join(MODELS[1:])}")
    if image_shape is None:
        raise ValueError(
            "model='cnn' needs images, but this data has no image shape; use an image dataset "
            "(digits, mnist, fashion_mnist, cifar10), pass 4-D images (n, C, H, W) or image_shape=(C, H, W)"
        )
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[0] * shape[1] * shape[2] != n_features:
        raise ValueError(f"image_shape={shape} does not match {n_features} features per row; C·H·W must equal it")
    from senn_automl.models.cnn import GrowingCNN

    return GrowingCNN(shape, n_outputs, tuple(channels), max_layers=block_capacity, max_channels=max_channels)


def build(
    config: dict[str, Any], n_features: int, n_outputs: int, image_shape: tuple[int, int, int] | None = None
) -> tuple[Any, GrowthPolicy, TrainConfig]:
    """Build ``(model, policy, train_config)`` from a flat config (see :func:`resolve`).

    ``n_outputs``: classes, or regression targets (with ``task="regression"`` in ``config``).
    MLP and edge models have ``start_depth`` hidden layers of ``start_width`` neurons
    (``start_depth=0`` is a linear model, logistic regression). The CNN has ``start_blocks``
    blocks of ``start_channels`` channels and needs ``image_shape`` (C, H, W) with
    C·H·W = ``n_features`` (it reads flat rows as images). Raises ``ValueError`` for any invalid
    value (naming the key), for a CNN without image shape, and for a policy that cannot grow
    the model.
    """
    c = resolve(config)
    kind = model_kind(c)
    ints = {"start_width": 1, "start_depth": 0, "start_channels": 1, "start_blocks": 1, "block_capacity": 1}
    for key, low in ints.items():
        require(is_whole(c[key]) and c[key] >= low, key, c[key], f"use a whole number >= {low}")
    policy = make_policy(c["policy"], **{k: c[k] for k in policy_params(c["policy"])})
    train = TrainConfig(**{**{k: c[k] for k in TRAIN_KEYS}, "weight_decay": weight_decay_for(c["weight_decay"], kind)})
    # Weight init seeded without touching the process's RNGs: fork_rng restores the CPU generator,
    # and seeding only that one leaves every CUDA generator alone (torch.manual_seed reseeds them all).
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(c["seed"]))
        model = make_model(
            kind, n_features, n_outputs, hidden=(c["start_width"],) * c["start_depth"], max_width=c["max_width"],
            max_depth=c["max_depth"], image_shape=image_shape, channels=(c["start_channels"],) * c["start_blocks"],
            block_capacity=c["block_capacity"], max_channels=c["max_channels"],
        )
    policy.check_model(model)
    return model, policy, train


def reconfigure(trainer, config: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Put the growth settings and the learning rate of ``config`` in force on a trainer rebuilt by
    :func:`~senn_automl.training.trainer.load_checkpoint`, which restores the checkpoint's own.
    Population-based training changes them between a checkpoint and its restore (explore), and
    the network, optimiser state and policy state must carry over (exploit).

    The policy's parameters (``policy_params``) that differ give a new policy of the same kind
    with the old one's state (counters, warm starts); ``lr`` is set in every optimiser parameter
    group. Returns ``{key: (old, new)}`` of what changed (empty when nothing did). Raises
    ``ValueError`` when ``config`` names another policy kind or an invalid value.
    """
    c = resolve(config)
    old = trainer.policy.config()
    name = old.pop("policy")
    if c["policy"] != name:
        raise ValueError(f"policy={c['policy']!r} differs from the checkpoint's {name!r}: a restored trainer keeps its "
                         f"policy kind (its state belongs to it); start a new run to change the policy")
    want = {k: c[k] for k in policy_params(name)}
    changed: dict[str, tuple[Any, Any]] = {k: (old.get(k), v) for k, v in want.items() if old.get(k) != v}
    if changed:
        policy = make_policy(name, **{**old, **want})
        policy.load_state_dict(trainer.policy.state_dict())
        policy.load_tensor_state(trainer.policy.tensor_state(), trainer.model)
        policy.check_model(trainer.model)
        trainer.policy = policy
    if c["lr"] != trainer.config.lr:
        require(isinstance(c["lr"], (int, float)) and c["lr"] > 0, "lr", c["lr"], "use a number > 0")
        changed["lr"] = (trainer.config.lr, c["lr"])
        trainer.config = dataclasses.replace(trainer.config, lr=c["lr"])
        for group in trainer.optimizer.param_groups:
            group["lr"] = c["lr"]
    return changed
