"""Applying a structural edit safely: function-preservation check and optimiser surgery (torch only).

PyTorch optimisers key their state by Parameter object; after an edit replaces a Parameter the
old state must move to the new one (``../shared/reference/growth-methods.md`` §4).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch
from torch import nn

from .modules import ParamChange

__all__ = ["FunctionNotPreservedError", "update_optimizer", "apply_edit"]


class FunctionNotPreservedError(RuntimeError):
    """A structural edit changed the network's outputs by more than the tolerance."""


@torch.no_grad()
def update_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, changes: list[ParamChange]) -> None:
    """Point ``optimizer`` at ``model``'s current parameters and carry state over.

    For every grown parameter, each state tensor of the old parameter's shape (Adam's
    ``exp_avg``/``exp_avg_sq``, SGD's ``momentum_buffer``) is copied into the matching slice of a
    zero tensor of the new shape; for a shrunk one (``change.keep``) the kept entries are
    selected; other entries (``step``) are kept. Brand-new parameters start
    with no state. Parameters untouched by the edit keep their state object. The optimiser's
    (single) param group is re-ordered to ``model.parameters()`` order so that
    ``optimizer.state_dict()`` loads into a model rebuilt from its spec.

    Raises ``ValueError`` if the optimiser has more than one param group.
    """
    if len(optimizer.param_groups) != 1:
        raise ValueError("growth supports optimisers with exactly one param group")
    old_state = optimizer.state
    new_state: dict = defaultdict(dict)
    by_new = {id(ch.new): ch for ch in changes}
    for p in model.parameters():
        ch = by_new.get(id(p))
        if ch is None:
            if p in old_state:
                new_state[p] = old_state[p]
            continue
        if ch.old is None or ch.old not in old_state:
            continue
        moved = {}
        for key, val in old_state[ch.old].items():
            if torch.is_tensor(val) and val.shape == ch.old.shape and ch.keep is not None:
                moved[key] = val[ch.keep].clone()
            elif torch.is_tensor(val) and val.shape == ch.old.shape:
                grown = torch.zeros_like(p)
                grown[ch.index] = val
                moved[key] = grown
            else:
                moved[key] = val
        new_state[p] = moved
    optimizer.state = new_state
    optimizer.param_groups[0]["params"] = list(model.parameters())


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
