"""The trials' MLflow metrics and models, logged by the search's driver off the trials' path.

A trial (:func:`~senn_automl.integrations.tune.trainable.train_senn`) creates its MLflow run, logs its
params and growth log, and hands the rest to the driver through Ray Tune:

* its metrics (per epoch, per growth check): :class:`~senn_automl.integrations.tracking.MLflowCallback`
  passes them to ``defer_metrics``, and the trial sends them with its next report, under
  :data:`METRICS_KEY`;
* its models (growth checkpoints, the final model, whose job also draws the run's growth plot): the
  callback writes each as a deferred model job (a checkpoint plus
  :data:`~senn_automl.integrations.tracking.MODEL_JOB_FILE`), and the trial sends the jobs with its
  next Tune checkpoint, in the folder :data:`MODELS_DIR`.

In the driver, :class:`MLflowRelay` (a Tune callback) logs them on a thread of its own while the trials
train: the metrics in one ``log_batch`` per trial every :attr:`MLflowRelay.batch_results` results (and
before the trial's models, so MLflow links each model to its step's metrics), the models from a copy of
their folders. A trial thus waits for none of the export, logging and registration (``torch.export``
alone is half of a growth checkpoint's logging) nor for a database write per epoch (BENCHMARKS §5).
The driver processes every result a trial reports while the search runs, so a trial that Tune stops
(ASHA, PBT) or that crashes after a report loses no reported epoch. The metrics of a report the
driver never processed (a trial killed mid-report, the time budget, Ctrl-C) and of batches not yet
sent by a driver killed outright (at most ``batch_results`` results per trial) are lost; no model
is: a job leaves the driver's spool folder only once it is logged, its id then goes to the spool's
ledger (:data:`LEDGER`), and :func:`flush_relay`, which ``run_search`` calls after ``Tuner.fit``,
logs every job it finds in the experiment's checkpoints (those of unprocessed reports included) or
in the spool (those of a driver killed before a ``--resume``) that the ledger does not list.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import warnings
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow.fs
from ray import tune

#: the folder of a Tune checkpoint that carries the trial's deferred models, one subfolder each
MODELS_DIR = "mlflow_models"
#: the key of a Tune result that carries the trial's metrics for MLflow, ``[key, value, timestamp_ms, step]`` rows
METRICS_KEY = "mlflow_metrics"
#: attempts at one batch of metrics (1 s, then 2 s apart) before it is given up with a warning
METRIC_ATTEMPTS = 3
#: the spool's file of logged job ids, one per line
LEDGER = "logged.txt"

#: the loggers of this process (a restored Tuner unpickles its own), which :func:`flush_relay` waits for
_LIVE: "weakref.WeakSet[MLflowRelay]" = weakref.WeakSet()


class MLflowRelay(tune.Callback):
    """Tune callback: log the metrics and deferred models that trials send with their results and
    checkpoints to the MLflow store at ``tracking_uri``, on one background thread (in order), the models
    from a copy in the local folder ``spool``.

    A model job that fails to log is warned about (``RuntimeWarning``) and stays in the spool, where
    :func:`flush_relay` tries it again; metrics that fail are warned about. Picklable
    (``Tuner.restore`` unpickles it): the thread, its queue and the unsent metrics are made anew.
    """

    #: results of a trial whose metrics go in one ``log_batch``
    batch_results = 10

    def __init__(self, tracking_uri: str, spool: str | Path):
        self.tracking_uri = str(tracking_uri)
        self.spool = Path(spool)
        self._start()

    def _start(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future] = []
        self._unsent: dict[str, list[list]] = {}  # run id -> metric rows not yet sent
        self._results: dict[str, int] = {}  # run id -> results whose rows are unsent
        _LIVE.add(self)

    def __getstate__(self):
        return {"tracking_uri": self.tracking_uri, "spool": self.spool}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._start()

    def _submit(self, fn, *args) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="senn-mlflow-relay")
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._pool.submit(fn, *args))

    def _send(self, run_id: str | None) -> None:
        rows = self._unsent.pop(run_id, None)
        self._results.pop(run_id, None)
        if rows:
            self._submit(_log_metrics, run_id, rows, self.tracking_uri)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        # taken out of the result: Tune's JSON and CSV loggers (called after this callback) need not store them
        rows, run_id = result.pop(METRICS_KEY, None), result.get("mlflow_run_id")
        if not rows or not run_id:
            return
        self._unsent.setdefault(run_id, []).extend(rows)
        self._results[run_id] = self._results.get(run_id, 0) + 1
        if self._results[run_id] >= self.batch_results:
            self._send(run_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._send((trial.last_result or {}).get("mlflow_run_id"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._send((trial.last_result or {}).get("mlflow_run_id"))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._send((trial.last_result or {}).get("mlflow_run_id"))  # first: MLflow links a model to its step's metrics
        try:
            # not those logged already: Tune hands a checkpoint over again when it pauses a trial (PBT)
            folders = _copy_jobs(checkpoint.filesystem, checkpoint.path, self.spool, _logged(self.spool))
        # Broad on purpose: Tune ends the whole search on an exception in a callback; the jobs stay in
        # the checkpoint, where flush_relay finds them
        except Exception as exc:
            warnings.warn(f"deferred models of {trial.trial_id} not copied from {checkpoint.path}: {exc}; "
                          f"they are logged after the search", RuntimeWarning, stacklevel=2)
            return
        for folder in folders:
            self._submit(_log_job, folder, self.tracking_uri, self.spool)

    def wait(self) -> None:
        """Send the unsent metrics, block until everything handed to the thread is logged or has
        failed, and stop the thread."""
        for run_id in list(self._unsent):
            self._send(run_id)
        futures, self._futures = self._futures, []
        for f in futures:
            f.result()  # the jobs warn instead of raising
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _log_metrics(run_id: str, rows: list[list], tracking_uri: str) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    metrics = [Metric(k, float(v), int(t), int(s)) for k, v, t, s in rows]
    for attempt in range(METRIC_ATTEMPTS):
        try:
            MlflowClient(tracking_uri).log_batch(run_id, metrics=metrics)
            return
        # Broad on purpose: MLflow wraps store errors, but a server may also be unreachable; training goes on
        except Exception as exc:
            if attempt + 1 == METRIC_ATTEMPTS:
                warnings.warn(f"{len(rows)} metric values not logged to MLflow run {run_id} ({METRIC_ATTEMPTS} attempts): "
                              f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
            else:  # a locked sqlite store or a busy server: wait a little, then again
                time.sleep(2.0 ** attempt)


def live_relays() -> list[MLflowRelay]:
    """The :class:`MLflowRelay` objects of this process (those a restored Tuner unpickled included)."""
    return list(_LIVE)


_ledger_lock = threading.Lock()


def _logged(spool: Path) -> set[str]:
    path = spool / LEDGER
    return set(path.read_text().split()) if path.is_file() else set()


def _log_job(folder: Path, tracking_uri: str, spool: Path) -> bool:
    """Log one spooled job (a folder named by its job id, see :func:`_copy_jobs`) unless the ledger
    lists it; on success add it to the ledger and remove the folder. Returns whether it is logged now;
    warns on failure and keeps the folder."""
    from senn_automl.integrations.tracking import log_model_job

    if not folder.is_dir():  # handed over twice (a trial's checkpoint again at a pause) and logged the first time
        return True
    job_id = folder.name
    try:
        if job_id not in _logged(spool):
            log_model_job(folder, tracking_uri=tracking_uri)
            with _ledger_lock, open(spool / LEDGER, "a") as f:
                f.write(job_id + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        return True
    # Broad on purpose: MLflow, the store, torch.export or a damaged folder; the job stays for a retry
    except Exception as exc:
        warnings.warn(f"deferred model {folder.name} not logged to MLflow: {type(exc).__name__}: {exc}; "
                      f"it stays in {folder.parent} for the next flush", RuntimeWarning, stacklevel=2)
        return False


def _copy_jobs(fs: pyarrow.fs.FileSystem, checkpoint_path: str, spool: Path, done: set[str] = frozenset()) -> list[Path]:
    """Copy the job folders of one checkpoint (``<checkpoint>/MODELS_DIR/*``) whose ids are not in
    ``done`` into ``spool`` (as ``<spool>/<job id>``); the new local folders. Tune may delete the
    checkpoint after this (``num_to_keep``), so the copy is made at once."""
    from senn_automl.integrations.tracking import MODEL_JOB_FILE

    src = f"{checkpoint_path.rstrip('/')}/{MODELS_DIR}"
    if fs.get_file_info(src).type != pyarrow.fs.FileType.Directory:
        return []
    out = []
    for entry in fs.get_file_info(pyarrow.fs.FileSelector(src)):
        if entry.type != pyarrow.fs.FileType.Directory:
            continue
        with fs.open_input_stream(f"{entry.path}/{MODEL_JOB_FILE}") as f:
            job_id = str(json.loads(f.read())["job_id"])
        if job_id in done:
            continue
        dest = spool / job_id
        if not dest.exists():  # copied whole or not at all: a partial copy would block the job for good
            tmp = spool / f".partial-{job_id}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            try:
                pyarrow.fs.copy_files(entry.path, str(tmp), source_filesystem=fs,
                                      destination_filesystem=pyarrow.fs.LocalFileSystem())
                tmp.rename(dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        out.append(dest)
    return out


def flush_relay(tracking_uri: str, spool: str | Path, experiment_path: str | Path | None = None) -> dict[str, int]:
    """Let this process's :class:`MLflowRelay` objects send what they hold and wait for their threads,
    then log (in this thread) every job the
    ledger of ``spool`` does not list: those in the checkpoints below ``experiment_path`` (a local
    folder or a URI Ray Tune's storage takes, e.g. ``s3://...``), and those left in ``spool``.
    Returns ``{"logged": n, "failed": m}`` of this sweep (failed jobs are warned about and stay in
    ``spool``)."""
    for logger in list(_LIVE):
        logger.wait()
    spool = Path(spool)
    done = _logged(spool)
    if experiment_path is not None:
        path = str(experiment_path)
        if "://" in path:
            fs, root = pyarrow.fs.FileSystem.from_uri(path)
        else:
            fs, root = pyarrow.fs.LocalFileSystem(), str(Path(path).resolve())
        if fs.get_file_info(root).type == pyarrow.fs.FileType.Directory:
            for entry in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)):
                if entry.type == pyarrow.fs.FileType.Directory and entry.base_name == MODELS_DIR:
                    checkpoint = entry.path.rstrip("/")[: -len(MODELS_DIR) - 1]
                    try:
                        _copy_jobs(fs, checkpoint, spool, done)
                    # Broad on purpose: one damaged checkpoint (cut off mid-copy, a full disk) must not end
                    # the search's summary; its jobs are named in the warning
                    except Exception as exc:
                        warnings.warn(f"deferred models in {checkpoint} not copied: {type(exc).__name__}: {exc}",
                                      RuntimeWarning, stacklevel=2)
    counts = {"logged": 0, "failed": 0}
    if spool.is_dir():
        for folder in sorted(p for p in spool.iterdir() if p.is_dir() and not p.name.startswith(".")):
            counts["logged" if _log_job(folder, tracking_uri, spool) else "failed"] += 1
    return counts
