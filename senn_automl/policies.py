"""Growth policies: when, where and what to add (torch only).

A policy looks at the model on a scoring batch and applies edits through an ``apply`` callback
given by the trainer (which checks function preservation and updates the optimiser). Each
accepted change becomes an immutable :class:`GrowthEvent`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar

import torch

from .candidates import Candidate, best_neuron_candidate, heldout_score, layer_candidate
from .curvature import collect_kfac, delta_eta_heldout, residual
from .modules import GrowingMLP, ParamChange

__all__ = ["GrowthEvent", "GrowthPolicy", "FixedPolicy", "NaturalExpansionPolicy", "make_policy", "POLICIES"]

Apply = Callable[[Callable[[GrowingMLP], list[ParamChange]]], Any]


@dataclass(frozen=True)
class GrowthEvent:
    """One accepted structural change.

    kind : "neuron" or "layer"; where : hidden layer index (neuron) or insertion position (layer);
    score : Δη' of the accepted candidate (held-out and debiased when a validation split is
    given; divided by the layer cost multiplier for layers); eta, lam : η and λ = E‖∂ℓ/∂y‖²
    the thresholds were measured against; ratio : score / η reference; tau, alpha : thresholds
    in force; params_before/after : parameter counts; hidden_after : hidden widths after the
    change; max_abs_diff : measured output change on the probe batch.
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
    hidden_after: tuple[int, ...]
    max_abs_diff: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_after"] = list(self.hidden_after)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GrowthEvent":
        return cls(**{**d, "hidden_after": tuple(d["hidden_after"])})


class GrowthPolicy:
    """Interface of a growth policy.

    ``should_check(epoch)`` says whether to run a check after this (0-based) epoch;
    ``grow(model, X, y, epoch=, apply=, X_val=, y_val=, generator=)`` runs one check, applies
    edits through ``apply(edit)`` and returns the events. ``config()`` is JSON-able;
    ``state_dict``/``load_state_dict`` carry counters through checkpoints.
    """

    name: ClassVar[str] = "base"
    #: total η measured at the start of the latest check (None before the first check)
    last_eta: float | None = None

    def should_check(self, epoch: int) -> bool:
        return False

    def grow(self, model, X, y, *, epoch: int, apply: Apply, X_val=None, y_val=None, generator=None) -> list[GrowthEvent]:
        return []

    def config(self) -> dict[str, Any]:
        return {"policy": self.name}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class FixedPolicy(GrowthPolicy):
    """No growth: the baseline."""

    name = "fixed"


@dataclass
class NaturalExpansionPolicy(GrowthPolicy):
    """SENN's natural expansion policy (arXiv:2307.04526, §3.3, Theorem 3.1).

    Every ``expansion_interval`` epochs: collect K-FAC statistics on the scoring batch, propose
    the best neuron for each hidden layer and one layer per insertion point, rank them by
    ``Δη'/η`` (layer proposals divided by ``layer_cost``), and accept the best if
    ``Δη'/η > tau`` **and** ``Δη'/λ > alpha``. Repeat, recomputing the statistics, until no
    proposal passes, at most ``N_max = ⌈1 + ln(1/α)/ln(1+τ)⌉`` times (Theorem 3.1) or
    ``max_additions`` if set. Depth proposals are skipped for ``depth_cooldown`` checks after a
    layer insertion. When a validation split is given, candidates are optimised on the scoring
    batch but accepted on the validation split (debiased Δη', held-out η and λ).

    Parameters
    ----------
    tau : relative threshold τ > 0 (official MNIST value 0.03).
    alpha : absolute threshold α in (0, 1) (official 2.5e-3).
    relative_to : "total" (η of the whole net, Theorem 3.1) or "layer" (the consumer's η_c, as
        in the official code).
    layer_cost : depth cost multiplier ≥ 1 (official 20).
    expansion_interval : epochs between checks, ≥ 1.
    depth_cooldown : checks without depth proposals after an insertion, ≥ 0.
    n_candidates, candidate_steps : P neuron candidates per layer and their ascent steps.
    damping : γ of the K-FAC factors, > 0.
    fisher : "gauss_newton" (default) or "empirical"; see :func:`senn_automl.curvature.collect_kfac`.
    accept_on : "validation" (default): thresholds are tested on the validation split with the
        debiased held-out Δη'; "scoring": on the training scoring batch, as in the paper (more
        growth: candidates fitted on those rows look better there than they generalise).
    max_additions : optional cap on additions per check, below the Theorem 3.1 bound.
    grow_width, grow_depth : enable neuron / layer proposals.

    Raises ``ValueError`` (from :meth:`validate`) for out-of-range values, naming the argument.
    """

    name: ClassVar[str] = "natural"
    tau: float = 0.03
    alpha: float = 2.5e-3
    relative_to: str = "total"
    layer_cost: float = 20.0
    expansion_interval: int = 10
    depth_cooldown: int = 3
    n_candidates: int = 100
    candidate_steps: int = 50
    damping: float = 0.1
    fisher: str = "gauss_newton"
    accept_on: str = "validation"
    max_additions: int | None = None
    grow_width: bool = True
    grow_depth: bool = True
    _checks: int = field(default=0, repr=False)
    _last_depth_check: int = field(default=-(10**9), repr=False)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        def bad(name, value, fix):
            raise ValueError(f"{name}={value!r} is invalid: {fix}")

        def number(x):
            return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

        def whole(x):
            return isinstance(x, numbers.Integral) and not isinstance(x, bool)

        if not (number(self.tau) and self.tau > 0):
            bad("tau", self.tau, "the relative threshold must be a positive number, e.g. 0.03")
        if not (number(self.alpha) and 0 < self.alpha < 1):
            bad("alpha", self.alpha, "the absolute threshold must be in (0, 1), e.g. 2.5e-3")
        if self.relative_to not in ("total", "layer"):
            bad("relative_to", self.relative_to, "use 'total' or 'layer'")
        if not (number(self.layer_cost) and self.layer_cost >= 1):
            bad("layer_cost", self.layer_cost, "the depth cost multiplier must be >= 1")
        if not (whole(self.expansion_interval) and self.expansion_interval >= 1):
            bad("expansion_interval", self.expansion_interval, "use a whole number of epochs >= 1")
        if not (whole(self.depth_cooldown) and self.depth_cooldown >= 0):
            bad("depth_cooldown", self.depth_cooldown, "use a whole number of checks >= 0")
        if not (whole(self.n_candidates) and self.n_candidates >= 1):
            bad("n_candidates", self.n_candidates, "use at least 1 candidate per layer")
        if not (whole(self.candidate_steps) and self.candidate_steps >= 0):
            bad("candidate_steps", self.candidate_steps, "use a whole number of steps >= 0")
        if not (number(self.damping) and self.damping > 0):
            bad("damping", self.damping, "the K-FAC damping must be > 0, e.g. 0.1")
        if self.fisher not in ("gauss_newton", "empirical"):
            bad("fisher", self.fisher, "use 'gauss_newton' or 'empirical'")
        if self.accept_on not in ("validation", "scoring"):
            bad("accept_on", self.accept_on, "use 'validation' or 'scoring'")
        if self.max_additions is not None and not (whole(self.max_additions) and self.max_additions >= 1):
            bad("max_additions", self.max_additions, "use None (Theorem 3.1 bound) or an integer >= 1")

    @property
    def n_max(self) -> int:
        """Theorem 3.1 cap on additions per check: ⌈1 + ln(1/α)/ln(1+τ)⌉ (or ``max_additions``)."""
        bound = math.ceil(1 + math.log(1 / self.alpha) / math.log(1 + self.tau))
        return min(bound, self.max_additions) if self.max_additions else bound

    def config(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return {"policy": self.name, **d}

    def state_dict(self) -> dict[str, Any]:
        return {"checks": self._checks, "last_depth_check": self._last_depth_check}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._checks = int(state.get("checks", 0))
        self._last_depth_check = int(state.get("last_depth_check", -(10**9)))

    def should_check(self, epoch: int) -> bool:
        return (epoch + 1) % self.expansion_interval == 0

    def propose(self, model: GrowingMLP, X, y, X_val=None, y_val=None, generator=None):
        """Score the current model and its proposals.

        Candidates are optimised on the scoring batch ``(X, y)``. If held-out data ``(X_val,
        y_val)`` with at least 2 rows is given, every proposal is then scored there with the
        debiased Δη' (:func:`~senn_automl.curvature.delta_eta_heldout`) and η, λ are the
        held-out ones, so a candidate that only fits noise of the scoring batch is not accepted.

        Returns ``(scoring, [(ratio, score, Candidate), ...])``: ``scoring.held`` are the
        statistics the thresholds are measured against; ``score`` includes the layer cost multiplier.
        """
        stats = collect_kfac(model, X, y, damping=self.damping, fisher=self.fisher)
        with torch.no_grad():
            inputs = model.layer_inputs(X)
        held, held_inputs = stats, inputs
        if self.accept_on == "validation" and X_val is not None and len(X_val) >= 2:
            held = collect_kfac(model, X_val, y_val, damping=self.damping, fisher=self.fisher)
            with torch.no_grad():
                held_inputs = model.layer_inputs(X_val)
        kw = dict(steps=self.candidate_steps, damping=self.damping, generator=generator)

        def rate(cand: Candidate, consumer_idx: int, cost: float):
            consumer = held.layers[consumer_idx]
            if held is stats:
                score = cand.score
            else:
                source_idx = consumer_idx - 1 if cand.kind == "neuron" else consumer_idx
                score = heldout_score(cand, held_inputs[source_idx], consumer, self.damping)
            score /= cost
            ref = held.eta if self.relative_to == "total" else consumer.eta
            return (score / max(ref, 1e-30), score, cand)

        proposals = []
        if self.grow_width:
            for i in range(model.depth):
                if model.can_add_neurons(i):
                    cand = best_neuron_candidate(inputs[i], stats.layers[i + 1], i, n_candidates=self.n_candidates, **kw)
                    proposals.append(rate(cand, i + 1, 1.0))
        if self.grow_depth and self._checks - self._last_depth_check > self.depth_cooldown:
            for p in range(model.depth + 1):
                if model.can_insert_layer(p):
                    cand = layer_candidate(inputs[p], stats.layers[p], p, **kw)
                    proposals.append(rate(cand, p, self.layer_cost))
        return _Scoring(stats, inputs, held, held_inputs), proposals

    def _passes(self, ratio: float, score: float, lam: float) -> bool:
        return ratio > self.tau and score / max(lam, 1e-30) > self.alpha

    def _more_neurons(self, model, first: Candidate, sc: "_Scoring", budget: int) -> list[tuple[Candidate, float, float, float]]:
        """Greedy sequence of further neurons for the layer of ``first`` from its candidate pool.

        A new neuron has zero outgoing weights, so the network function and every δ are
        unchanged; only the consumer's inputs gain the feature ``f``. Recomputing the statistics
        after an addition therefore reduces to projecting ``f`` out of the consumer residual
        (on the scoring batch and on the held-out data), and η grows by the accepted score.
        Each further neuron must pass both thresholds on held-out data like the first.
        Returns ``[(candidate, score, ratio, eta_ref), ...]`` in order, ``first`` included.
        """
        layer, pool = first.where, first.pool
        consumer_idx = layer + 1
        held_is_train = sc.held is sc.stats
        c_tr, c_h = sc.stats.layers[consumer_idx], sc.held.layers[consumer_idx]
        F_tr = pool.features(sc.inputs[layer].double())
        F_h = F_tr if held_is_train else pool.features(sc.held_inputs[layer].double())
        r_tr, r_h = residual(c_tr), residual(c_h)
        eta_ref = sc.held.eta if self.relative_to == "total" else c_h.eta
        lam = sc.held.lam
        available = torch.ones(F_tr.shape[1], dtype=torch.bool)
        chosen = []
        p = int(torch.nonzero((pool.weight == first.weight).all(1))[0])
        while len(chosen) < budget and model.hidden[layer] + len(chosen) < model.max_width:
            if chosen:  # rank the remaining pool on the scoring batch
                n = F_tr.shape[0]
                C = F_tr.T @ r_tr / n
                s_tr = (C * c_tr.G_inv.solve(C.T).T).sum(1) / ((F_tr**2).mean(0) * (1 + self.damping) + 1e-30)
                s_tr[~available] = -torch.inf
                p = int(torch.argmax(s_tr))
            if held_is_train:
                f = F_h[:, p : p + 1]
                C = f.T @ r_h / f.shape[0]
                score = float((C * c_h.G_inv.solve(C.T).T).sum() / ((f**2).mean() * (1 + self.damping) + 1e-30))
            else:
                score = delta_eta_heldout(F_h[:, p : p + 1], r_h, c_h.G_inv, self.damping)
            ratio = score / max(eta_ref, 1e-30)
            if not self._passes(ratio, score, lam):
                break
            chosen.append((pool.candidate(p, layer, score), score, ratio, eta_ref))
            available[p] = False
            eta_ref += score
            for F, r in ((F_tr, r_tr), (F_h, r_h)):
                f = F[:, p : p + 1]
                r -= f @ (f.T @ r) / (f.T @ f).clamp_min(1e-30)
            if held_is_train:
                r_h = r_tr
        return chosen

    def grow(self, model, X, y, *, epoch: int, apply: Apply, X_val=None, y_val=None, generator=None) -> list[GrowthEvent]:
        events: list[GrowthEvent] = []

        def record(kind, where, score, ratio, sc, before, diff):
            events.append(
                GrowthEvent(
                    step=len(events), epoch=epoch, kind=kind, where=where, score=score, eta=sc.held.eta,
                    lam=sc.held.lam, ratio=ratio, tau=self.tau, alpha=self.alpha, params_before=before,
                    params_after=model.n_params(), hidden_after=tuple(model.hidden), max_abs_diff=diff,
                )
            )

        while len(events) < self.n_max:
            sc, proposals = self.propose(model, X, y, X_val, y_val, generator)
            if not events:
                self.last_eta = sc.held.eta
            if not proposals:
                break
            ratio, score, cand = max(proposals, key=lambda t: t[0])
            if not self._passes(ratio, score, sc.held.lam):
                break
            if cand.kind == "layer":
                before = model.n_params()
                _, diff = apply(lambda m, c=cand: m.insert_layer(c.where, c.weight, c.bias))
                self._last_depth_check = self._checks
                record("layer", cand.where, score, ratio, sc, before, diff)
                continue
            for c, c_score, c_ratio, _ in self._more_neurons(model, cand, sc, self.n_max - len(events)):
                before = model.n_params()
                _, diff = apply(lambda m, c=c: m.add_neurons(c.where, c.weight, c.bias, c.act_params))
                record("neuron", c.where, c_score, c_ratio, sc, before, diff)
        self._checks += 1
        return events


@dataclass
class _Scoring:
    """Statistics of one proposal round: scoring-batch stats and layer inputs, and the held-out
    ones the thresholds are measured against (the same objects without held-out data)."""

    stats: Any
    inputs: list
    held: Any
    held_inputs: list


POLICIES: dict[str, type[GrowthPolicy]] = {"natural": NaturalExpansionPolicy, "fixed": FixedPolicy}


def make_policy(name: str, **params: Any) -> GrowthPolicy:
    """Build a policy by name (``natural`` or ``fixed``) with its parameters.

    Raises ``ValueError`` for an unknown name or parameter.
    """
    if name not in POLICIES:
        raise ValueError(f"policy={name!r} is unknown; choose one of: {', '.join(POLICIES)}")
    cls = POLICIES[name]
    if cls is FixedPolicy:
        return FixedPolicy()
    try:
        return cls(**params)
    except TypeError as exc:
        raise ValueError(f"invalid parameter for policy {name!r}: {exc}") from None
