"""SECNN growth with the SENN score: candidates per block and :class:`SECNNPolicy` (torch only).

SECNN (Appolinary et al., "Self Expanding Convolutional Neural Networks", arXiv:2401.05686, §3)
decides every epoch, for each block, between two candidates — add one conv layer, or widen every
conv of the block by 4 channels — and applies the best if its natural expansion score beats the
current one. Its published code scores with a diagonal "fraction of large gradients"; here
(docs/design.md, "More models and policies") a candidate is scored instead with SENN's natural
expansion score (Mitchell et al., "Self-Expanding Neural Networks", arXiv:2307.04526, Eq. 2 and
Theorem 3.2) restricted to the candidate's new, zero-initialised parameters:

- **widen** block b by k: the zero input columns of every reader of the block's output (its
  residual convs' old filters, the next block's first conv or the head) — SENN's lower bound
  ``Δη' = tr(Cᵀ A_f⁻¹ C G⁻¹)`` per reader, with ``C = g_f − g_a A_aa⁻¹ A_af`` (the part of the new
  columns' gradient the old inputs cannot produce), summed over readers (K-FAC is block-diagonal
  over layers);
- **add a layer** to block b: the new residual layer's BN ``(γ, β)`` (the branch conv has zero
  gradient while γ = 0). Under the block-diagonal approximation a new layer adds exactly its own
  score, ``Δη = ḡᵀ F⁻¹ ḡ`` over its 2C parameters, with the exact (damped) Fisher block.

Statistics come from applying the edit to a copy of the model and running forward/backward on
the scoring batch in train mode. With ``debias=True`` the batch is split in two halves and a
score ``gᵀMg`` is cross-fitted as ``g₁ᵀMg₂`` (halves are independent), which removes the positive
noise floor ``≈ (number of new parameters)/B`` that otherwise favours the candidate with the most
parameters; the estimate may then be negative for a useless candidate.

The conv K-FAC statistics and the scores of new columns are in :mod:`senn_automl.scores.conv`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import torch

from senn_automl.growth.base import GrowthContext, GrowthEvent, GrowthPolicy, register_policy
from senn_automl.models.cnn import GrowingCNN, kaiming_normal
from senn_automl.models.mlp import ParamChange
from senn_automl.scores.conv import (
    CONV_FISHERS,
    collect_cnn_stats,
    new_columns_score,
)
from senn_automl.scores.rank import channel_rows, effective_rank, saturation_level
from senn_automl.scores.tasks import CLASSIFICATION, Task
from senn_automl.validation import TINY, as_tuple, is_real, is_whole, require, require_bool, require_choice

__all__ = ["Proposal", "propose_layer", "propose_widen", "SECNNPolicy", "THRESHOLD_RULES", "WIDTH_RULES"]

#: "ratio": SECNN's η_candidate / η > τ; "natural": SENN's Δη/η > τ and Δη/λ > α
THRESHOLD_RULES = ("ratio", "natural")
_DEFAULT_TAU = {"ratio": 1.01, "natural": 0.01}
#: what widens a block: "score" (SECNN: a widening candidate scored against the layer candidates)
#: or "rank" (NORTH*'s rule on channels: widen while the block's feature maps are full rank)
WIDTH_RULES = ("score", "rank")


@dataclass
class Proposal:
    """A scored SECNN candidate.

    kind : "conv_layer" or "channels"; block : block index; n : channels added (widen) or 1;
    delta_eta : its score Δη (see the module docstring; same units as η); delta_params :
    parameters it adds; edit : ``edit(model) -> list[ParamChange]`` that applies exactly the
    scored candidate (same new weights).
    """

    kind: str
    block: int
    n: int
    delta_eta: float
    delta_params: int
    edit: Callable[[GrowingCNN], list[ParamChange]] = field(repr=False)


def _scoring_copy(model: GrowingCNN) -> GrowingCNN:
    return copy.deepcopy(model).train()


def propose_layer(model: GrowingCNN, block: int, X: torch.Tensor, y: torch.Tensor, *, damping: float = 0.1,
                  debias: bool = True, fisher: str = "gauss_newton", generator: torch.Generator | None = None,
                  row_seed: int = 0, task: Task = CLASSIFICATION) -> Proposal:
    """Score "add one residual conv layer to ``block``": ``Δη`` of the new layer's BN (γ, β).

    The new conv weight is He-normal from ``generator``; the returned edit inserts exactly it.
    ``X`` (B, C, H, W), ``y`` (B,) is the scoring batch (B ≥ 2 when ``debias``). Runs the edited
    copy forward and backward; :class:`SECNNPolicy` gets the same numbers for every block at once
    from its statistics pass (:func:`collect_cnn_stats` with ``new_layers``).
    """
    c = model.widths[block]
    weight = kaiming_normal((c, c, 3, 3), model.negative_slope, generator)
    trial = _scoring_copy(model)
    trial.add_conv_layer(block, weight)
    stats = collect_cnn_stats(trial, X, y, layers=[], bns=[trial.blocks[block][-1].bn], damping=damping,
                              parts=2 if debias else 1, fisher=fisher, generator=torch.Generator().manual_seed(row_seed),
                              loss_fn=task.summed)
    bn = stats.bns[0]
    score = bn.eta_cross if debias else bn.eta
    return Proposal("conv_layer", block, 1, score, trial.n_params() - model.n_params(),
                    lambda m, b=block, w=weight: m.add_conv_layer(b, w))


def propose_widen(model: GrowingCNN, block: int, k: int, X: torch.Tensor, y: torch.Tensor, *, damping: float = 0.1,
                  debias: bool = True, fisher: str = "gauss_newton", generator: torch.Generator | None = None,
                  row_seed: int = 0, task: Task = CLASSIFICATION) -> Proposal:
    """Score "widen every conv of ``block`` by ``k`` channels": the sum over the block's readers
    (:meth:`GrowingCNN.readers`) of :func:`new_columns_score` of their new zero input columns.

    The new filters are drawn from ``generator``; the returned edit replays the same draws.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
    state = generator.get_state()

    def replay() -> torch.Generator:
        g = torch.Generator(device=generator.device)
        g.set_state(state)
        return g

    trial = _scoring_copy(model)
    trial.widen_block(block, k, generator)
    c = model.widths[block]
    readers = trial.readers(block)
    stats = collect_cnn_stats(trial, X, y, layers=[m for m, _ in readers], bns=[], damping=damping,
                              parts=2 if debias else 1, fisher=fisher, generator=torch.Generator().manual_seed(row_seed),
                              loss_fn=task.summed)
    score = 0.0
    for (module, offset), st in zip(readers, stats.layers):
        taps = module.kernel_size[0] * module.kernel_size[1]
        new = torch.arange((offset + c) * taps, (offset + c + k) * taps)
        score += new_columns_score(st, new, damping, cross=debias)
    return Proposal("channels", block, k, score, trial.n_params() - model.n_params(),
                    lambda m, b=block, kk=k: m.widen_block(b, kk, replay()))


@register_policy
@dataclass
class SECNNPolicy(GrowthPolicy):
    """SECNN's growth policy (arXiv:2401.05686, §3.2) with SENN's natural expansion score.

    At every check (default: every epoch, ``expansion_interval=1``, at least ``min_gap=5`` epochs
    after the last growth, as in the SECNN code), on the first ``score_samples`` rows of the
    scoring batch: measure the model's total η (:func:`collect_cnn_stats`), score two candidates
    per block — add a conv layer (scored in the same pass, as :func:`propose_layer` would) and widen the block by ``widen_step``
    channels (:func:`propose_widen`) — skipping those beyond ``max_layers`` / ``max_channels``,
    and apply the best candidate if it passes the threshold rule. At most one change per check.

    Candidates are ranked by ``ratio`` and the best is accepted if it passes the rule; with the
    size penalty ``π = exp(−size_penalty·Δp²)`` (SECNN's size regularisation, ``Δp`` = parameters
    added; off by default, 1e-7 in the SECNN code):

    - ``"ratio"`` (SECNN): ``score = (η + Δη)·π`` (the candidate network's regularised score) and
      ``ratio = score/η > tau``. Default ``tau`` 1.01: SECNN's τ = 2 was set for its diagonal score;
      a K-FAC score summed over all layers is not doubled by one block's addition (on digits the
      best candidate adds 0.1–3 % of η). With ``size_penalty=1e-7``, ``π < 1/1.01`` as soon as
      ``Δp > 315``, so the penalty then decides alone (a defect of SECNN's published rule, docs/methods.md §2.3).
    - ``"natural"`` (SENN, Theorem 3.1): ``score = Δη·π``, ``ratio = score/η > tau`` and
      ``score/λ > alpha`` with ``λ = E‖∂ℓ/∂y‖²`` (default ``tau`` 0.01). Meaningful with
      ``fisher="gauss_newton"``, where η scales with λ; with the empirical Fisher η does not shrink
      with the loss and ``score/λ`` grows as training converges.

    η in the denominators is the plain (not cross-fitted) total η of the current model: it carries
    a positive noise floor, which makes the relative tests conservative.

    ``width_rule="rank"`` takes the width decision away from the score (docs/methods.md §4, the
    channel version of R1–R2): at a check, block ``b`` with ``C`` channels and feature maps
    ``Z_b`` (B, C, H, W) on the scoring rows (train mode, on a copy) is saturated when the effective rank
    ``r`` of ``Z_b`` unfolded per position (:func:`~senn_automl.scores.rank.channel_rows`,
    singular values above ``rank_threshold · s_max``) exceeds ``⌊gamma · C⌋``; it is then widened
    by ``k = r − ⌊gamma · C⌋`` channels (every conv of the block, up to ``max_channels``; new
    channels' readers get zero input columns, so the edit is function-preserving), its rank is
    measured again with the new channels, and it widens again while the rule holds. Every
    saturated block widens at the same check, one ``channels`` event each; the layer candidates are then
    scored and accepted as above (widening candidates are not scored).

    Parameters
    ----------
    threshold_rule : "ratio" or "natural".
    tau : relative threshold (> 0; ``> 1`` for "ratio"); ``None`` picks the rule's default.
    alpha : absolute threshold of the "natural" rule, in (0, 1).
    size_penalty : λ_n ≥ 0 of the size regularisation (per parameter²).
    widen_step : channels added to every conv of a block by a widening (≥ 1; SECNN: 4).
    grow_layers, grow_width : enable the two candidate kinds.
    damping : γ of the damped factors (> 0).
    fisher : "gauss_newton" (default) or "empirical": the output-side factor G (module docstring).
    debias : cross-fit candidate scores over two halves of the scoring rows (see module docstring).
    score_samples : rows of the scoring batch used (≥ 4); the trainer passes ~1024.
    width_rule : "score" (default, SECNN) or "rank" (see above).
    rank_threshold, gamma : ε in (0, 1) and γ in (0, 1] of ``width_rule="rank"`` (as the MLP's
        ``north`` policy: 0.03 and 0.97).
    expansion_interval, min_gap, when, ... : see :class:`~senn_automl.growth.base.GrowthPolicy`.

    Raises ``ValueError`` (from :meth:`validate`) for out-of-range values, naming the argument.
    """

    name: ClassVar[str] = "secnn"
    model_types: ClassVar[tuple[str, ...]] = ("GrowingCNN",)
    expansion_interval: int = 1
    min_gap: int = 5
    threshold_rule: str = "ratio"
    tau: float | None = None
    alpha: float = 2.5e-3
    size_penalty: float = 0.0
    widen_step: int = 4
    grow_layers: bool = True
    grow_width: bool = True
    damping: float = 0.1
    fisher: str = "gauss_newton"
    debias: bool = True
    score_samples: int = 256
    width_rule: str = "score"
    rank_threshold: float = 0.03
    gamma: float = 0.97

    def validate(self) -> None:
        super().validate()
        require_choice("threshold_rule", self.threshold_rule, THRESHOLD_RULES)
        if self.tau is not None:
            require(is_real(self.tau) and self.tau > 0, "tau", self.tau, "use a positive number, or None for the rule's default")
            require(not (self.threshold_rule == "ratio" and self.tau <= 1), "tau", self.tau, "the 'ratio' rule compares η_candidate/η, which is > 1 for any gain: use tau > 1, e.g. 1.1")
        require(is_real(self.alpha) and 0 < self.alpha < 1, "alpha", self.alpha, "the absolute threshold must be in (0, 1), e.g. 2.5e-3")
        require(is_real(self.size_penalty) and self.size_penalty >= 0, "size_penalty", self.size_penalty, "use a number >= 0 (0 = off; SECNN's code uses 1e-7)")
        require(is_whole(self.widen_step) and self.widen_step >= 1, "widen_step", self.widen_step, "use a whole number of channels >= 1, e.g. 4")
        for name in ("grow_layers", "grow_width", "debias"):
            require_bool(name, getattr(self, name))
        if not (self.grow_layers or self.grow_width):
            raise ValueError("grow_layers and grow_width are both false: enable at least one, or use policy 'fixed'")
        require(is_real(self.damping) and self.damping > 0, "damping", self.damping, "the K-FAC damping must be > 0, e.g. 0.1")
        require_choice("fisher", self.fisher, CONV_FISHERS)
        require(is_whole(self.score_samples) and self.score_samples >= 4, "score_samples", self.score_samples, "use a whole number of rows >= 4, e.g. 256")
        require_choice("width_rule", self.width_rule, WIDTH_RULES)
        require(is_real(self.rank_threshold) and 0 < self.rank_threshold < 1, "rank_threshold", self.rank_threshold,
                "use a fraction of the largest singular value in (0, 1), e.g. 0.03")
        require(is_real(self.gamma) and 0 < self.gamma <= 1, "gamma", self.gamma, "use a rank fraction in (0, 1], e.g. 0.97")

    @property
    def effective_tau(self) -> float:
        """``tau``, or the threshold rule's default when ``tau`` is None."""
        return _DEFAULT_TAU[self.threshold_rule] if self.tau is None else float(self.tau)

    def propose(self, model: GrowingCNN, X: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
                task: Task = CLASSIFICATION):
        """Measure the model and score every allowed candidate on ``X[:score_samples]`` (``task``: the
        loss the statistics differentiate).

        Returns ``(stats, [Proposal, ...])``; ``stats`` is the current model's :class:`CNNStats`.
        """
        n = min(len(X), self.score_samples)
        Xs, ys = X[:n], y[:n]
        debias = self.debias and n >= 4
        gen = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(2**31, (1,))))
        row_seed = int(torch.randint(2**31, (1,), generator=gen, device=gen.device))  # same patch rows for every pass
        kw = dict(damping=self.damping, debias=debias, fisher=self.fisher, row_seed=row_seed, task=task)
        layer_at = [b for b in range(model.n_blocks) if self.grow_layers and model.can_add_layer(b)]
        weights = {b: kaiming_normal((model.widths[b], model.widths[b], 3, 3), model.negative_slope, gen) for b in layer_at}
        # one pass scores the model and every block's new-layer candidate (see collect_cnn_stats)
        stats = collect_cnn_stats(_scoring_copy(model), Xs, ys, damping=self.damping, parts=2 if debias else 1,
                                  fisher=self.fisher, generator=torch.Generator().manual_seed(row_seed), new_layers=weights,
                                  loss_fn=task.summed)
        proposals = []
        for b in range(model.n_blocks):
            if b in weights:
                bn = stats.new_layers[b]  # the new layer adds its conv weight and its BN's γ, β
                proposals.append(Proposal("conv_layer", b, 1, bn.eta_cross if debias else bn.eta,
                                          weights[b].numel() + 2 * model.widths[b],
                                          lambda m, b=b, w=weights[b]: m.add_conv_layer(b, w)))
            if self.grow_width and self.width_rule == "score" and model.can_widen(b, self.widen_step):
                proposals.append(propose_widen(model, b, self.widen_step, Xs, ys, generator=gen, **kw))
        return stats, proposals

    def rate(self, p: Proposal, eta: float) -> tuple[float, float]:
        """``(score, ratio)`` of a proposal under the threshold rule (see the class docstring)."""
        penalty = math.exp(-self.size_penalty * float(p.delta_params) ** 2)
        score = (eta + p.delta_eta) * penalty if self.threshold_rule == "ratio" else p.delta_eta * penalty
        return score, score / max(eta, TINY)

    def grow(self, model, ctx: GrowthContext) -> list[GrowthEvent]:
        """One growth check: at most one edit, applied with ``apply(edit)``; returns its event (or none).

        ``X`` (B, C, H, W) float32 and ``y`` (B,) are the scoring batch on the model's device.
        ``X_val``/``y_val`` are not used: the two halves of the scoring rows are cross-fitted instead
        (``debias``). ``generator`` (CPU) draws the candidates' new weights and the patch rows.
        Sets ``last_eta`` to the current model's η. Raises ``ValueError`` for a model that is not a GrowingCNN.
        """
        X, y, epoch, apply = ctx.X, ctx.y, ctx.epoch, ctx.apply
        generator = ctx.generator
        self.check_model(model)
        widened = self.widen_saturated(model, ctx) if self.grow_width and self.width_rule == "rank" else []
        stats, proposals = self.propose(model, X, y, generator, ctx.task)
        eta, lam = stats.eta, stats.lam
        self.last_eta = eta
        rated = [(self.rate(p, eta), p) for p in proposals]
        rated = [r for r in rated if math.isfinite(r[0][1])]
        if not rated:
            return widened
        (score, ratio), best = max(rated, key=lambda t: t[0][1])
        tau = self.effective_tau
        natural = self.threshold_rule == "natural"
        if not (ratio > tau and (not natural or score / max(lam, TINY) > self.alpha)):
            return widened
        before = model.n_params()
        _, diff = apply(best.edit)
        others = ", ".join(f"{p.kind}@{p.block}:{p.delta_eta:.3g}" for _, p in rated)
        return [
            *widened,
            GrowthEvent(
                step=len(widened), epoch=epoch, kind=best.kind, where=best.block, score=score, eta=eta,
                lam=lam if natural else math.nan, ratio=ratio, tau=tau, alpha=self.alpha if natural else math.nan,
                params_before=before, params_after=model.n_params(), hidden_after=as_tuple(model.hidden), max_abs_diff=diff,
                n=best.n, detail=f"Δη={best.delta_eta:.4g} Δp={best.delta_params} candidates Δη: {others}",
            )
        ]

    def block_ranks(self, model: GrowingCNN, X: torch.Tensor, blocks: Sequence[int] | None = None) -> list[int]:
        """Effective rank of the feature maps of each block in ``blocks`` (default: all) on
        ``X[:score_samples]``, as :func:`~senn_automl.scores.rank.effective_rank` of
        :func:`~senn_automl.scores.rank.channel_rows`, measured in train mode (BatchNorm on the
        batch's statistics, as the network trains) on a copy, so the model's running statistics
        stay as they are."""
        maps = _scoring_copy(model).block_outputs(X[: self.score_samples])
        return [effective_rank(channel_rows(maps[b]), self.rank_threshold) for b in (range(len(maps)) if blocks is None else blocks)]

    def widen_saturated(self, model: GrowingCNN, ctx: GrowthContext) -> list[GrowthEvent]:
        """``width_rule="rank"``: widen every saturated block (class docstring) through ``ctx.apply``,
        measuring its rank again with the new channels and widening again while the rule holds (as
        the ``north`` policy does for units); one ``channels`` event per widened block."""
        events = []
        for b, rank0 in enumerate(self.block_ranks(model, ctx.X)):
            c0, before, rank, diff = model.widths[b], model.n_params(), rank0, 0.0
            while (k := min(rank - saturation_level(self.gamma, model.widths[b]), model.max_channels - model.widths[b])) >= 1:
                _, d = ctx.apply(lambda m, b=b, k=k: m.widen_block(b, k, ctx.generator))
                diff = max(diff, d)
                (rank,) = self.block_ranks(model, ctx.X, [b])
            if model.widths[b] == c0:
                continue
            events.append(GrowthEvent(
                step=len(events), epoch=ctx.epoch, kind="channels", where=b, score=rank0 / c0, eta=math.nan, lam=math.nan,
                ratio=rank0 / c0, tau=self.gamma, alpha=math.nan, params_before=before, params_after=model.n_params(),
                hidden_after=as_tuple(model.hidden), max_abs_diff=diff, n=model.widths[b] - c0,
                detail=f"effective rank {rank0} of {c0} channels > ⌊γ·C⌋ = {saturation_level(self.gamma, c0)}: "
                       f"{model.widths[b] - c0} channels, rank now {rank} of {model.widths[b]}",
            ))
        return events
