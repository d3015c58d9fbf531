"""The baseline policy: no growth (torch only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from senn_automl.growth.base import GrowthContext, GrowthEvent, GrowthPolicy, register_policy

__all__ = ["FixedPolicy"]


@register_policy
@dataclass
class FixedPolicy(GrowthPolicy):
    """No growth: the baseline. Trains any model."""

    name: ClassVar[str] = "fixed"

    def grow(self, model: nn.Module, ctx: GrowthContext) -> list[GrowthEvent]:
        return []
