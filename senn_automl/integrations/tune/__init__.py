"""Ray Tune + Optuna search over growth hyperparameters, with every growth checkpoint in MLflow.

Pieces, from the inside out:

* :class:`TuneReportCallback` — a trainer callback that sends one ``ray.tune.report`` per epoch,
  with a Tune checkpoint attached when the epoch grew the network or is the last one.
* :func:`train_senn` — the function trainable. It rebuilds a trial from its Tune checkpoint
  (architecture spec first, then weights) or builds it from the flat trial config, and trains
  with an MLflow callback (child run, a registered model version per growth event and a final
  one) followed by the Tune reporter.
* :func:`run_search` — the engine behind ``senn-automl tune``: validates every input before any
  trial starts, starts or joins a Ray cluster, runs ``PruneAwareOptunaSearch`` (or a
  multi-objective ``OptunaSearch``) with ASHA, resumes interrupted searches, and after the search
  marks the champion model version and logs a leaderboard to the study's parent MLflow run.

This module imports Ray Tune and Optuna (the core modules never import it); MLflow and pandas are
imported where they are used.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from senn_automl.integrations.compare import pareto_front
from senn_automl.training.trainer import Callback

__all__ = [
    "PLUMBING_KEYS",
    "TuneReportCallback",
    "train_senn",
    "split_config",
    "PruneAwareOptunaSearch",
    "ProgressView",
    "OverriddenSpace",
    "run_search",
    "SearchResult",
    "SearchSetupError",
    "ray_env_defaults",
    "pareto_front",
]

#: Trial-config keys that carry wiring (tracking, study), not model/growth settings.
PLUMBING_KEYS = ("mlflow_uri", "experiment_id", "parent_run_id", "study_name", "registered_model_name", "dataset", "data_root")

#: Metrics sent to Tune every epoch.
REPORTED_METRICS = ("val_acc", "val_loss", "train_loss", "n_params", "eta", "n_growth_events", "epoch", "final")

DEFAULT_EXPERIMENT = "senn-automl"
DEFAULT_RAY_TMPDIR = "/tmp/senn-ray"  # short: Ray's AF_UNIX socket paths must stay < 107 bytes


class SearchSetupError(ValueError):
    """An input of :func:`run_search` is invalid or a service is unreachable (raised before any trial)."""


# ----------------------------------------------------------------------------------- env hygiene
def ray_env_defaults(*, local: bool = True) -> None:
    """Set the Ray environment variables this project relies on (only those not already set).

    No usage-stats upload, trials keep the driver's working directory (we pass absolute paths
    anyway), frequent experiment-state snapshots so an interrupted search can be restored, and the
    new console output off so our own progress view is the only one.
    ``RAY_AUTH_MODE`` is left to the caller: it must be the same on every ``ray start``, ``ray.init``
    and CLI call of a cluster (see the error raised when a connection fails).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "100000")
    os.environ.setdefault("TUNE_WARN_INSUFFICENT_RESOURCE_THRESHOLD_S", "600")
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "1")


# ----------------------------------------------------------------------------------- reporting
class TuneReportCallback(Callback):
    """Report each epoch to Ray Tune (``ray.tune.report``), one report per epoch.

    Metrics: ``val_acc, val_loss, train_loss, n_params, eta`` (0.0 before the first growth
    check), ``n_growth_events, epoch`` and ``final`` (1.0 on the last report of a trial that
    trained to its end, by ``max_epochs`` or early stopping; 0.0 otherwise).

    A Tune checkpoint (:meth:`Trainer.save_checkpoint` in a temporary directory, copied by Tune)
    is attached when the epoch grew the network (``record["grew"] > 0``) or is the last epoch.
    The last epoch's report is sent from ``on_fit_end``, after the trainer restored its best
    model, so the final checkpoint and metrics describe the model the run ends with; when
    ``val_data`` is given its ``val_acc``/``val_loss`` are re-measured on that model.

    ``tune.report`` may raise ``SystemExit`` (Tune stops the trial: ASHA, ``max_t``); callers
    must let it propagate (see :func:`train_senn`).
    """

    def __init__(self, val_data: tuple | None = None):
        self.val_data = val_data
        self._pending: dict[str, Any] | None = None
        #: metrics of the final model (set just before the last report), None until then
        self.final_metrics: dict[str, Any] | None = None

    @staticmethod
    def metrics(record: dict[str, Any]) -> dict[str, Any]:
        eta = record.get("eta")
        return {
            "val_acc": float(record["val_acc"]),
            "val_loss": float(record["val_loss"]),
            "train_loss": float(record["train_loss"]),
            "n_params": int(record["n_params"]),
            "eta": 0.0 if eta is None or not math.isfinite(float(eta)) else float(eta),
            "n_growth_events": int(record["n_growth_events"]),
            "epoch": int(record["epoch"]),
            "final": 0.0,
        }

    @staticmethod
    def _is_last(trainer) -> bool:
        return trainer.epoch >= trainer.config.max_epochs or trainer.stopped_early

    def _report(self, trainer, metrics: dict[str, Any], checkpoint: bool) -> None:
        if not checkpoint:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="senn-ckpt-") as d:
            trainer.save_checkpoint(d)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    def on_epoch_end(self, trainer, record):
        metrics = self.metrics(record)
        if self._is_last(trainer):
            metrics["final"] = 1.0
            self._pending = metrics  # sent from on_fit_end, after the best model is restored
            return
        self._report(trainer, metrics, checkpoint=int(record.get("grew") or 0) > 0)

    def on_fit_end(self, trainer):
        if self._pending is None:
            return
        metrics, self._pending = self._pending, None
        metrics["n_params"] = int(trainer.model.n_params())
        if self.val_data is not None:
            import torch

            Xv = torch.as_tensor(self.val_data[0], dtype=torch.float32).to(trainer.device)
            yv = torch.as_tensor(self.val_data[1], dtype=torch.long).to(trainer.device)
            metrics["val_loss"], metrics["val_acc"] = (float(v) for v in trainer.evaluate(Xv, yv))
        self.final_metrics = dict(metrics)
        self._report(trainer, metrics, checkpoint=True)


# ----------------------------------------------------------------------------------- trainable
def _trial_resources() -> tuple[int, float]:
    """(CPUs, GPUs) granted to the current Tune trial; (1, 0) when unknown."""
    try:
        res = tune.get_context().get_trial_resources().required_resources
        return max(1, int(res.get("CPU", 1))), float(res.get("GPU", 0.0))
    except Exception:  # not in a trial, or an older resource object
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)), 0.0


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a trial config into (model/growth config, plumbing) by :data:`PLUMBING_KEYS`."""
    conf = {k: v for k, v in config.items() if k not in PLUMBING_KEYS}
    plumbing = {k: config[k] for k in PLUMBING_KEYS if k in config}
    return conf, plumbing


def train_senn(config: dict[str, Any], data: Sequence | None = None) -> None:
    """Ray Tune function trainable: grow one network with the trial's config.

    ``config`` is the flat trial config (keys of :data:`senn_automl.training.config.DEFAULTS`) plus the
    plumbing keys ``mlflow_uri, experiment_id, parent_run_id, study_name,
    registered_model_name, dataset, data_root``. ``data`` = ``(X_train, y_train, X_val, y_val,
    n_features, n_classes, image_shape)`` (image_shape (C, H, W) or None), passed with ``tune.with_parameters`` (object store); without it the dataset named
    by ``config["dataset"]`` is loaded in the trial.

    With a Tune checkpoint (retry after a failure, ``Tuner.restore``) the trainer is rebuilt from
    it with :func:`~senn_automl.training.trainer.load_checkpoint` and continues; otherwise it is built with
    :func:`senn_automl.training.config.build`. Callbacks: the MLflow callback first (so metrics and model
    versions are logged before Tune may stop the trial inside ``report``), then
    :class:`TuneReportCallback`. The MLflow run ends FINISHED when Tune stops the trial
    (``SystemExit``) or training ends, FAILED on any other exception.
    """
    import torch

    from senn_automl.training.config import build, resolve
    from senn_automl.training.trainer import Trainer, load_checkpoint

    conf, plumbing = split_config(dict(config))
    if data is None:
        from senn_automl.data import load_dataset

        ds = load_dataset(plumbing.get("dataset", "digits"), seed=int(conf.get("seed", 0)), root=plumbing.get("data_root"))
        data = (ds.X_train, ds.y_train, ds.X_val, ds.y_val, ds.n_features, ds.n_classes, ds.image_shape)
    X_tr, y_tr, X_val, y_val, n_features, n_classes, image_shape = data

    cpus, gpus = _trial_resources()
    torch.set_num_threads(cpus)
    if "device" not in conf or conf["device"] == "auto":
        conf["device"] = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
    conf["progress"] = False
    conf = resolve(conf)

    ctx = tune.get_context()
    trial_name, trial_id = ctx.get_trial_name(), ctx.get_trial_id()
    callbacks: list[Callback] = []
    mlf = None
    if plumbing.get("mlflow_uri"):
        from senn_automl.integrations.tracking import MLflowCallback

        tags = {"ray.trial_id": str(trial_id), "ray.trial_name": str(trial_name)}
        if plumbing.get("study_name"):
            tags["optuna.study"] = str(plumbing["study_name"])
        if plumbing.get("dataset"):
            tags["dataset"] = str(plumbing["dataset"])
        mlf = MLflowCallback(
            plumbing["mlflow_uri"],
            plumbing.get("experiment_id"),
            parent_run_id=plumbing.get("parent_run_id"),
            run_name=str(trial_name),
            params=conf,
            registered_model_name=plumbing.get("registered_model_name"),
            tags=tags,
        )
        callbacks.append(mlf)
    reporter = TuneReportCallback(val_data=(X_val, y_val))
    callbacks.append(reporter)

    try:
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                trainer = load_checkpoint(d, callbacks=callbacks, device=conf["device"], progress=False)
        else:
            model, policy, train = build(conf, n_features, n_classes, image_shape)
            trainer = Trainer(model, policy, train, callbacks)
        trainer.fit(X_tr, y_tr, X_val, y_val)
    except SystemExit:  # Tune stopped the trial inside tune.report (ASHA, max_t): a normal end
        if mlf is not None:
            mlf.close("FINISHED")
            _log_final_metrics(mlf, reporter)
        raise
    except BaseException:
        if mlf is not None:
            mlf.close("FAILED")
        raise
    else:
        if mlf is not None:
            mlf.close("FINISHED")
            _log_final_metrics(mlf, reporter)


def _log_final_metrics(mlf, reporter: TuneReportCallback) -> None:
    """Log the final model's validation metrics (after the best-model restore) to the trial's run
    as ``final_val_acc`` / ``final_val_loss``; the per-epoch ``val_acc`` is the last epoch's."""
    m = reporter.final_metrics
    if not m or not getattr(mlf, "run_id", None):
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=mlf.tracking_uri)
        client.log_metric(mlf.run_id, "final_val_acc", float(m["val_acc"]), step=int(m["epoch"]))
        client.log_metric(mlf.run_id, "final_val_loss", float(m["val_loss"]), step=int(m["epoch"]))
    except Exception:  # tracking must not turn a finished trial into an error
        pass


# ----------------------------------------------------------------------------------- searcher
class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that records trials stopped early by the Tune scheduler as PRUNED.

    Plain OptunaSearch tells Optuna COMPLETE with the truncated value of an ASHA-stopped trial,
    which biases TPE. Here a trial counts as complete only when its last result has ``final == 1``
    (it trained to ``max_epochs``, or stopped by its own patience) or reached ``max_t``
    iterations. Works for single and multi-objective studies; results of trials that Optuna
    already finished (possible after a restore) are ignored. (Relies on OptunaSearch's private
    ``_ot_trials``, ``_ot_study``, ``_completed_trials``; tested against ray 2.60.)
    """

    def __init__(self, *args, max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._max_t = int(max_t)

    def restore(self, checkpoint_path: str):
        """Restore the pickled searcher, then list the study's orphaned RUNNING trials: trials a
        killed driver had asked Optuna for after Tune's last snapshot. New Tune trials adopt them
        (same parameters) before asking Optuna for more, so the study ends with ``num_samples``
        trials and none left RUNNING."""
        super().restore(checkpoint_path)
        known = {t._trial_id for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        self._adoptable = [t._trial_id for t in running if t._trial_id not in known]
        # the unpickled sampler's RNG is back at the snapshot: without a reseed it would replay the
        # samples drawn after it (the adopted trials' parameters) for the next new trials
        try:
            self._ot_study.sampler.reseed_rng()
        except Exception:
            pass

    def suggest(self, trial_id: str):
        adoptable = getattr(self, "_adoptable", None)
        if adoptable and callable(self._space) and trial_id not in self._ot_trials:
            # re-running the define-by-run space on it returns the stored parameters
            self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, adoptable.pop(0))
        return super().suggest(trial_id)

    def on_trial_result(self, trial_id, result):
        # After Tuner.restore, a trial that Optuna already finished (told before the driver was
        # killed, but after Tune's last experiment snapshot) runs again from its checkpoint; its
        # intermediate values can no longer be stored, which must not fail the whole search.
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def on_trial_complete(self, trial_id, result=None, error=False):
        if (
            not error
            and result
            and not result.get("final")
            and result.get("training_iteration", self._max_t) < self._max_t
            and trial_id in self._ot_trials
            and trial_id not in self._completed_trials
        ):
            try:
                self._ot_study.tell(self._ot_trials[trial_id], None, state=optuna.trial.TrialState.PRUNED)
            except Exception:  # already finished in storage
                pass
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result=result, error=error)


# ----------------------------------------------------------------------------------- progress
class ProgressView(tune.Callback):
    """Driver-side live view: one line per trial event (start, result, completion, error)."""

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


# ----------------------------------------------------------------------------------- result
@dataclasses.dataclass
class SearchResult:
    """What :func:`run_search` returns.

    leaderboard : pandas DataFrame, one row per trial, best first: ``trial, policy, val_acc,
        n_params, growth_events, epochs, seconds, status`` (``complete`` / ``pruned`` / ``error``),
        ``mlflow_run_id``.
    champion_version : registered model version that got the ``champion`` alias (None if no final
        model was logged). champion_trial : its trial. champion_test_acc : accuracy of that
        registered model (loaded back with ``mlflow.pyfunc``) on the dataset's test split, which
        no trial trains or is selected on (None without a champion or a test split).
    pareto : DataFrame of the Optuna Pareto front (multi-objective) or None.
    optuna_states : counts of the study's trial states. versions : this study's registered versions.
    """

    leaderboard: Any
    champion_version: str | None
    champion_trial: str | None
    registered_model_name: str
    study_name: str
    storage: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    experiment_path: str
    out: str
    seconds: float
    resumed: bool = False
    pareto: Any = None
    optuna_states: dict = dataclasses.field(default_factory=dict)
    versions: list = dataclasses.field(default_factory=list)
    #: seconds spent validating inputs, starting/joining Ray, in ``Tuner.fit`` and summarising
    timings: dict = dataclasses.field(default_factory=dict)
    champion_test_acc: float | None = None
    #: why ``champion_test_acc`` could not be measured (the champion could not be loaded back), else None
    champion_test_error: str | None = None


# ----------------------------------------------------------------------------------- validation
@dataclasses.dataclass(frozen=True)
class OverriddenSpace:
    """A define-by-run search space whose returned constants are updated with ``overrides``
    (picklable, like the space it wraps). Tune lets the searcher's values win over ``param_space``,
    so fixed overrides must come from the space itself."""

    space: Any
    overrides: tuple

    def __call__(self, trial):
        return {**(self.space(trial) or {}), **dict(self.overrides)}


def _probe_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast when a ``host:port`` Ray address does not accept TCP connections."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SearchSetupError(f"--address {address!r} is not HOST:PORT (e.g. 127.0.0.1:6379, or 'auto')")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise SearchSetupError(
            f"Ray cluster at {address} is unreachable ({exc.strerror or exc}); start it with "
            f"`ray start --head --port={port}` or fix --address"
        ) from None


def _dry_sample(space, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sample the search space once in memory; returns (config, distributions)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(level)
    trial = study.ask()
    consts = space(trial) or {}
    if not isinstance(consts, dict):
        raise SearchSetupError(f"the search space returned {type(consts).__name__}, expected a dict of constants")
    return {**trial.params, **consts}, dict(trial.distributions)


def _max_epochs(conf: dict[str, Any], dists: dict[str, Any]) -> int:
    from senn_automl.training.config import DEFAULTS

    d = dists.get("max_epochs")
    if d is not None:
        if hasattr(d, "high"):
            return int(d.high)
        if hasattr(d, "choices"):
            return int(max(d.choices))
    return int(conf.get("max_epochs", DEFAULTS["max_epochs"]))


# ----------------------------------------------------------------------------------- engine
def run_search(
    dataset: str = "digits",
    search_space: str | os.PathLike = "quick",
    num_samples: int = 20,
    max_concurrent: int = 2,
    tracking_uri: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    address: str | None = None,
    resume: bool = False,
    multi_objective: bool = False,
    gpus_per_trial: float = 0,
    cpus_per_trial: int | None = None,
    storage_path: str | os.PathLike | None = None,
    seed: int = 0,
    registered_model_name: str | None = None,
    out: str | os.PathLike = "runs/tune",
    experiment_name: str = DEFAULT_EXPERIMENT,
    grace_period: int | None = None,
    reduction_factor: int = 2,
    num_to_keep: int = 4,
    ray_temp_dir: str | None = None,
    progress: Callable[[str], None] | None | bool = None,
    trial_overrides: dict[str, Any] | None = None,
    fixed_configs: list[dict[str, Any]] | None = None,
    scheduler: str = "asha",
    callbacks: Sequence[Any] | None = None,
    data_root: str | os.PathLike | None = None,
) -> SearchResult:
    """Run (or resume) a growth-hyperparameter search; returns a :class:`SearchResult`.

    Every input is checked before any trial starts, each failure raising
    :class:`SearchSetupError` (a ``ValueError``) that names the input: the dataset, the search space
    (loaded and sampled once, each sampled config built), the tracking URI (an unreachable server),
    the Ray address (TCP probe, then connect), the GPU request (against the cluster's GPUs).

    Parameters (the CLI options of ``senn-automl tune``)
    ----------------------------------------------------
    dataset : a dataset name of :func:`senn_automl.data.load_dataset`; data_root : its folder for the
        folder sets (mnist_idx, fashion_mnist, cifar10). search_space : a bundled name (``quick``, ``mlp``) or a YAML path.
    num_samples : trials. max_concurrent : trials at once; each gets ``cluster CPUs // max_concurrent``
        CPUs (at least 1) unless ``cpus_per_trial`` is given, and ``gpus_per_trial`` GPUs.
    tracking_uri : MLflow URI (default: ``MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlflow.db``).
    storage : SQLAlchemy URL of the Optuna study (default ``sqlite:///<out>/optuna.db``).
    study_name : default ``senn-<dataset>``; also the Tune experiment name and the MLflow parent run's
        study tag. address : ``None`` starts a local Ray instance; otherwise ``HOST:PORT`` / ``auto``.
    resume : restore the interrupted Tune experiment ``<storage_path>/<study_name>`` (unfinished and
        errored trials continue from their checkpoints); without a restorable experiment, start a new
        Tune run that continues the Optuna study of the same name.
    multi_objective : Optuna optimises (max val_acc, min n_params); ASHA still stops on val_acc.
    storage_path : Ray results folder (default ``<out>/ray_results``). seed : dataset split and TPE seed.
    registered_model_name : default ``senn-<dataset>``. out : output folder.
    progress : a ``write(str)`` for the live view, ``None``/``True`` prints, ``False`` is silent.
    trial_overrides : constants merged into every trial config (e.g. ``{"max_epochs": 6}``).
    fixed_configs : instead of sampling, evaluate exactly these configs (``points_to_evaluate``);
        ``num_samples`` is then their count. scheduler : ``"asha"`` or ``"fifo"`` (no early stop).
    callbacks : extra ``ray.tune.Callback`` objects for the run (driver side).
    """
    t_start = time.time()
    timings: dict[str, float] = {}
    ray_env_defaults()
    out = Path(out).expanduser().resolve()
    study_name = study_name or f"senn-{dataset}"
    registered_model_name = registered_model_name or f"senn-{dataset}"
    if fixed_configs:
        num_samples = len(fixed_configs)

    # ---- cheap validation, no services started yet
    if not isinstance(num_samples, int) or num_samples < 1:
        raise SearchSetupError(f"num_samples={num_samples!r} is invalid: use a whole number >= 1")
    if not isinstance(max_concurrent, int) or max_concurrent < 1:
        raise SearchSetupError(f"max_concurrent={max_concurrent!r} is invalid: use a whole number >= 1")
    if gpus_per_trial is None or gpus_per_trial < 0:
        raise SearchSetupError(f"gpus_per_trial={gpus_per_trial!r} is invalid: use a number >= 0")
    if cpus_per_trial is not None and cpus_per_trial < 1:
        raise SearchSetupError(f"cpus_per_trial={cpus_per_trial!r} is invalid: use a whole number >= 1")
    if scheduler not in ("asha", "fifo"):
        raise SearchSetupError(f"scheduler={scheduler!r} is invalid: use 'asha' or 'fifo'")

    from senn_automl.data import load_dataset
    from senn_automl.training.config import build, resolve

    try:
        ds = load_dataset(dataset, seed=seed, root=data_root)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise SearchSetupError(f"dataset: {exc}") from None

    from senn_automl.integrations.tune.search_space import load_search_space

    space = load_search_space(search_space)  # SearchSpaceError (a ValueError) names file, key, reason
    try:
        pickle.dumps(space)
    except Exception as exc:
        raise SearchSetupError(f"search space {search_space!r} is not picklable ({exc}); Ray saves it with pickle") from None
    if trial_overrides:
        space = OverriddenSpace(space, tuple(sorted(trial_overrides.items())))
    try:
        sample, dists = _dry_sample(space, seed)
        for fc in fixed_configs or []:
            build(resolve({**split_config(sample)[0], **split_config(fc)[0]}), ds.n_features, ds.n_classes, ds.image_shape)
        build(resolve(split_config(sample)[0]), ds.n_features, ds.n_classes, ds.image_shape)
    except SearchSetupError:
        raise
    except (ValueError, TypeError) as exc:
        raise SearchSetupError(f"search space {search_space!r} gives an invalid trial config: {exc}") from None
    max_t = _max_epochs(sample, {} if trial_overrides and "max_epochs" in trial_overrides else dists)
    if grace_period is None:
        grace_period = max(1, min(max_t, max(2, max_t // 4)))

    from senn_automl.integrations.tracking import check_tracking_uri, resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(tracking_uri)
    try:
        check_tracking_uri(tracking_uri)
    except ValueError as exc:
        raise SearchSetupError(f"tracking URI: {exc}") from None

    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{out / 'optuna.db'}"
    storage_path = Path(storage_path).expanduser().resolve() if storage_path else out / "ray_results"
    experiment_path = storage_path / study_name

    try:
        rdb = optuna.storages.RDBStorage(storage)
    except Exception as exc:
        raise SearchSetupError(f"Optuna storage {storage!r} cannot be opened: {exc}") from None
    try:
        existing = optuna.load_study(study_name=study_name, storage=rdb)
        directions = [d.name.lower() for d in existing.directions]
        want = ["maximize", "minimize"] if multi_objective else ["maximize"]
        if existing.trials and directions != want:
            raise SearchSetupError(
                f"Optuna study {study_name!r} in {storage} optimises {directions}, not {want}: "
                f"use another --study-name or {'drop' if multi_objective else 'add'} --multi-objective"
            )
    except KeyError:
        pass

    if address is not None:
        _probe_address(address)

    # ---- Ray
    import ray

    timings["validate_s"] = time.time() - t_start
    t_ray = time.time()
    started_ray = False
    if not ray.is_initialized():
        try:
            if address is None:
                temp = ray_temp_dir or os.environ.get("SENN_RAY_TMPDIR") or DEFAULT_RAY_TMPDIR
                ray.init(
                    address="local",
                    num_cpus=os.cpu_count() or 1,
                    num_gpus=None,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="ERROR",
                    object_store_memory=256 * 1024**2,
                    _temp_dir=temp,
                    configure_logging=True,
                )
            else:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except Exception as exc:
            raise SearchSetupError(
                f"cannot {'start a local Ray instance' if address is None else 'connect to the Ray cluster at ' + address}: "
                f"{type(exc).__name__}: {exc} (RAY_AUTH_MODE must match the cluster's: now "
                f"{os.environ.get('RAY_AUTH_MODE', 'unset')})"
            ) from None
        started_ray = True
    timings["ray_init_s"] = time.time() - t_ray
    try:
        return _run_started(
            ray=ray, tune=tune, optuna=optuna, rdb=rdb, ds=ds, space=space, dataset=dataset, data_root=data_root,
            search_space=search_space,
            num_samples=num_samples, max_concurrent=max_concurrent, tracking_uri=tracking_uri, storage=storage,
            study_name=study_name, address=address, resume=resume, multi_objective=multi_objective,
            gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial, storage_path=storage_path,
            experiment_path=experiment_path, seed=seed, registered_model_name=registered_model_name, out=out,
            experiment_name=experiment_name, grace_period=grace_period, reduction_factor=reduction_factor,
            num_to_keep=num_to_keep, progress=progress, trial_overrides=trial_overrides or {},
            fixed_configs=fixed_configs, max_t=max_t, t_start=t_start, scheduler=scheduler,
            extra_callbacks=list(callbacks or []), timings=timings,
        )
    finally:
        if started_ray:
            ray.shutdown()


def _run_started(*, ray, tune, optuna, rdb, ds, space, dataset, data_root, search_space, num_samples, max_concurrent, tracking_uri,
                 storage, study_name, address, resume, multi_objective, gpus_per_trial, cpus_per_trial, storage_path,
                 experiment_path, seed, registered_model_name, out, experiment_name, grace_period, reduction_factor,
                 num_to_keep, progress, trial_overrides, fixed_configs, max_t, t_start, scheduler,
                 extra_callbacks, timings) -> SearchResult:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from senn_automl.integrations.tracking import end_parent_run, start_parent_run

    # ---- resources (validated against the cluster before any trial)
    res = ray.cluster_resources()
    cluster_cpus = int(res.get("CPU", 0))
    cluster_gpus = float(res.get("GPU", 0))
    if gpus_per_trial > 0 and cluster_gpus < gpus_per_trial:
        raise SearchSetupError(
            f"gpus_per_trial={gpus_per_trial} but the Ray cluster has {cluster_gpus:g} GPU(s): trials would stay "
            f"PENDING forever; use --gpus-per-trial 0"
        )
    if cpus_per_trial is None:
        cpus_per_trial = max(1, cluster_cpus // max_concurrent)
    if cpus_per_trial > max(cluster_cpus, 1):
        raise SearchSetupError(f"cpus_per_trial={cpus_per_trial} exceeds the cluster's {cluster_cpus} CPUs")
    resources = {"cpu": cpus_per_trial, "gpu": gpus_per_trial}

    # ---- MLflow parent run (created in the driver before trials: no schema/experiment races)
    tags = {
        "dataset": dataset,
        "search_space": str(search_space),
        "optuna.storage": storage,
        "multi_objective": str(bool(multi_objective)).lower(),
        "ray.experiment_path": str(experiment_path),
    }
    previous = _previous_parent_run(tracking_uri, experiment_name, study_name, experiment_path) if resume else None
    if previous is not None:  # one parent run per study: a resumed search reopens it
        experiment_id, parent_run_id = previous
    else:
        experiment_id, parent_run_id = start_parent_run(tracking_uri, experiment_name, study_name, tags)
    status = "FAILED"
    try:
        param_space = {
            "mlflow_uri": tracking_uri,
            "experiment_id": experiment_id,
            "parent_run_id": parent_run_id,
            "study_name": study_name,
            "registered_model_name": registered_model_name,
            "dataset": dataset,
            "data_root": None if data_root is None else str(data_root),
        }
        data = (ds.X_train, ds.y_train, ds.X_val, ds.y_val, ds.n_features, ds.n_classes, ds.image_shape)
        trainable = tune.with_resources(tune.with_parameters(train_senn, data=data), resources)

        resumed = False
        if resume and tune.Tuner.can_restore(str(experiment_path)):
            tuner = tune.Tuner.restore(
                str(experiment_path), trainable=trainable, resume_unfinished=True, resume_errored=True,
                param_space=param_space,
            )
            resumed = True
        else:
            if resume:  # no restorable Tune experiment: a new Tuner continues the Optuna study
                _fail_zombie_trials(optuna, rdb, study_name)
                done = _finished_trials(optuna, rdb, study_name)
                if done >= num_samples:
                    raise SearchSetupError(
                        f"--resume: study {study_name!r} already has {done} finished trials (>= --num-samples "
                        f"{num_samples}) and {experiment_path} cannot be restored; raise --num-samples to add trials"
                    )
                num_samples -= done
            sampler = optuna.samplers.TPESampler(seed=seed)
            points = [split_config(c)[0] for c in fixed_configs] if fixed_configs else None
            if multi_objective:
                searcher = PruneAwareOptunaSearch(
                    space, metric=["val_acc", "n_params"], mode=["max", "min"], storage=rdb, study_name=study_name,
                    sampler=sampler, max_t=max_t, points_to_evaluate=points,
                )
            else:
                searcher = PruneAwareOptunaSearch(
                    space, metric="val_acc", mode="max", storage=rdb, study_name=study_name, sampler=sampler,
                    max_t=max_t, points_to_evaluate=points,
                )
            if scheduler == "asha":
                sched = ASHAScheduler(
                    metric="val_acc", mode="max", time_attr="training_iteration", max_t=max_t,
                    grace_period=grace_period, reduction_factor=reduction_factor,
                )
            else:
                sched = FIFOScheduler()
            callbacks = list(extra_callbacks)
            if progress is not False:
                callbacks.append(ProgressView(num_samples, None if progress in (None, True) else progress))
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    search_alg=searcher, scheduler=sched, num_samples=num_samples,
                    max_concurrent_trials=max_concurrent, reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    name=study_name,
                    storage_path=str(storage_path),
                    failure_config=tune.FailureConfig(max_failures=2),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=num_to_keep),
                    verbose=0,
                    callbacks=callbacks,
                ),
            )
        if resumed and progress not in (None, True, False):
            _retarget_progress(tuner, progress)
        t_fit = time.time()
        grid = tuner.fit()
        timings["fit_s"] = time.time() - t_fit
        if resumed:  # trials the killed driver had asked Optuna for but Tune never recorded
            _fail_zombie_trials(optuna, rdb, study_name)
        t_sum = time.time()
        result = _summarise(
            grid=grid, optuna=optuna, storage=storage, study_name=study_name, tracking_uri=tracking_uri,
            experiment_id=experiment_id, parent_run_id=parent_run_id, registered_model_name=registered_model_name,
            experiment_path=experiment_path, out=out, multi_objective=multi_objective, resumed=resumed, t_start=t_start,
        )
        if result.champion_version and len(ds.y_test):
            try:
                result.champion_test_acc = _test_accuracy(result, ds)
            except Exception as exc:  # the search itself succeeded: report, don't fail it
                result.champion_test_error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        timings["summary_s"] = time.time() - t_sum
        result.timings = timings
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        end_parent_run(parent_run_id, status, tracking_uri=tracking_uri)


def _previous_parent_run(tracking_uri: str, experiment_name: str, study_name: str, experiment_path) -> tuple[str, str] | None:
    """(experiment_id, run_id) of the latest parent run of this study and Tune experiment, set
    RUNNING again; None if there is none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.study = '{study_name}' and tags.`ray.experiment_path` = '{experiment_path}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        return None
    run_id = runs[0].info.run_id
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "resumed", "true")
    return exp.experiment_id, run_id


def _retarget_progress(tuner, write) -> None:
    """Point a restored ProgressView (its writer is not pickled) at this call's writer."""
    try:
        for cb in tuner._local_tuner._run_config.callbacks or []:
            if hasattr(cb, "write") and hasattr(cb, "num_samples"):
                cb.write = write
    except Exception:
        pass


def _finished_trials(optuna, rdb, study_name: str) -> int:
    try:
        study = optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        return 0
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return len(study.get_trials(deepcopy=False, states=states))


def _fail_zombie_trials(optuna, rdb, study_name: str) -> None:
    """Mark RUNNING trials left by a killed driver as FAIL (no one will ever tell them)."""
    try:
        study = optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        return
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        try:
            rdb.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        except Exception:
            pass


def _test_accuracy(result: SearchResult, ds) -> float:
    """Accuracy of the registered champion version, loaded back as an MLflow pyfunc model (as a
    user would load it), on ``ds``'s test split; also logged as ``champion_test_acc`` on the parent run.

    Leaves MLflow's global tracking and registry URIs alone (setting them would also set
    environment variables that later Ray workers inherit). The version's artifact location is
    asked of this search's registry: ``download_artifacts("models:/<name>/<version>", registry_uri=...)``
    resolves the version's ``models:/m-<id>`` source through the ambient tracking URI instead, which
    after ``--resume`` was the default ``./mlflow.db`` of the working directory (another store)."""
    import numpy as np
    from mlflow.tracking import MlflowClient

    import mlflow

    client = MlflowClient(tracking_uri=result.tracking_uri, registry_uri=result.tracking_uri)
    location = client.get_model_version_download_uri(result.registered_model_name, result.champion_version)
    with tempfile.TemporaryDirectory(prefix="senn-champion-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=result.tracking_uri)
        proba = np.asarray(mlflow.pyfunc.load_model(local).predict(np.asarray(ds.X_test, dtype=np.float32)))
    acc = float((proba.argmax(1) == np.asarray(ds.y_test)).mean())
    client.log_metric(result.parent_run_id, "champion_test_acc", acc)
    return acc


def _summarise(*, grid, optuna, storage, study_name, tracking_uri, experiment_id, parent_run_id, registered_model_name,
               experiment_path, out, multi_objective, resumed, t_start) -> SearchResult:
    import pandas as pd
    from mlflow.tracking import MlflowClient

    import mlflow
    from senn_automl.integrations.tracking import set_champion

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=5000
    )
    child: dict[str, Any] = {}
    for run in runs:
        tid = run.data.tags.get("ray.trial_id")
        # the latest run of a trial (a resumed trial has one run per attempt)
        if tid and (tid not in child or run.info.start_time > child[tid].info.start_time):
            child[tid] = run
        if run.info.status == "RUNNING":  # left by a killed driver or worker: nobody will end it
            try:
                client.set_terminated(run.info.run_id, "KILLED")
            except Exception:
                pass

    rows = []
    for r in grid:
        m = r.metrics or {}
        cfg = r.config or {}
        tid = m.get("trial_id")
        status = "error" if r.error else ("complete" if m.get("final") else "pruned")
        run = child.get(tid)
        rows.append({
            "trial": tid,
            "policy": cfg.get("policy", "natural"),
            "val_acc": m.get("val_acc"),
            "n_params": m.get("n_params"),
            "growth_events": m.get("n_growth_events"),
            "epochs": (int(m["epoch"]) + 1) if m.get("epoch") is not None else None,
            "seconds": m.get("time_total_s"),
            "status": status,
            "mlflow_run_id": run.info.run_id if run else None,
        })
    cols = ["trial", "policy", "val_acc", "n_params", "growth_events", "epochs", "seconds", "status", "mlflow_run_id"]
    lb = pd.DataFrame(rows, columns=cols)
    if len(lb):
        lb["_rank"] = lb["status"].map({"complete": 0, "pruned": 1, "error": 2})
        lb = lb.sort_values(["_rank", "val_acc", "n_params"], ascending=[True, False, True], na_position="last")
        lb = lb.drop(columns="_rank").reset_index(drop=True)

    # registered versions of this study's runs: drop duplicates left by resumed trials
    run_ids = {r.info.run_id for r in runs}
    try:
        versions = [v for v in client.search_model_versions(f"name='{registered_model_name}'", max_results=10000)
                    if v.run_id in run_ids]
    except Exception:
        versions = []
    versions = _dedupe_versions(client, registered_model_name, versions)
    # a killed driver may have started trials that its last snapshot did not record; the restored
    # search re-ran their configurations as new trials, so their versions are stale duplicates
    trials = set(lb["trial"])
    for run in runs:  # their runs stay (ended KILLED above if they were running), marked as discarded
        tid = run.data.tags.get("ray.trial_id")
        if tid and tid not in trials:
            try:
                client.set_tag(run.info.run_id, "discarded_by_resume", "true")
            except Exception:
                pass
    orphans = [v for v in versions if v.tags.get("ray.trial_id") and v.tags["ray.trial_id"] not in trials]
    for v in orphans:
        try:
            client.delete_model_version(registered_model_name, v.version)
        except Exception:
            pass
    versions = [v for v in versions if v not in orphans]

    # champion: the final model of the complete trial with the highest final val_acc (fewest params on ties)
    champion_version = champion_trial = None
    finals = {v.tags.get("ray.trial_id"): v for v in versions if str(v.tags.get("final", "")).lower() == "true"}
    for _, row in lb[lb["status"] == "complete"].iterrows():
        if row["trial"] in finals:
            champion_version, champion_trial = str(finals[row["trial"]].version), row["trial"]
            break
    if champion_version is None and finals:  # e.g. no Tune metrics: fall back to the versions' tags
        best = max(finals.values(), key=lambda v: (_num(v.tags.get("val_acc")), -_num(v.tags.get("n_params"))))
        champion_version, champion_trial = str(best.version), best.tags.get("ray.trial_id")
    if champion_version is not None:
        set_champion(registered_model_name, champion_version, client=client)

    states: dict[str, int] = {}
    pareto = None
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        for t in study.trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
        if multi_objective:
            pareto = pd.DataFrame(
                [{"optuna_trial": t.number, "val_acc": t.values[0], "n_params": t.values[1], **t.params}
                 for t in study.best_trials]
            )
            if len(pareto):
                pareto = pareto.sort_values("n_params").reset_index(drop=True)
    except Exception:
        pass

    # leaderboard (and Pareto front) into the parent run
    out.mkdir(parents=True, exist_ok=True)
    lb_path = out / "leaderboard.csv"
    lb.to_csv(lb_path, index=False)
    client.log_artifact(parent_run_id, str(lb_path))
    if pareto is not None and len(pareto):
        p = out / "pareto_front.csv"
        pareto.to_csv(p, index=False)
        client.log_artifact(parent_run_id, str(p))
    now = int(time.time() * 1000)
    metrics = [mlflow.entities.Metric("n_trials", float(len(lb)), now, 0)]
    done = lb[lb["status"] == "complete"]
    if len(done):
        metrics.append(mlflow.entities.Metric("best_val_acc", float(done["val_acc"].max()), now, 0))
    client.log_batch(parent_run_id, metrics=metrics)
    if champion_version:
        client.set_tag(parent_run_id, "champion_version", champion_version)
        client.set_tag(parent_run_id, "champion_trial", str(champion_trial))

    return SearchResult(
        leaderboard=lb, champion_version=champion_version, champion_trial=champion_trial,
        registered_model_name=registered_model_name, study_name=study_name, storage=storage, tracking_uri=tracking_uri,
        experiment_id=str(experiment_id), parent_run_id=parent_run_id, experiment_path=str(experiment_path), out=str(out),
        seconds=time.time() - t_start, resumed=resumed, pareto=pareto, optuna_states=states, versions=versions,
    )


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return -math.inf
    return v if math.isfinite(v) else -math.inf


def _dedupe_versions(client, name: str, versions: list) -> list:
    """Keep one registered version per (trial, growth_step) of growth checkpoints and one final per
    trial, the newest: a trial resumed from an older checkpoint (or restarted) re-logs the growth
    events after it. Older duplicates are deleted from the registry."""
    keep: dict[tuple, Any] = {}
    for v in sorted(versions, key=lambda v: int(v.version)):
        tags = v.tags or {}
        final = str(tags.get("final", "")).lower() == "true"
        key = (tags.get("trial"), "final" if final else tags.get("growth_step"), final)
        if key in keep:
            try:
                client.delete_model_version(name, keep[key].version)
            except Exception:
                pass
        keep[key] = v
    return sorted(keep.values(), key=lambda v: int(v.version))
