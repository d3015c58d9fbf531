"""Growth policies: when to grow (:mod:`~senn_automl.growth.triggers`), and what and where
(:mod:`~senn_automl.growth.natural` for SENN, :mod:`~senn_automl.growth.north` for NORTH*'s
effective rank, :mod:`~senn_automl.growth.secnn`,
:mod:`~senn_automl.growth.edges`, :mod:`~senn_automl.growth.fixed`); the contract every policy
follows is :class:`~senn_automl.growth.base.GrowthPolicy`.

Importing this package registers every policy (see :func:`~senn_automl.growth.base.make_policy`).
"""

from senn_automl.growth.base import (
    EVENT_KINDS,
    POLICIES,
    GrowthContext,
    GrowthEvent,
    GrowthPolicy,
    make_policy,
    policy_class,
    policy_defaults,
    policy_params,
    register_policy,
)

# isort: off
# Import order is registration order, which is the order POLICIES lists (and error messages
# name) the policies in: the default policy first, the baseline last.
from senn_automl.growth.natural import NaturalExpansionPolicy
from senn_automl.growth.north import EffectiveRankPolicy
from senn_automl.growth.edges import EdgeExpansionPolicy
from senn_automl.growth.secnn import SECNNPolicy
from senn_automl.growth.fixed import FixedPolicy
# isort: on

__all__ = [
    "EVENT_KINDS", "POLICIES", "GrowthContext", "GrowthEvent", "GrowthPolicy", "make_policy", "policy_class",
    "policy_defaults", "policy_params", "register_policy", "NaturalExpansionPolicy", "EdgeExpansionPolicy",
    "SECNNPolicy", "FixedPolicy", "EffectiveRankPolicy",
]
