"""The champion rule (``summary.pick_champion``) on leaderboards a time budget can leave behind."""

from __future__ import annotations

import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.entities.model_registry.model_version_tag import ModelVersionTag

from senn_automl.integrations.tune.summary import LEADERBOARD_COLUMNS, pick_champion


def _version(version: int, trial: str, val_acc: float, n_params: int, final: bool = True) -> ModelVersion:
    tags = {"ray.trial_id": trial, "final": str(final).lower(), "val_acc": str(val_acc), "n_params": str(n_params)}
    return ModelVersion("m", str(version), creation_timestamp=1000 * version,
                        tags=[ModelVersionTag(k, v) for k, v in tags.items()])


def _leaderboard(rows: list[tuple[str, float, int, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"trial": t, "val_acc": a, "n_params": p, "status": s} for t, a, p, s in rows],
                        columns=LEADERBOARD_COLUMNS)


def test_a_complete_trial_beats_a_better_stopped_one():
    lb = _leaderboard([("a", 0.90, 500, "complete"), ("b", 0.95, 400, "pruned")])
    versions = [_version(1, "b", 0.95, 400), _version(2, "a", 0.90, 500), _version(3, "a", 0.93, 900, final=False)]
    assert pick_champion(lb, versions).version == "2"


def test_without_a_complete_trial_the_best_final_model_by_its_tags():
    """A time budget that stopped every trial after it logged its final model: the champion is the
    final model with the best val_acc tag, the smaller on ties (not None, and not the first logged)."""
    lb = _leaderboard([("a", 0.91, 500, "pruned"), ("b", 0.94, 700, "pruned"), ("c", 0.94, 300, "pruned")])
    versions = [_version(1, "a", 0.91, 500), _version(2, "b", 0.94, 700), _version(3, "c", 0.94, 300),
                _version(4, "a", 0.99, 100, final=False)]
    assert pick_champion(lb, versions).version == "3"
    assert pick_champion(lb, versions[:2]).version == "2"  # the rule applied to what was registered by then


def test_a_version_without_a_size_loses_a_tie():
    lb = _leaderboard([("a", 0.94, 500, "pruned"), ("b", 0.94, 700, "pruned")])
    sizeless = _version(2, "b", 0.94, 700)
    sizeless.tags.pop("n_params")
    assert pick_champion(lb, [_version(1, "a", 0.94, 500), sizeless]).version == "1"
    assert pick_champion(lb, [sizeless, _version(3, "a", 0.94, 500)]).version == "3"


def test_no_final_model_no_champion():
    lb = _leaderboard([("a", 0.91, 500, "complete")])
    assert pick_champion(lb, [_version(1, "a", 0.91, 500, final=False)]) is None
