"""When to run a growth check: every few epochs, or when validation loss plateaus (no torch needed).

Every policy chooses its "when" with the same keys: ``when="interval"`` checks after every
``expansion_interval`` epochs (SENN, SECNN); ``when="plateau"`` checks when the mean absolute
change of validation loss over the last ``plateau_window`` epochs falls below
``plateau_threshold``, at least ``min_gap`` epochs after the previous growth event (edge-based
expansion, CTLab-ITMO "self-expanding-nets").
"""

from __future__ import annotations

from typing import Any, Sequence

from senn_automl.validation import is_real, is_whole

__all__ = ["WHEN", "should_check", "validate_when", "plateau_score"]

WHEN = ("interval", "plateau")


def validate_when(when: str, expansion_interval: int, plateau_window: int, plateau_threshold: float, min_gap: int) -> None:
    """Raise ``ValueError`` naming the first out-of-range trigger setting and the fix."""
    if when not in WHEN:
        raise ValueError(f"when={when!r} is invalid: use 'interval' or 'plateau'")
    if not (is_whole(expansion_interval) and expansion_interval >= 1):
        raise ValueError(f"expansion_interval={expansion_interval!r} is invalid: use a whole number of epochs >= 1")
    if not (is_whole(plateau_window) and plateau_window >= 1):
        raise ValueError(f"plateau_window={plateau_window!r} is invalid: use a whole number of epochs >= 1")
    if not (is_real(plateau_threshold) and plateau_threshold > 0):
        raise ValueError(f"plateau_threshold={plateau_threshold!r} is invalid: use a positive loss change, e.g. 1e-3")
    if not (is_whole(min_gap) and min_gap >= 0):
        raise ValueError(f"min_gap={min_gap!r} is invalid: use a whole number of epochs >= 0")


def plateau_score(history: Sequence[dict[str, Any]], window: int) -> float | None:
    """Mean ``|val_loss[t] − val_loss[t−1]|`` over the last ``window`` epochs of ``history``
    (units of the loss, nats), or ``None`` while fewer than ``window + 1`` epochs are recorded."""
    losses = [float(r["val_loss"]) for r in history[-(window + 1):]]
    if len(losses) < window + 1:
        return None
    return sum(abs(b - a) for a, b in zip(losses[:-1], losses[1:])) / window


def should_check(
    epoch: int,
    history: Sequence[dict[str, Any]],
    *,
    when: str = "interval",
    expansion_interval: int = 10,
    plateau_window: int = 3,
    plateau_threshold: float = 1e-3,
    min_gap: int = 5,
    last_event_epoch: int | None = None,
) -> bool:
    """Whether to run a growth check after (0-based) ``epoch``.

    ``history`` holds one record per *completed earlier* epoch (``record["val_loss"]``), as in
    :attr:`senn_automl.training.trainer.Trainer.history`. ``last_event_epoch`` is the epoch of the last
    growth (or pruning) event, ``None`` if there was none.
    """
    if last_event_epoch is not None and epoch - last_event_epoch < min_gap:
        return False
    if when == "interval":
        return (epoch + 1) % expansion_interval == 0
    score = plateau_score(history, plateau_window)
    return score is not None and score < plateau_threshold
