"""The driver-side live view of a search (:class:`ProgressView`, a ``ray.tune.Callback``) and its
formatting."""

from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Callable, Iterator

from ray import tune

#: the writer given to views unpickled by ``Tuner.restore`` (see :func:`restored_views_write_to`)
_restore_write: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("senn_restore_write", default=None)


@contextlib.contextmanager
def restored_views_write_to(write: Callable[[str], None] | None) -> Iterator[None]:
    """Within this block, every :class:`ProgressView` that is unpickled (``Tuner.restore`` unpickles
    the run config, callbacks included, in the calling thread) writes to ``write``; None prints.

    The writer of the interrupted run does not pickle, and the restored view is reachable afterwards
    only through the Tuner's private state: giving it the writer while it is rebuilt needs neither.
    """
    token = _restore_write.set(write)
    try:
        yield
    finally:
        _restore_write.reset(token)


class ProgressView(tune.Callback):
    """Driver-side live view: one line per trial event (start, result, completion, error).

    ``write`` receives each line (``print`` when None). It is not pickled with the experiment: a view
    restored by ``Tuner.restore`` writes to the writer set with :func:`restored_views_write_to`
    around that call, else prints.
    """

    def __init__(self, num_samples: int, write: Callable[[str], None] | None = None, every: int = 1):
        self.num_samples = num_samples
        self.write = write
        self.every = max(1, int(every))
        self.t0 = time.time()
        self.done: set[str] = set()
        self.running: set[str] = set()

    def __getstate__(self):
        d = dict(self.__dict__)
        d["write"] = None  # writers (rich consoles, closures) don't pickle into experiment state
        return d

    def __setstate__(self, d):  # restored with the experiment: times count from the restore
        self.__dict__.update(d)
        self.write = _restore_write.get()
        self.t0 = time.time()

    def _w(self, msg: str) -> None:
        line = f"[{time.time() - self.t0:6.1f}s] {msg}  (running {len(self.running)}, done {len(self.done)}/{self.num_samples})"
        (self.write or print)(line)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        c = trial.config
        shown = ", ".join(f"{k}={_fmt(c[k])}" for k in ("policy", "tau", "alpha", "expansion_interval", "lr") if k in c)
        self._w(f"trial {trial.trial_id} started: {shown}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        it = int(result.get("training_iteration", 0))
        if it % self.every and not result.get("final"):
            return
        self._w(
            f"trial {trial.trial_id} epoch {int(result.get('epoch', it - 1)) + 1:>3}  val_acc {result.get('val_acc', float('nan')):.4f}"
            f"  params {int(result.get('n_params', 0)):>6}  growth {int(result.get('n_growth_events', 0)):>2}"
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        r = trial.last_result or {}
        how = "finished" if r.get("final") else "stopped by ASHA"
        self._w(f"trial {trial.trial_id} {how} at epoch {int(r.get('epoch', 0)) + 1}: val_acc {r.get('val_acc', float('nan')):.4f}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        self._w(f"trial {trial.trial_id} ERROR (see {trial.local_path})")


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)

