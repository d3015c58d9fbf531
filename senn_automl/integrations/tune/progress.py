"""The driver-side views of a search, each a ``ray.tune.Callback``: :class:`LiveView` (a ``rich`` live
display for terminals: a progress bar over trials with the best value so far, one row per running
trial) and :class:`ProgressView` (plain event lines, for logs and pipes)."""

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


def _metric(result: dict) -> tuple[str, float | None]:
    """(name, value) of a result's validation metric: ``val_r2`` for regression, else ``val_acc``."""
    name = "val_r2" if "val_r2" in result else "val_acc"
    return name, result.get(name)


class ProgressView(tune.Callback):
    """Driver-side live view: one line per trial event (start, result, completion, error).

    ``write`` receives each line (``print`` when None). It is not pickled with the experiment: a view
    restored by ``Tuner.restore`` writes to the writer set with :func:`restored_views_write_to`
    around that call, else prints.
    """

    def __init__(self, num_samples: int, write: Callable[[str], None] | None = None, every: int = 1,
                 per_epoch: bool = True):
        self.num_samples = num_samples
        self.write = write
        self.every = max(1, int(every))
        self.per_epoch = bool(per_epoch)
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
        self._w(f"trial {trial.trial_id} started: {_settings(trial.config)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        it = int(result.get("training_iteration", 0))
        if not getattr(self, "per_epoch", True) or (it % self.every and not result.get("final")):
            return
        name, value = _metric(result)
        self._w(
            f"trial {trial.trial_id} epoch {int(result.get('epoch', it - 1)) + 1:>3}  {name} {float('nan') if value is None else value:.4f}"
            f"  params {int(result.get('n_params', 0)):>6}  growth {int(result.get('n_growth_events', 0)):>2}"
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        r = trial.last_result or {}
        how = "finished" if r.get("final") else "stopped by ASHA"
        name, value = _metric(r)
        self._w(f"trial {trial.trial_id} {how} at epoch {int(r.get('epoch', 0)) + 1}: {name} {float('nan') if value is None else value:.4f}")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        self._w(f"trial {trial.trial_id} ERROR (see {trial.local_path})")


class LiveView(tune.Callback):
    """Live terminal view of a search (``rich``): a progress bar over the trials with the elapsed time
    and the best ``val_acc`` of a finished trial so far, and a table with one row per running trial
    (its growth settings, epoch, parameters, validation accuracy and growth events), redrawn in place.

    ``console`` : a ``rich.console.Console`` (default: a new one on stdout). Start and stop are
    Tune's ``setup`` and ``on_experiment_end``; :meth:`close` stops it too (idempotent), for a run
    that ends by an exception. Not pickled with the experiment: a view restored by
    ``Tuner.restore`` draws on a new console.
    """

    def __init__(self, num_samples: int, console=None):
        self.num_samples = int(num_samples)
        self.console = console
        self.rows: dict[str, dict] = {}
        self.done = 0
        self.best: float | None = None
        self.best_trial: str | None = None
        self.metric = "val_acc"  # val_r2 once a regression trial reports
        self._live = None
        self._progress = None
        self._task = None

    def __getstate__(self):
        d = dict(self.__dict__)
        d.update(console=None, _live=None, _progress=None, _task=None)  # consoles and threads don't pickle
        return d

    def setup(self, **info):
        from rich.console import Console
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if self._live is not None:
            return
        self.console = self.console or Console()
        self._progress = Progress(
            TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[best]}"), console=self.console,
        )
        self._task = self._progress.add_task("trials", total=self.num_samples, completed=self.done, best=self._best_text())
        self._live = Live(self._render(), console=self.console, refresh_per_second=4)
        self._live.start()

    def close(self) -> None:
        """Stop drawing (the last screen stays on the terminal)."""
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None

    def _best_text(self) -> str:
        return f"best {self.metric}: –" if self.best is None else f"best {self.metric}: {self.best:.4f} (trial {self.best_trial})"

    def _render(self):
        from rich.console import Group
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for col in ("trial", "settings", "epoch", "params", self.metric, "growth"):
            table.add_column(col, justify="left" if col in ("trial", "settings") else "right")
        for tid, r in self.rows.items():
            table.add_row(tid, r["settings"], str(r.get("epoch", "")), str(r.get("params", "")),
                          "" if r.get("val_acc") is None else f"{r['val_acc']:.4f}", str(r.get("growth", "")))
        if not self.rows:
            table.add_row("(no trial running)", "", "", "", "", "")
        parts = [table] if self._progress is None else [self._progress, table]
        return Group(*parts)

    def _refresh(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=self.done, best=self._best_text())
        if self._live is not None:
            self._live.update(self._render())

    def on_trial_start(self, iteration, trials, trial, **info):
        self.rows[trial.trial_id] = {"settings": _settings(trial.config)}
        self._refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = self.rows.setdefault(trial.trial_id, {"settings": ""})
        self.metric, value = _metric(result)
        row.update(epoch=int(result.get("epoch", 0)) + 1, params=int(result.get("n_params", 0)),
                   val_acc=value, growth=int(result.get("n_growth_events", 0)))
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.rows.pop(trial.trial_id, None)
        self.done += 1
        r = trial.last_result or {}
        _, value = _metric(r)
        if r.get("final") and value is not None and (self.best is None or value > self.best):
            self.best, self.best_trial = float(value), trial.trial_id
        self._refresh()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.rows.pop(trial.trial_id, None)
        self.done += 1
        if self.console is not None:
            self.console.print(f"trial {trial.trial_id} ERROR (see {trial.local_path})")
        self._refresh()

    def on_experiment_end(self, trials, **info):
        self.close()


#: trial settings shown by the views
SHOWN_SETTINGS = ("policy", "tau", "alpha", "expansion_interval", "lr")


def _settings(config) -> str:
    return ", ".join(f"{k}={_fmt(config[k])}" for k in SHOWN_SETTINGS if k in config)


def _fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)

