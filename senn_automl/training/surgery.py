"""Applying a structural edit safely: function-preservation check and optimiser surgery (torch only).

PyTorch optimisers key their state by Parameter object; after an edit replaces a Parameter the
old state must move to the new one (docs/design.md, "Optimiser state of new entries").
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch
from torch import nn

from senn_automl.models.mlp import ParamChange

__all__ = ["FunctionNotPreservedError", "update_optimizer", "apply_edit"]


class FunctionNotPreservedError(RuntimeError):
    """A structural edit changed the network's outputs by more than the tolerance."""


#: Adam/AdamW second-moment state keys: new entries start at the mean of the old ones
SECOND_MOMENTS = ("exp_avg_sq", "max_exp_avg_sq")


@torch.no_grad()
def update_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, changes: list[ParamChange]) -> None:
    """Point ``optimizer`` at ``model``'s current parameters and carry state over.

    For every grown parameter, each state tensor of the old parameter's shape is copied into
    the matching slice of a tensor of the new shape; for a shrunk one (``change.keep``) the kept
    entries are selected; other entries (``step``) are kept. Entries new to a grown tensor start
    at zero (Adam's ``exp_avg``, SGD's ``momentum_buffer``), except second moments
    (:data:`SECOND_MOMENTS`), which start at the mean of the old tensor's. A brand-new parameter
    (an inserted layer) of an Adam-like optimiser gets the largest ``step`` of the others, zero
    ``exp_avg`` and, as second moment, the mean over all old parameters' second-moment entries.

    Why: with a zero second moment and a large shared ``step``, Adam's first update of a new
    entry is ``lr·(1−β1)/(1−β1ᵗ)·g/(√((1−β2)/(1−β2ᵗ))·|g|) ≈ 3.2·lr·sign(g)`` (β = 0.9, 0.999),
    larger than any step of the converged entries around it, and a brand-new parameter with no
    state moves every entry by ±lr on its first step whatever its gradient. The effect on
    accuracy is measured in BENCHMARKS.md ("Growth against the same network trained fixed").

    The optimiser's (single) param group is re-ordered to ``model.parameters()`` order so that
    ``optimizer.state_dict()`` loads into a model rebuilt from its spec.

    Raises ``ValueError`` if the optimiser has more than one param group.
    """
    if len(optimizer.param_groups) != 1:
        raise ValueError("growth supports optimisers with exactly one param group")
    old_state = optimizer.state
    new_state: dict = defaultdict(dict)
    by_new = {id(ch.new): ch for ch in changes}
    brand_new = []
    for p in model.parameters():
        ch = by_new.get(id(p))
        if ch is None:
            if p in old_state:
                new_state[p] = old_state[p]
            continue
        if ch.old is None or ch.old not in old_state:
            brand_new.append(p)
            continue
        moved = {}
        for key, val in old_state[ch.old].items():
            if torch.is_tensor(val) and val.shape == ch.old.shape and ch.keep is not None:
                moved[key] = val[ch.keep].clone()
            elif torch.is_tensor(val) and val.shape == ch.old.shape:
                fill = val.mean() if key in SECOND_MOMENTS and val.numel() else 0.0
                grown = torch.full_like(p, float(fill))
                grown[ch.index] = val
                moved[key] = grown
            else:
                moved[key] = val
        new_state[p] = moved
    _warm_brand_new(brand_new, new_state)
    optimizer.state = new_state
    optimizer.param_groups[0]["params"] = list(model.parameters())


def _warm_brand_new(params: list, state: dict) -> None:
    """Adam-like state for brand-new ``params`` from the carried ``state`` (see :func:`update_optimizer`);
    nothing when no carried parameter has a second moment (SGD, or an optimiser that has not stepped)."""
    carried = [s for s in state.values() if "exp_avg_sq" in s and "step" in s]
    if not params or not carried:
        return
    total = sum(float(s["exp_avg_sq"].sum()) for s in carried)
    count = sum(s["exp_avg_sq"].numel() for s in carried)
    step = max(carried, key=lambda s: float(s["step"]))["step"]
    for p in params:
        state[p] = {
            "step": step.clone() if torch.is_tensor(step) else step,
            "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.full_like(p, total / max(count, 1), memory_format=torch.preserve_format),
        }
        if any("max_exp_avg_sq" in s for s in carried):
            state[p]["max_exp_avg_sq"] = state[p]["exp_avg_sq"].clone()


def apply_edit(
    model: nn.Module,
    edit: Callable[[nn.Module], list[ParamChange]],
    *,
    probe: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    tolerance: float = 1e-4,
) -> tuple[list[ParamChange], float]:
    """Run ``edit(model)``, check on ``probe`` (B, ...) that outputs are unchanged, update the optimiser.

    The check runs in eval mode and compares ``max |f_new(x) − f_old(x)|`` against
    ``tolerance · max(1, max |f_old(x)|)`` (float32 outputs). Returns the changes and the measured
    max abs difference.

    Raises
    ------
    FunctionNotPreservedError
        If the outputs moved by more than the tolerance (the edit is left applied, so the error
        can be inspected; the caller should discard the model).
    """
    was_training = model.training
    model.eval()
    with torch.no_grad():
        before = model(probe)
        changes = edit(model)
        after = model(probe)
    model.train(was_training)
    diff = float((after - before).abs().max()) if before.numel() else 0.0
    bound = tolerance * max(1.0, float(before.abs().max()) if before.numel() else 1.0)
    if not diff <= bound:
        raise FunctionNotPreservedError(
            f"growth edit changed the network outputs by {diff:.3g} (> {bound:.3g}) on the probe batch; "
            "this is a bug in the edit, please report it with the model spec"
        )
    if optimizer is not None:
        update_optimizer(optimizer, model, changes)
    return changes, diff
