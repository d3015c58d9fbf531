"""SENN's natural expansion policy (arXiv:2307.04526, §3.3): add neurons and layers where the natural expansion score says (torch only)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from senn_automl.growth.base import Apply, GrowthContext, GrowthEvent, GrowthPolicy, register_policy
from senn_automl.models.mlp import GrowingMLP
from senn_automl.scores.candidates import (
    CANDIDATE_STARTS,
    Candidate,
    CandidatePool,
    best_neuron_candidate,
    heldout_score,
    layer_candidate,
    starts_from,
)
from senn_automl.scores.curvature import FISHERS, collect_kfac, eta_heldout, input_saliency, prune_compensation, with_new_neuron
from senn_automl.scores.tasks import CLASSIFICATION, Task
from senn_automl.validation import TINY, is_real, is_whole, require, require_bool, require_choice

__all__ = ["NaturalExpansionPolicy", "RELATIVE_TO", "ACCEPT_ON"]

#: what the ``tau`` test divides by: the network's total η or the consumer layer's η_c
RELATIVE_TO = ("total", "layer")
#: where the thresholds are measured: held-out rows (when given) or the scoring batch
ACCEPT_ON = ("validation", "scoring")


@dataclass
class _PruneReview:
    """Neurons a check added to hidden layer ``layer`` (indices in it), reviewed at epoch ``due``."""

    due: int
    layer: int
    neurons: list[int] = field(default_factory=list)


@dataclass
class _WarmStarts:
    """Candidate pools the latest round left (hidden layer → pool, insertion position → layer
    candidate), valid for the model object they were found on (``model_id``) only."""

    pools: dict[int, CandidatePool] = field(default_factory=dict)
    layers: dict[int, Candidate] = field(default_factory=dict)
    model_id: int | None = None


@register_policy
@dataclass
class NaturalExpansionPolicy(GrowthPolicy):
    """SENN's natural expansion policy (arXiv:2307.04526, §3.3, Theorem 3.1).

    Every ``expansion_interval`` epochs: collect K-FAC statistics on the scoring batch, propose
    the best neuron for each hidden layer and one layer per insertion point, rank them by
    ``Δη'/η`` (layer proposals divided by ``layer_cost``), and accept the best if
    ``Δη'/η > tau`` **and** ``Δη'/λ > alpha``. Repeat, recomputing the statistics, until no
    proposal passes, at most ``N_max = ⌈1 + ln(1/α)/ln(1+τ)⌉`` times (Theorem 3.1) or
    ``max_additions`` if set. A check that proposes layers starts a depth cooldown: the next
    ``depth_cooldown`` checks propose neurons only (the official code's separate cooldown for
    depth). When a validation split is given, candidates are optimised on the scoring
    batch but accepted on the validation split (debiased Δη', held-out η and λ).

    Parameters
    ----------
    tau : relative threshold τ > 0 (official MNIST value 0.03).
    alpha : absolute threshold α in (0, 1) (official 2.5e-3).
    relative_to : "total" (η of the whole net, Theorem 3.1) or "layer" (the consumer's η_c, as
        in the official code).
    layer_cost : depth cost multiplier ≥ 1 (official 20).
    expansion_interval : epochs between checks, ≥ 1.
    depth_cooldown : checks without layer proposals after a check that proposed layers (whether
        or not one was inserted), ≥ 0. A layer candidate of width k has k² weights to search,
        and with ``layer_cost`` 20 it is seldom accepted, so proposing layers at every check
        costs much and adds little: on digits it was 0.07 of the 0.29 s of checks, and none of
        those later proposals scores above zero held-out (BENCHMARKS.md §1).
    n_candidates, candidate_steps : P neuron candidates per layer (default 32; the paper's code
        uses 100) and their ascent steps. The best candidate's score depends on the steps, hardly
        on P: on digits' first check 16, 32 and 100 candidates reach the same held-out Δη'
        (BENCHMARKS.md, growth overhead), and a search with 32 takes 40 % of the time of one with 100.
    refine_steps : ascent steps of a search that starts from an earlier pool instead of from
        random. Within a check, after neurons were added, the next round starts each layer's
        candidates from its previous pool (whose residual changed only by the added features) and
        proposes no layer (a layer proposal is made in the first round of a check; its residual
        has only shrunk since).
    candidate_batch_size : scoring rows per ascent step of the candidate search, a fresh random
        subset each step (stochastic ascent; candidates are then scored on all rows), e.g. 256.
        ``None`` (default): all rows every step (full-batch ascent, as in the paper). Smaller is
        cheaper per step; candidates then fit less of the scoring batch's noise, so with
        ``accept_on="scoring"`` fewer pass a given ``tau`` (BENCHMARKS.md, growth overhead).
    warm_checks : ``True`` (default): a check starts from the pools the previous check left
        (neuron pools per hidden layer and the layer candidate per insertion point; where the
        inputs gained units since, the pools are padded, see
        :func:`~senn_automl.scores.candidates.starts_from`) with ``refine_steps``, so the search
        continues across checks instead of restarting; a check that finds nothing then costs a
        fifth. Pruning or a layer insertion restarts the pools from random. ``False``: every check
        starts from random with ``candidate_steps``. Checkpoints keep the pools
        (:meth:`tensor_state`), so a resumed run continues the same search.
    damping : γ of the K-FAC factors, > 0.
    fisher : output-side K-FAC factor, see :func:`senn_automl.scores.curvature.collect_kfac`:
        "unit_gradient" (default; the official SENN code's ``G = E[Jᵀûûᵀ J]``, with which ``alpha``
        means what the paper's does: on 10 classes the Gauss-Newton factor scores the same
        candidate 6-10× lower), "gauss_newton" (``G = E[JᵀJ]``) or "empirical" (``E[δδᵀ]``).
    accept_on : "validation" (default): thresholds are tested on the validation split with the
        debiased held-out Δη'; "scoring": on the training scoring batch, as in the paper (more
        growth: candidates fitted on those rows look better there than they generalise).
    max_additions : optional cap on additions per check, below the Theorem 3.1 bound.
    grow_width, grow_depth : enable neuron / layer proposals.
    prune_after : epochs after a growth check at which its new neurons are reviewed (``None``:
        no pruning; ≥ 1). A reviewed neuron is removed when both its η-share and its OBS
        saliency (:func:`~senn_automl.scores.curvature.input_saliency`, measured at its consumer) are
        at most ``prune_threshold · η``, and the consumer's remaining weights get the K-FAC
        compensation (:func:`~senn_automl.scores.curvature.prune_compensation`); official SENN
        freeze rule.
    prune_threshold : fraction of η, in [0, 1) (official 3e-4).
    prune_existing : review every neuron of the layers, not only the event's new ones.
    candidate_start : where new neuron candidates start: ``"origin"`` (default; they bend near
        zero input) or ``"data"`` (each at a scoring row; see
        :func:`~senn_automl.scores.candidates.best_neuron_candidate`). On the 1-D toy regression
        (``examples/senn_toy_regression.py``, seeds 0-4) ``"data"`` gives a held-out MSE of
        0.0042-0.0058, ``"origin"`` 0.0051-0.045; on digits and MNIST (5-fold growth_vs_fixed)
        ``"data"`` scores 0.9705 and 0.9060 against 0.9711 and 0.9102, within the folds' spread
        (MNIST's standard deviation over folds is 0.018).
    check_at_start : ``True`` (default): one check on the untrained network before the first
        epoch (:meth:`~senn_automl.growth.base.GrowthPolicy.start`). On the 5,000-image MNIST every
        fixed width has its lowest validation loss by epoch 5–6, so the scheduled checks that the
        best-model snapshot can keep are about two, and units added while the net trains are worth
        less than units there from the start; this check adds its units before any training
        (BENCHMARKS.md, "Growth that pays").

    Raises ``ValueError`` (from :meth:`validate`) for out-of-range values, naming the argument.
    """

    name: ClassVar[str] = "natural"
    model_types: ClassVar[tuple[str, ...]] = ("GrowingMLP",)
    tau: float = 0.03
    alpha: float = 2.5e-3
    relative_to: str = "total"
    layer_cost: float = 20.0
    depth_cooldown: int = 3
    n_candidates: int = 32
    candidate_steps: int = 50
    refine_steps: int = 10
    candidate_batch_size: int | None = None
    warm_checks: bool = True
    damping: float = 0.1
    fisher: str = "unit_gradient"
    accept_on: str = "validation"
    max_additions: int | None = None
    grow_width: bool = True
    grow_depth: bool = True
    prune_after: int | None = None
    prune_threshold: float = 3e-4
    prune_existing: bool = False
    candidate_start: str = "origin"
    check_at_start: bool = True
    _checks: int = field(default=0, repr=False)
    _pending: list[_PruneReview] = field(default_factory=list, repr=False)
    #: index of the last check that proposed layers (None: none yet)
    _last_depth_check: int | None = field(default=None, repr=False)
    #: candidate pools the latest round left (see ``warm_checks``)
    _starts: _WarmStarts = field(default_factory=_WarmStarts, repr=False, compare=False)
    #: first-layer K-FAC input factors of the scoring and validation batches (see collect_kfac's ``cache``)
    _kfac_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def validate(self) -> None:
        super().validate()
        require(is_real(self.tau) and self.tau > 0, "tau", self.tau, "the relative threshold must be a positive number, e.g. 0.03")
        require(is_real(self.alpha) and 0 < self.alpha < 1, "alpha", self.alpha, "the absolute threshold must be in (0, 1), e.g. 2.5e-3")
        require(self.relative_to in RELATIVE_TO, "relative_to", self.relative_to, "use 'total' or 'layer'")
        require(is_real(self.layer_cost) and self.layer_cost >= 1, "layer_cost", self.layer_cost, "the depth cost multiplier must be >= 1")
        require(is_whole(self.depth_cooldown) and self.depth_cooldown >= 0, "depth_cooldown", self.depth_cooldown, "use a whole number of checks >= 0")
        require(is_whole(self.n_candidates) and self.n_candidates >= 1, "n_candidates", self.n_candidates, "use at least 1 candidate per layer")
        require(is_whole(self.candidate_steps) and self.candidate_steps >= 0, "candidate_steps", self.candidate_steps, "use a whole number of steps >= 0")
        require(is_whole(self.refine_steps) and self.refine_steps >= 0, "refine_steps", self.refine_steps, "use a whole number of steps >= 0")
        require(self.candidate_batch_size is None or (is_whole(self.candidate_batch_size) and self.candidate_batch_size >= 2), "candidate_batch_size", self.candidate_batch_size, "use None (all scoring rows every step) or a whole number of rows >= 2, e.g. 256")
        for name in ("warm_checks", "grow_width", "grow_depth", "prune_existing"):
            require_bool(name, getattr(self, name))
        require(is_real(self.damping) and self.damping > 0, "damping", self.damping, "the K-FAC damping must be > 0, e.g. 0.1")
        require_choice("fisher", self.fisher, FISHERS)
        require_choice("candidate_start", self.candidate_start, CANDIDATE_STARTS)
        require(self.accept_on in ACCEPT_ON, "accept_on", self.accept_on, "use 'validation' or 'scoring'")
        require(self.max_additions is None or (is_whole(self.max_additions) and self.max_additions >= 1), "max_additions", self.max_additions, "use None (Theorem 3.1 bound) or an integer >= 1")
        require(self.prune_after is None or (is_whole(self.prune_after) and self.prune_after >= 1), "prune_after", self.prune_after, "the pruning delay is shorter than allowed: use None (no pruning) or a whole number of epochs >= 1")
        require(is_real(self.prune_threshold) and 0 <= self.prune_threshold < 1, "prune_threshold", self.prune_threshold, "use a fraction of η in [0, 1), e.g. 3e-4")

    @property
    def n_max(self) -> int:
        """Theorem 3.1 cap on additions per check: ⌈1 + ln(1/α)/ln(1+τ)⌉ (or ``max_additions``)."""
        bound = math.ceil(1 + math.log(1 / self.alpha) / math.log(1 + self.tau))
        return min(bound, self.max_additions) if self.max_additions else bound

    def state_dict(self) -> dict[str, Any]:
        pending = [[job.due, job.layer, list(job.neurons)] for job in self._pending]
        return {**super().state_dict(), "checks": self._checks, "last_depth_check": self._last_depth_check, "pending": pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._checks = int(state.get("checks", 0))
        last = state.get("last_depth_check")
        self._last_depth_check = None if last is None else int(last)
        self._pending = [_PruneReview(int(due), int(layer), [int(i) for i in neurons]) for due, layer, neurons in state.get("pending", [])]

    def tensor_state(self) -> dict[str, torch.Tensor]:
        """The warm pools (see ``warm_checks``): ``pool.<layer>.<weight|bias|act_params>`` and
        ``layer.<position>.<weight|bias|act_params>``, so a resumed run continues the same search."""
        out = {}
        for kind, found in (("pool", self._starts.pools), ("layer", self._starts.layers)):
            for where, c in found.items():
                for name in ("weight", "bias", "act_params"):
                    out[f"{kind}.{where}.{name}"] = getattr(c, name)
        return out

    def load_tensor_state(self, state: dict[str, torch.Tensor], model) -> None:
        parts: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
        for key, t in state.items():
            kind, where, name = key.split(".")
            parts.setdefault((kind, int(where)), {})[name] = t
        pools = {w: CandidatePool(**p) for (k, w), p in parts.items() if k == "pool"}
        layer_starts = {w: Candidate("layer", w, math.nan, **p) for (k, w), p in parts.items() if k == "layer"}
        self._starts = _WarmStarts(pools, layer_starts, id(model))

    def _track(self, kind: str, where: int, model, epoch: int) -> None:
        """Keep the pending pruning reviews' layer / neuron indices valid after an edit."""
        if kind == "layer":
            for job in self._pending:
                job.layer += job.layer >= where
        elif kind == "neuron" and self.prune_after is not None:
            due = epoch + self.prune_after
            job = next((j for j in self._pending if j.due == due and j.layer == where), None)
            if job is None:
                self._pending.append(job := _PruneReview(due, where))
            job.neurons.append(model.hidden[where] - 1)

    def prune(self, model, ctx: GrowthContext) -> list[GrowthEvent]:
        """Review the neurons of growth checks made ``prune_after`` epochs ago (see the class doc).

        Statistics come from the validation split when given (else the scoring batch). Returns
        one ``prune`` event per layer that lost neurons (``score`` = their summed η-share).
        """
        X, y, epoch, apply = ctx.X, ctx.y, ctx.epoch, ctx.apply
        X_val, y_val = ctx.X_val, ctx.y_val
        due = [j for j in self._pending if j.due <= epoch]
        if not due:
            return []
        self._pending = [j for j in self._pending if j.due > epoch]
        Xs, ys = (X_val, y_val) if ctx.has_val else (X, y)
        events = []
        for layer in sorted({j.layer for j in due}):
            review = sorted({i for j in due if j.layer == layer for i in j.neurons})
            if self.prune_existing:
                review = list(range(model.hidden[layer]))
            stats = collect_kfac(model, Xs, ys, damping=self.damping, fisher=self.fisher, cache=self._kfac_cache,
                                 loss_fn=ctx.task.summed)
            consumer = model.linears[layer + 1]
            share, obs = input_saliency(stats.layers[layer + 1], consumer.weight, self.damping)
            limit = self.prune_threshold * stats.eta
            drop = [i for i in review if share[i] <= limit and obs[i] <= limit][: model.hidden[layer] - 1]
            if not drop:
                continue
            delta = prune_compensation(stats.layers[layer + 1], consumer.weight, consumer.bias, drop, self.damping)
            before = model.n_params()
            _, diff = apply(lambda m, L=layer, d=drop, dw=delta: m.remove_neurons(L, d, dw), check=False)
            self._starts = _WarmStarts()  # the pools' input columns no longer line up with the layer's units
            for job in self._pending:  # later reviews of this layer: shift indices past the removed ones
                if job.layer == layer:
                    job.neurons = [i - sum(k < i for k in drop) for i in job.neurons if i not in drop]
            events.append(GrowthEvent(
                step=len(events), epoch=epoch, kind="prune", where=layer, score=float(share[drop].sum()),
                eta=stats.eta, lam=stats.lam, ratio=float(share[drop].sum()) / max(stats.eta, TINY),
                tau=self.prune_threshold, alpha=float("nan"), params_before=before, params_after=model.n_params(),
                hidden_after=tuple(model.hidden), max_abs_diff=diff, n=len(drop),
                detail=f"neurons {drop} of {len(review)} reviewed, output change {diff:.3g}",
            ))
        return events

    def propose(self, model: GrowingMLP, X, y, X_val=None, y_val=None, generator=None, warm=None, layer_warm=None, depth=True,
                task: Task = CLASSIFICATION):
        """Score the current model and its proposals.

        Candidates are optimised on the scoring batch ``(X, y)``. ``warm``: ``{layer:
        CandidatePool}`` to start neuron candidates from, and ``layer_warm``: ``{position:
        Candidate}`` to start layer candidates from, each with ``refine_steps`` steps where the
        inputs have not narrowed since. ``depth=False``: no layer proposals (later rounds of a
        check, or a check within the depth cooldown). If held-out data ``(X_val, y_val)`` with at least 2 rows is given, every proposal is then scored there with the
        debiased Δη' (:func:`~senn_automl.scores.curvature.delta_eta_heldout`), λ is the held-out one and
        η the debiased held-out one (:meth:`_Scoring.eta`), so a candidate that only fits noise of
        the scoring batch is not accepted, and the noise floor of η on a small split does not
        block every candidate.

        ``task``: whose per-sample loss the statistics differentiate (:mod:`senn_automl.scores.tasks`).

        Returns ``(scoring, [(ratio, score, Candidate), ...])``: ``scoring.held`` are the
        statistics the thresholds are measured against; ``score`` includes the layer cost multiplier.
        """
        sc = self._statistics(model, X, y, X_val, y_val, task)
        inputs, stats = sc.inputs, sc.stats
        kw = dict(damping=self.damping, generator=generator, batch_rows=self.candidate_batch_size)
        proposals = []
        if self.grow_width:
            for i in range(model.depth):
                if model.can_add_neurons(i):
                    init = (warm or {}).get(i)
                    cand = best_neuron_candidate(
                        inputs[i], stats.layers[i + 1], i, n_candidates=self.n_candidates, init=init, start=self.candidate_start,
                        steps=self.refine_steps if starts_from(init, inputs[i]) else self.candidate_steps, **kw,
                    )
                    proposals.append(self.rate(cand, sc))
        if self.grow_depth and depth:
            for p in range(model.depth + 1):
                if model.can_insert_layer(p):
                    init = (layer_warm or {}).get(p)
                    cand = layer_candidate(
                        inputs[p], stats.layers[p], p, init=init,
                        steps=self.refine_steps if starts_from(init, inputs[p]) else self.candidate_steps, **kw,
                    )
                    proposals.append(self.rate(cand, sc))
        return sc, proposals

    def _statistics(self, model: GrowingMLP, X, y, X_val=None, y_val=None, task: Task = CLASSIFICATION) -> "_Scoring":
        """K-FAC statistics and layer inputs on the scoring batch, and on the held-out data when
        ``accept_on="validation"`` and it has at least 2 rows (else the same objects)."""
        stats = collect_kfac(model, X, y, damping=self.damping, fisher=self.fisher, cache=self._kfac_cache, loss_fn=task.summed)
        with torch.no_grad():
            inputs = model.layer_inputs(X)
        held, held_inputs = stats, inputs
        if self.accept_on == "validation" and X_val is not None and len(X_val) >= 2:
            held = collect_kfac(model, X_val, y_val, damping=self.damping, fisher=self.fisher, cache=self._kfac_cache,
                                loss_fn=task.summed)
            with torch.no_grad():
                held_inputs = model.layer_inputs(X_val)
        return _Scoring(stats, inputs, held, held_inputs)

    def _after_neuron(self, model: GrowingMLP, sc: "_Scoring", layer: int) -> "_Scoring":
        """``sc`` for ``model`` after a neuron with zero outgoing weights was appended to hidden
        layer ``layer`` (:func:`~senn_automl.scores.curvature.with_new_neuron`: no pass over the data;
        the new unit's activations come from the model's own layer, as a forward pass gives them)."""

        def grown(stats, inputs):
            with torch.no_grad():
                f = model.activations[layer](model.linears[layer](inputs[layer]))[:, -1:]
            inputs = [*inputs[: layer + 1], torch.cat([inputs[layer + 1], f], dim=1), *inputs[layer + 2:]]
            return with_new_neuron(stats, layer, f[:, 0].double(), self.damping), inputs

        stats, inputs = grown(sc.stats, sc.inputs)
        if sc.held is sc.stats:
            return _Scoring(stats, inputs, stats, inputs)
        return _Scoring(stats, inputs, *grown(sc.held, sc.held_inputs))

    def rate(self, cand: Candidate, sc: "_Scoring") -> tuple[float, float, Candidate]:
        """``(ratio, score, cand)`` of a candidate as the thresholds test it: ``score`` is its Δη'
        (the debiased held-out Δη' when ``sc`` has held-out statistics, else the scoring-batch one),
        divided by ``layer_cost`` for a layer; ``ratio = score / η`` (total η or the consumer's η_c,
        per ``relative_to``; debiased on held-out statistics, see :meth:`_Scoring.eta`)."""
        consumer_idx = cand.where + 1 if cand.kind == "neuron" else cand.where
        consumer = sc.held.layers[consumer_idx]
        if sc.held is sc.stats:
            score = cand.score
        else:  # the candidate's inputs are those of layer ``cand.where``
            score = heldout_score(cand, sc.held_inputs[cand.where], consumer, self.damping)
        score /= 1.0 if cand.kind == "neuron" else self.layer_cost
        ref = sc.eta() if self.relative_to == "total" else sc.eta(consumer_idx)
        if sc.held is not sc.stats:
            # the debiased held-out η may be ≤ 0 (no significant descent direction): floor it at
            # the level the α test already calls insignificant, so the ratio stays finite and α decides
            ref = max(ref, self.alpha * sc.held.lam)
        return (score / max(ref, TINY), score, cand)

    def _passes(self, ratio: float, score: float, lam: float) -> bool:
        return ratio > self.tau and score / max(lam, TINY) > self.alpha

    def _add_neurons(self, model, first: tuple[float, float, Candidate], sc: "_Scoring", budget: int, apply: Apply,
                     record, epoch: int) -> None:
        """Add ``first = (ratio, score, candidate)`` and then, greedily, further neurons of its
        candidate pool to its layer.

        After each addition the statistics are updated to those of the grown network
        (:meth:`_after_neuron`, exact: what :meth:`_statistics` would collect), so the next
        neuron is ranked (Δη' on the scoring batch) and tested (on held-out data when given, like
        the first) against the exact residual, η and λ of the grown network. Stops at ``budget``
        neurons, at ``max_width``, when the pool is used up, or at the first neuron that fails a
        threshold.
        """
        ratio, score, cand = first
        layer, pool = cand.where, cand.pool
        features = pool.features(sc.inputs[layer].double())  # the layer's inputs do not change
        available = torch.ones(pool.weight.shape[0], dtype=torch.bool)
        p = int(torch.nonzero((pool.weight == cand.weight).all(1))[0])
        for added in range(budget):
            before = model.n_params()
            _, diff = apply(lambda m, c=cand: m.add_neurons(c.where, c.weight, c.bias, c.act_params))
            self._track("neuron", layer, model, epoch)
            record("neuron", layer, score, ratio, sc, before, diff)
            available[p] = False
            if added + 1 == budget or not model.can_add_neurons(layer) or not available.any():
                return
            sc = self._after_neuron(model, sc, layer)
            s_tr = pool.scores(features, sc.stats.layers[layer + 1], self.damping)
            s_tr[~available] = -torch.inf
            p = int(torch.argmax(s_tr))
            ratio, score, cand = self.rate(pool.candidate(p, layer, float(s_tr[p])), sc)
            if not self._passes(ratio, score, sc.held.lam):
                return

    def grow(self, model, ctx: GrowthContext) -> list[GrowthEvent]:
        X, y, epoch, apply = ctx.X, ctx.y, ctx.epoch, ctx.apply
        X_val, y_val, generator = ctx.X_val, ctx.y_val, ctx.generator
        events: list[GrowthEvent] = []

        def record(kind, where, score, ratio, sc, before, diff):
            events.append(
                GrowthEvent(
                    step=len(events), epoch=epoch, kind=kind, where=where, score=score, eta=sc.eta(),
                    lam=sc.held.lam, ratio=ratio, tau=self.tau, alpha=self.alpha, params_before=before,
                    params_after=model.n_params(), hidden_after=tuple(model.hidden), max_abs_diff=diff,
                )
            )

        # first round: layer proposals, candidates from the previous check's pools (warm_checks)
        # or random; later rounds: neurons only, warm-started from the previous round's pools
        starts = self._starts
        pools, layer_starts = (starts.pools, starts.layers) if self.warm_checks and starts.model_id == id(model) else ({}, {})
        # a check that proposes layers starts the depth cooldown (also after an insertion: the
        # next round proposes neurons only)
        depth = self._last_depth_check is None or self._checks - self._last_depth_check > self.depth_cooldown
        if depth and self.grow_depth:
            self._last_depth_check = self._checks
        warm = dict(pools)
        while len(events) < self.n_max:
            sc, proposals = self.propose(model, X, y, X_val, y_val, generator, warm, layer_starts, depth, ctx.task)
            pools = {c.where: c.pool for _, _, c in proposals if c.kind == "neuron"}
            layer_starts = {c.where: c for _, _, c in proposals if c.kind == "layer"} or layer_starts
            depth = False
            if not events:
                self.last_eta = sc.eta()
            if not proposals:
                break
            ratio, score, cand = max(proposals, key=lambda t: t[0])
            if not self._passes(ratio, score, sc.held.lam):
                break
            if cand.kind == "layer":
                before = model.n_params()
                _, diff = apply(lambda m, c=cand: m.insert_layer(c.where, c.weight, c.bias))
                self._track("layer", cand.where, model, epoch)
                record("layer", cand.where, score, ratio, sc, before, diff)
                warm, pools, layer_starts = {}, {}, {}  # layer indices and widths changed: start afresh
                continue
            warm = pools
            self._add_neurons(model, (ratio, score, cand), sc, self.n_max - len(events), apply, record, epoch)
        self._starts = _WarmStarts(pools, layer_starts, id(model))
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
    _eta: dict = field(default_factory=dict)

    def eta(self, layer: int | None = None) -> float:
        """Reference η of the ``tau`` test (one layer's η_c when ``layer`` is given): the scoring
        batch's, or on held-out data the debiased one (:func:`~senn_automl.scores.curvature.eta_heldout`),
        like the debiased held-out Δη' it is compared with."""
        if self.held is self.stats:
            return self.stats.eta if layer is None else self.stats.layers[layer].eta
        if layer not in self._eta:
            self._eta[layer] = eta_heldout(self.held, layer)
        return self._eta[layer]


