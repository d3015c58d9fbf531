"""The contract of a growth policy, its events and its registry (torch only).

A policy decides *when* to grow (:mod:`senn_automl.growth.triggers`), *where* and *what*
(scored candidates from :mod:`senn_automl.scores`), and applies edits through the trainer's
``apply`` callback, which checks function preservation and carries the optimiser state over.
Every accepted change becomes an immutable :class:`GrowthEvent`.

Policies register themselves with :func:`register_policy`; :func:`make_policy` builds one by
name. Adding a policy means writing one module in this package, nothing below it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn

from senn_automl.growth.triggers import should_check, validate_when
from senn_automl.scores.tasks import CLASSIFICATION, Task
from senn_automl.validation import TINY, as_list, as_tuple, require_bool

__all__ = [
    "Apply", "GrowthContext", "EVENT_KINDS", "GrowthEvent", "GrowthPolicy", "POLICIES", "register_policy",
    "make_policy", "policy_class", "policy_defaults", "policy_params",
]

#: the trainer's edit callback: ``apply(edit, check=True)`` runs ``edit(model) -> list[ParamChange]``
Apply = Callable[..., Any]


@dataclass(frozen=True)
class GrowthContext:
    """What the trainer hands a policy after an epoch.

    X, y : the scoring batch, training rows ((N, ...) inputs, targets as ``task.targets`` gives
    them: (N,) class indices or (N, k) values), drawn ∝ the
    sample weights when training is weighted (so plain means over them estimate weighted ones);
    epoch : the 0-based epoch just finished (``-1``: before the first, :meth:`GrowthPolicy.start`); history : one metrics dict per *earlier* epoch
    (``record["val_loss"]``, ...); apply : ``apply(edit, check=True)`` applies
    ``edit(model) -> list[ParamChange]`` (``check=False`` for pruning, which changes the function
    on purpose); X_val, y_val : held-out rows (``None`` without a validation split; drawn ∝
    the validation weights when those are given);
    generator : CPU ``torch.Generator`` for the policy's random draws; task : the
    :class:`~senn_automl.scores.tasks.Task` whose per-sample loss every score differentiates.
    """

    X: torch.Tensor
    y: torch.Tensor
    epoch: int
    apply: Apply
    history: Sequence[dict[str, Any]] = ()
    X_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    generator: torch.Generator | None = None
    task: Task = CLASSIFICATION

    @property
    def has_val(self) -> bool:
        """Whether held-out rows (at least 2) are given."""
        return self.X_val is not None and len(self.X_val) >= 2


#: event kinds: SENN neuron / layer, units added by the effective-rank rule (NORTH*), SECNN conv layer / channels, edge expansion, pruning
EVENT_KINDS = ("neuron", "layer", "units", "conv_layer", "channels", "edges", "prune")


@dataclass(frozen=True)
class GrowthEvent:
    """One accepted structural change.

    kind : one of :data:`EVENT_KINDS`; where : hidden layer index (neuron, units), insertion position
    (layer), block index (conv_layer, channels), expandable layer index (edges) or the layer
    / block pruned; score : the accepted candidate's score (Δη' for SENN, held-out and debiased
    when a validation split is given, divided by the layer cost multiplier for layers; the effective-rank
    fraction r/m of the layer before the addition for units (ratio too; tau is γ); the
    regularised natural expansion score for SECNN; the mean normalised edge metric for edges;
    the removed η-share or metric for pruning); eta, lam : the network's total η (debiased on
    held-out data) and λ = E‖∂ℓ/∂y‖² on the data the thresholds were measured on (``nan`` where
    not used); ratio : score / η reference (total or consumer η_c, per ``relative_to``; on
    held-out data floored at α·λ); tau, alpha :
    thresholds in force (``nan`` where not used); params_before/after : parameter counts;
    hidden_after : the model's ``hidden`` summary after the change (nested tuples of ints);
    max_abs_diff : measured output change on the probe batch; n : how many neurons, channels,
    edges or units were added or removed; detail : free text for logs.
    """

    step: int
    epoch: int
    kind: str
    where: int
    score: float
    eta: float
    lam: float
    ratio: float
    tau: float
    alpha: float
    params_before: int
    params_after: int
    hidden_after: tuple
    max_abs_diff: float = 0.0
    n: int = 1
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_after"] = as_list(self.hidden_after)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GrowthEvent":
        return cls(**{**d, "hidden_after": as_tuple(d["hidden_after"])})

    def describe(self) -> str:
        """One human-readable line: what changed where, the score against its threshold, sizes."""
        what = {
            "neuron": f"added a neuron at hidden layer {self.where}" if self.n == 1 else f"added {self.n} neurons at hidden layer {self.where}",
            "layer": f"inserted a layer at position {self.where}",
            "units": f"added {self.n} unit(s) at hidden layer {self.where}",
            "conv_layer": f"added a conv layer to block {self.where}",
            "channels": f"widened block {self.where} by {self.n} channels",
            "edges": f"expanded {self.n} edges of layer {self.where}",
            "prune": f"pruned {self.n} edge(s)/neuron(s) of layer {self.where}",
        }.get(self.kind, f"{self.kind} at {self.where}")
        senn = self.kind in ("neuron", "layer")  # SENN's score is Δη' (a layer's divided by its cost)
        score_name, ratio_name = ("Δη'", "Δη'/η") if senn else ("score", "ratio")
        if self.kind == "units":  # NORTH*: the rank fraction r/m (its threshold γ is in the detail)
            score_name = "rank r/m"
        parts = [f"epoch {self.epoch + 1:>4}: {what}", f"{score_name}={self.score:.4g}"]
        if math.isfinite(self.ratio) and self.kind != "units":
            parts.append(f"{ratio_name}={self.ratio:.3f}")
        if senn and math.isfinite(self.lam):
            parts.append(f"Δη'/λ={self.score / max(self.lam, TINY):.4f}")
        parts.append(f"params {self.params_before} -> {self.params_after}")
        parts.append(f"arch {as_list(self.hidden_after)}")
        if self.detail:
            parts.append(self.detail)
        return "  ".join(parts)


@dataclass
class GrowthPolicy(ABC):
    """Abstract growth policy, and the "when" shared by every policy.

    The trainer calls :meth:`step` after every epoch but the last, with a :class:`GrowthContext`.
    ``step`` runs :meth:`prune` (a policy that prunes decides itself when it is due) and, when
    :meth:`should_check` says so, one growth check :meth:`grow`. Subclasses implement ``grow``
    and may override ``prune``; both return the :class:`GrowthEvent` s of the edits they applied
    through ``ctx.apply`` and leave the model unchanged otherwise.

    When (:mod:`senn_automl.growth.triggers`): ``when="interval"`` checks every
    ``expansion_interval`` epochs; ``when="plateau"`` when the mean |Δ val_loss| over
    ``plateau_window`` epochs is below ``plateau_threshold``; either waits ``min_gap`` epochs
    after the last growth event. ``check_at_start``: also one check on the untrained network,
    before the first epoch (:meth:`start`; its events have ``epoch = -1`` and do not start the
    ``min_gap`` wait).

    ``model_types`` lists the model spec types a policy can grow (``None``: any);
    :meth:`check_model` raises ``ValueError`` for others. ``config()`` is JSON-able;
    ``state_dict``/``load_state_dict`` carry counters through checkpoints. Constructor
    arguments are checked by :meth:`validate` (``ValueError`` naming the bad one).
    """

    name: ClassVar[str] = "base"
    model_types: ClassVar[tuple[str, ...] | None] = None
    when: str = "interval"
    expansion_interval: int = 10
    plateau_window: int = 3
    plateau_threshold: float = 1e-3
    min_gap: int = 5
    check_at_start: bool = False
    #: total η measured at the start of the latest check (None before the first check)
    last_eta: float | None = field(default=None, repr=False, compare=False)
    _last_event_epoch: int | None = field(default=None, repr=False)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        validate_when(self.when, self.expansion_interval, self.plateau_window, self.plateau_threshold, self.min_gap)
        require_bool("check_at_start", self.check_at_start)

    def check_model(self, model) -> None:
        """Raise ``ValueError`` if this policy cannot grow ``model`` (by its spec type)."""
        kind = model.spec().get("type") if hasattr(model, "spec") else type(model).__name__
        if self.model_types is not None and kind not in self.model_types:
            raise ValueError(
                f"policy={self.name!r} cannot grow a {kind} model; it grows {', '.join(self.model_types)}. "
                f"Choose a matching model, or policy 'fixed' to train {kind} without growth"
            )

    def should_check(self, epoch: int, history: Sequence[dict[str, Any]] = ()) -> bool:
        return should_check(
            epoch, history, when=self.when, expansion_interval=self.expansion_interval,
            plateau_window=self.plateau_window, plateau_threshold=self.plateau_threshold,
            min_gap=self.min_gap, last_event_epoch=self._last_event_epoch,
        )

    def step(self, model: nn.Module, ctx: GrowthContext) -> list[GrowthEvent]:
        """Pruning that is due, then a growth check if :meth:`should_check`; returns all events."""
        events = list(self.prune(model, ctx))
        if self.should_check(ctx.epoch, ctx.history):
            grown = self.grow(model, ctx)
            if grown:
                self._last_event_epoch = ctx.epoch
            events += grown
        return events

    def start(self, model: nn.Module, ctx: GrowthContext) -> list[GrowthEvent]:
        """The check on the untrained network that the trainer runs once before the first epoch
        (``ctx.epoch == -1``): :meth:`grow` if ``check_at_start``, else nothing. It does not start
        the ``min_gap`` wait, so the first scheduled checks still run."""
        return self.grow(model, ctx) if self.check_at_start else []

    @abstractmethod
    def grow(self, model: nn.Module, ctx: GrowthContext) -> list[GrowthEvent]:
        """One growth check: score candidates on ``ctx``'s data, apply the accepted ones through
        ``ctx.apply(edit, check=True)`` (function-preserving), return their events in order."""

    def prune(self, model: nn.Module, ctx: GrowthContext) -> list[GrowthEvent]:
        """Pruning that is due after ``ctx.epoch`` (none by default), applied through
        ``ctx.apply(edit, check=False)``; returns one ``"prune"`` event per edit."""
        return []

    def config(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_") and f.name != "last_eta"}
        return {"policy": self.name, **d}

    def state_dict(self) -> dict[str, Any]:
        return {"last_event_epoch": self._last_event_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._last_event_epoch = state.get("last_event_epoch")

    def tensor_state(self) -> dict[str, torch.Tensor]:
        """Tensor state for a checkpoint's ``state.pt`` (name -> tensor); none by default."""
        return {}

    def load_tensor_state(self, state: dict[str, torch.Tensor], model) -> None:
        """Restore :meth:`tensor_state` for ``model`` (the model the checkpoint rebuilt)."""


#: policy name -> class, in registration order (see :func:`register_policy`)
POLICIES: dict[str, type[GrowthPolicy]] = {}


def register_policy(cls: type[GrowthPolicy]) -> type[GrowthPolicy]:
    """Class decorator: make ``cls`` buildable by :func:`make_policy` under ``cls.name``.

    Raises ``ValueError`` if another class already holds that name."""
    if POLICIES.get(cls.name, cls) is not cls:
        raise ValueError(f"policy name {cls.name!r} is taken by {POLICIES[cls.name].__qualname__}; give {cls.__qualname__} another name")
    POLICIES[cls.name] = cls
    return cls


def policy_class(name: str) -> type[GrowthPolicy]:
    """The policy class registered as ``name`` in :data:`POLICIES`.

    Raises ``ValueError`` for an unknown name.
    """
    if not isinstance(name, str) or name not in POLICIES:
        raise ValueError(f"policy={name!r} is unknown; choose one of: {', '.join(POLICIES)}")
    return POLICIES[name]


def policy_params(name: str) -> tuple[str, ...]:
    """Names of the constructor parameters of policy ``name`` (its public dataclass fields)."""
    return tuple(f.name for f in fields(policy_class(name)) if not f.name.startswith("_") and f.name != "last_eta")


def policy_defaults(name: str) -> dict[str, Any]:
    """Default value of every constructor parameter of policy ``name``."""
    cls = policy_class(name)
    return {f.name: f.default for f in fields(cls) if f.name in policy_params(name)}


def make_policy(name: str, **params: Any) -> GrowthPolicy:
    """Build a policy by name (one of :data:`POLICIES`) with its parameters.

    Raises ``ValueError`` for an unknown name, an unknown parameter or an out-of-range value.
    """
    cls = policy_class(name)
    unknown = sorted(set(params) - set(policy_params(name)))
    if unknown:
        raise ValueError(f"invalid parameter(s) {unknown} for policy {name!r}; it takes: {', '.join(policy_params(name))}")
    return cls(**params)
