"""Width by the effective rank of a layer's activations: NORTH* (Maile et al. 2022) with SENN's candidates (torch only).

The trigger does not depend on the loss decrease a candidate shows at a check: a hidden layer
grows while its activations are (nearly) full rank, that is while its units are independent
directions, and stops when new units no longer add directions. What is added stays SENN's: new
units' fan-in comes from the Δη'-optimised candidates of :mod:`senn_automl.scores.candidates`
(or random, or rank-selected ones), their fan-out is zero, so every addition is
function-preserving. Held-out data decides when growth ends for good: patience on the
validation loss after growth. docs/methods.md, "NORTH*", gives the formulas and deviations.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from senn_automl.growth.base import GrowthContext, GrowthEvent, GrowthPolicy, register_policy
from senn_automl.models.mlp import GrowingMLP
from senn_automl.scores.candidates import best_neuron_candidate, random_pool
from senn_automl.scores.curvature import FISHERS, collect_kfac
from senn_automl.scores.rank import effective_rank, independence, saturation_level
from senn_automl.validation import is_real, is_whole, require, require_choice

__all__ = ["FAN_INS", "EffectiveRankPolicy"]

#: where new units' fan-in comes from: SENN's Δη'-optimised candidates, random draws
#: (NORTH-Random) or random draws that add the most new directions (NORTH-Select)
FAN_INS = ("natural", "random", "select")


@register_policy
@dataclass
class EffectiveRankPolicy(GrowthPolicy):
    """Grow each hidden layer of a :class:`~senn_automl.models.mlp.GrowingMLP` while its
    activations are full rank (NORTH*, Maile, Rachelson, Luga & Wilson, AutoML-Conf 2022, §3; docs/methods.md §4, R1–R3).

    At a check, for hidden layer ``i`` with ``m`` units and activations ``H`` (n, m) on the
    scoring batch: ``r`` = effective rank of ``H`` (singular values of ``H/√n`` above
    ``rank_threshold · s_max``, :func:`~senn_automl.scores.rank.effective_rank`). The layer is
    saturated when ``r > ⌊gamma · m⌋`` and then gets ``k = r − ⌊gamma · m⌋`` units (the paper's
    ``k = ⌊m(φ − γ)⌋`` with φ = r/m). The rank is measured again with the new units' activations
    and the layer grows again while the rule holds, up to ``max_width`` or ``max_additions`` units
    per layer and check: new units that are independent directions keep it growing, redundant
    ones stop it.

    Stopping on held-out data: a check compares the best validation loss so far with the best at
    the last check that grew. After ``growth_patience`` checks in a row without a lower one,
    growth ends for the rest of the run (the first growth before training has no validation loss
    to compare; the next check always counts as an improvement over it).

    Parameters
    ----------
    rank_threshold : ε in (0, 1): singular values above ``ε · s_max`` count (default 0.03; the
        paper's code: 0.01, absolute; docs/methods.md §4.3 gives the measurement behind 0.03).
    gamma : γ in (0, 1]: the saturation level of the rank fraction (the paper's code: 0.97).
    fan_in : "select" (default; NORTH-Select: of ``n_candidates`` random draws, the ones with the
        largest share outside the span of the layer's activations,
        :func:`~senn_automl.scores.rank.independence`), "random" (NORTH-Random: random draws) or
        "natural" (SENN's candidates, ``n_candidates`` ascended ``candidate_steps`` steps on Δη',
        best Δη' first).
    n_candidates, candidate_steps : candidates per pool (≥ 1) and their Δη' ascent steps (≥ 0,
        ``fan_in="natural"`` only); a pool holds ``max(n_candidates, k)`` when ``k`` units are due.
    damping, fisher : K-FAC damping and output factor of the Δη' candidates (see
        :class:`~senn_automl.growth.natural.NaturalExpansionPolicy`).
    growth_patience : checks without a lower validation loss after growth before growth ends, ≥ 1.
    max_additions : optional cap on units per layer and check (``None``: up to ``max_width``).
    check_at_start : one check on the untrained network (default ``True``).
    expansion_interval : epochs between checks (default 3, as the estimator's natural policy).

    Raises ``ValueError`` (from :meth:`validate`) for out-of-range values, naming the argument.
    """

    name: ClassVar[str] = "north"
    model_types: ClassVar[tuple[str, ...]] = ("GrowingMLP",)
    expansion_interval: int = 3
    rank_threshold: float = 0.03
    gamma: float = 0.97
    fan_in: str = "select"
    n_candidates: int = 32
    candidate_steps: int = 50
    damping: float = 0.1
    fisher: str = "unit_gradient"
    growth_patience: int = 2
    max_additions: int | None = None
    check_at_start: bool = True
    _best_at_growth: float | None = field(default=None, repr=False)
    _strikes: int = field(default=0, repr=False)
    _stopped: bool = field(default=False, repr=False)

    def validate(self) -> None:
        super().validate()
        require(is_real(self.rank_threshold) and 0 < self.rank_threshold < 1, "rank_threshold", self.rank_threshold,
                "use a fraction of the largest singular value in (0, 1), e.g. 0.03")
        require(is_real(self.gamma) and 0 < self.gamma <= 1, "gamma", self.gamma, "use a rank fraction in (0, 1], e.g. 0.97")
        require_choice("fan_in", self.fan_in, FAN_INS)
        require(is_whole(self.n_candidates) and self.n_candidates >= 1, "n_candidates", self.n_candidates, "use at least 1 candidate per layer")
        require(is_whole(self.candidate_steps) and self.candidate_steps >= 0, "candidate_steps", self.candidate_steps, "use a whole number of steps >= 0")
        require(is_real(self.damping) and self.damping > 0, "damping", self.damping, "the K-FAC damping must be > 0, e.g. 0.1")
        require_choice("fisher", self.fisher, FISHERS)
        require(is_whole(self.growth_patience) and self.growth_patience >= 1, "growth_patience", self.growth_patience,
                "use a whole number of checks >= 1")
        require(self.max_additions is None or (is_whole(self.max_additions) and self.max_additions >= 1), "max_additions",
                self.max_additions, "use None (up to max_width) or a whole number of units >= 1")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_at_growth": self._best_at_growth, "strikes": self._strikes, "stopped": self._stopped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._best_at_growth = state.get("best_at_growth")
        self._strikes = int(state.get("strikes", 0))
        self._stopped = bool(state.get("stopped", False))

    # ------------------------------------------------------------------ the rule
    def saturated(self, rank: int, width: int) -> int:
        """Units the rule adds to a layer of ``width`` units whose activations have effective
        rank ``rank``: ``rank − ⌊gamma · width⌋`` when positive, else 0."""
        return max(0, rank - self._level(width))

    def _level(self, width: int) -> int:
        """⌊gamma · width⌋, the rank above which a layer of ``width`` units is saturated (R2)."""
        return saturation_level(self.gamma, width)

    def _patience_left(self, history) -> bool:
        """Update the held-out stopping rule at a check; ``False`` once growth has ended."""
        if self._stopped or not history or self._best_at_growth is None:
            return not self._stopped
        best = min(float(r["val_loss"]) for r in history)
        if best < self._best_at_growth:
            self._strikes = 0
        else:
            self._strikes += 1
            self._stopped = self._strikes >= self.growth_patience
        return not self._stopped

    def _draw(self, model: GrowingMLP, layer: int, ctx: GrowthContext, h_in: torch.Tensor, H: torch.Tensor,
              k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fan-in ``(W (k, d), b (k,), θ (k, ...))`` of ``k`` new units for hidden ``layer`` and their
        activations (n, k) on the scoring rows, ``h_in`` (n, d) the layer's inputs and ``H`` (n, m)
        its activations. A pool of ``max(n_candidates, k)`` candidates, the best ``k`` taken."""
        size = max(self.n_candidates, k)
        if self.fan_in == "natural":  # SENN's candidates, best Δη' first
            stats = collect_kfac(model, ctx.X, ctx.y, damping=self.damping, fisher=self.fisher, loss_fn=ctx.task.summed)
            pool = best_neuron_candidate(h_in, stats.layers[layer + 1], layer, n_candidates=size,
                                         steps=self.candidate_steps, damping=self.damping, generator=ctx.generator).pool
            feats = pool.features(h_in)
            order = torch.argsort(pool.scores(feats, stats.layers[layer + 1], self.damping).nan_to_num(0.0), descending=True)
        elif self.fan_in == "select":  # NORTH-Select: the draws with the most new directions
            pool = random_pool(size, h_in, ctx.generator)
            feats = pool.features(h_in)
            order = torch.argsort(independence(H, feats), descending=True)
        else:  # NORTH-Random
            pool = random_pool(k, h_in, ctx.generator)
            feats = pool.features(h_in)
            order = torch.arange(k)
        take = order[:k].to(pool.weight.device)
        return pool.weight[take], pool.bias[take], pool.act_params[take], feats[:, take.to(feats.device)]

    def _grow_layer(self, model: GrowingMLP, layer: int, ctx: GrowthContext) -> GrowthEvent | None:
        """Add units to hidden ``layer`` while the rule holds; one event for all of them, or ``None``."""
        room = model.max_width - model.hidden[layer]
        if self.max_additions is not None:
            room = min(room, self.max_additions)
        with torch.no_grad():
            h_in, H = model.layer_inputs(ctx.X)[layer : layer + 2]
        width0, rank0, before = model.hidden[layer], effective_rank(H, self.rank_threshold), model.n_params()
        rank, added, diff = rank0, 0, 0.0
        while (k := min(self.saturated(rank, model.hidden[layer]), room - added)) > 0:
            W, b, theta, F = self._draw(model, layer, ctx, h_in, H, k)
            _, d = ctx.apply(lambda m, W=W, b=b, t=theta: m.add_neurons(layer, W, b, t))
            H, added, diff = torch.cat([H, F.to(H)], dim=1), added + k, max(diff, d)
            rank = effective_rank(H, self.rank_threshold)
        if not added:
            return None
        return GrowthEvent(
            step=0, epoch=ctx.epoch, kind="units", where=layer, score=rank0 / width0, eta=math.nan, lam=math.nan,
            ratio=rank0 / width0, tau=self.gamma, alpha=math.nan, params_before=before, params_after=model.n_params(),
            hidden_after=tuple(model.hidden), max_abs_diff=diff, n=added,
            detail=f"effective rank {rank0} of {width0} units > ⌊γ·m⌋ = {self._level(width0)}: "
                   f"{added} units (fan-in {self.fan_in}), rank now {rank} of {model.hidden[layer]}",
        )

    def grow(self, model: GrowingMLP, ctx: GrowthContext) -> list[GrowthEvent]:
        if not self._patience_left(ctx.history):
            return []
        events = [e for layer in range(model.depth) if (e := self._grow_layer(model, layer, ctx)) is not None]
        events = [dataclasses.replace(e, step=i) for i, e in enumerate(events)]
        if events:
            self._best_at_growth = min((float(r["val_loss"]) for r in ctx.history), default=math.inf)
        return events
