"""The engine behind ``senn-automl tune``: :func:`run_search` checks every input before any trial
starts (:class:`SearchSetupError`), bundles the checked settings in one :class:`SearchOptions`,
starts or joins a Ray cluster, runs the Tune experiment (new, or restored with ``--resume``) and
summarises it (:mod:`senn_automl.integrations.tune.summary`) into a :class:`SearchResult`."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pickle
import re
import shutil
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import optuna
import ray
from ray import tune

from senn_automl.integrations.tune.relay import MLflowRelay, flush_relay, live_relays
from senn_automl.integrations.tune.progress import ProgressView, restored_views_write_to
from senn_automl.integrations.tune.searcher import (
    INTERRUPTED_ATTR,
    OverriddenSpace,
    fail_running_trials,
    finished_trials,
    live_records,
    make_searcher,
    prune_running_trials,
    reconcile_with_leaderboard,
    running_trial_ids,
)
from senn_automl.integrations.tune.summary import (
    SummaryWarning,
    champion_test_scores,
    child_runs,
    clean_registry,
    end_orphan_runs,
    leaderboard,
    log_summary,
    mark_champion,
    optuna_summary,
)
from senn_automl.integrations.tune.trainable import split_config, train_senn

DEFAULT_EXPERIMENT = "senn-automl"
#: Tune schedulers: ASHA (early stopping, Optuna's TPE proposes), FIFO (every trial to its end), PBT
#: (population-based training: a random initial population, exploit and explore every few epochs; no Optuna)
SCHEDULERS = ("asha", "fifo", "pbt")
#: growth settings and the learning rate that population-based training perturbs (those in the search space)
PBT_MUTABLE = ("tau", "alpha", "expansion_interval", "lr")
#: Optuna study user attribute: the trials the search's Tune run samples in all (checked by ``--resume``)
NUM_SAMPLES_ATTR = "num_samples"
#: the folder below ``out`` where the driver keeps the trials' models until they are logged (relay)
MODEL_SPOOL = "model_jobs"
DEFAULT_RAY_TMPDIR = "/tmp/senn-ray"  # short: Ray's AF_UNIX socket paths must stay < 107 bytes


class SearchSetupError(ValueError):
    """An input of :func:`run_search` is invalid or a service is unreachable (raised before any trial)."""


# ----------------------------------------------------------------------------------- env hygiene
def ray_env_defaults(*, local: bool = True) -> None:
    """Set the Ray environment variables this project relies on (only those not already set).

    No usage-stats upload, trials keep the driver's working directory (we pass absolute paths
    anyway), frequent experiment-state snapshots so an interrupted search can be restored, and the
    new console output off so our own progress view is the only one. Tune's automatic result loggers
    off: the search adds the JSON and CSV ones itself (``result.json``, ``progress.csv`` per trial),
    without the TensorBoard one, whose event file per result was a fifth of the driver's processing
    of a result (a profile of bench/search_overhead.py's driver), which the trial waits for.
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
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


# ----------------------------------------------------------------------------------- result
@dataclasses.dataclass
class SearchResult:
    """What :func:`run_search` returns.

    leaderboard : pandas DataFrame, one row per trial, best first: ``trial, policy, val_acc``
        (regression: ``val_r2``), ``n_params, growth_events, epochs, seconds, status``
        (``complete`` / ``pruned`` / ``error``), ``mlflow_run_id``.
    metric : what the search maximised, ``"val_acc"`` or (regression) ``"val_r2"``.
    champion_version : registered model version that got the ``champion`` alias (None if no final
        model was logged). champion_trial : its trial. champion_test_acc : accuracy of that
        registered model (loaded back with ``mlflow.pyfunc``) on the dataset's test split, which
        no trial trains or is selected on (None without a champion or a test split, and for
        regression). champion_test_r2, champion_test_rmse : regression: R² and RMSE (the target's
        units) of that model on the test split.
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
    #: seconds spent validating inputs (``validate_s``), starting or joining Ray (``ray_init_s``), in
    #: ``Tuner.fit`` (``fit_s``), logging what the driver's MLflow relay still held (``model_flush_s``),
    #: summarising (``summary_s``) and stopping Ray (``ray_stop_s``)
    timings: dict = dataclasses.field(default_factory=dict)
    metric: str = "val_acc"
    champion_test_acc: float | None = None
    champion_test_r2: float | None = None
    champion_test_rmse: float | None = None
    #: why the champion's test score could not be measured (the champion could not be loaded back), else None
    champion_test_error: str | None = None
    #: the search was stopped (Ctrl-C / SIGINT) before every trial ended: the parent run is KILLED, the
    #: unfinished trials are ``interrupted`` on the leaderboard and FAIL (``interrupted``) in Optuna,
    #: the champion alias is left where it was; ``run_search(..., resume=True)`` continues
    interrupted: bool = False



@dataclasses.dataclass(frozen=True)
class SearchOptions:
    """The checked settings of one :func:`run_search` call (its parameters, defaults filled in and
    paths resolved), built once and passed on whole."""

    dataset: str
    data_root: str | os.PathLike | None
    search_space: str | os.PathLike
    num_samples: int
    max_concurrent: int
    tracking_uri: str
    storage: str
    study_name: str
    address: str | None
    resume: bool
    multi_objective: bool
    metric: str  # the maximised validation metric: "val_acc", or "val_r2" for regression
    target: tuple[str, ...] | None
    gpus_per_trial: float
    cpus_per_trial: int | None  # None: cluster CPUs // max_concurrent, decided once the cluster is known
    storage_path: str  # a local folder (resolved) or a URI Tune understands (s3://..., gs://...), kept as given
    seed: int
    registered_model_name: str
    register: str
    out: Path
    experiment_name: str
    max_t: int
    grace_period: int
    reduction_factor: int
    num_to_keep: int
    ray_temp_dir: str | None
    progress: Callable[[str], None] | None | bool
    trial_overrides: Mapping[str, Any]
    fixed_configs: tuple[dict[str, Any], ...]
    scheduler: str
    callbacks: tuple[Any, ...]
    max_failures: int
    time_budget_s: float | None

    @property
    def experiment_path(self) -> str:
        """The Tune experiment folder or URI, ``<storage_path>/<study_name>``."""
        return f"{self.storage_path.rstrip('/')}/{self.study_name}"

    @property
    def writer(self) -> Callable[[str], None] | None:
        """The live view's ``write``; None prints."""
        return None if self.progress in (None, True, False) else self.progress


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
    register: str = "all",
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
    max_failures: int = 2,
    time_budget_s: float | None = None,
    target: str | Sequence[str] | None = None,
) -> SearchResult:
    """Run (or resume) a growth-hyperparameter search; returns a :class:`SearchResult`.

    Every input is checked before any trial starts, each failure raising
    :class:`SearchSetupError` (a ``ValueError``) that names the input: the dataset, the search space
    (loaded and sampled once, each sampled config built), the tracking URI (an unreachable server),
    the Ray address (TCP probe, then connect), the GPU request (against the cluster's GPUs).

    Parameters (the CLI options of ``senn-automl tune``)
    ----------------------------------------------------
    dataset : a dataset name of :func:`senn_automl.data.load_dataset` (classification or regression),
        or the path of a CSV file (``.csv``) with ``target`` its target column(s); data_root : the
        folder of the folder sets (mnist_idx, fashion_mnist, cifar10). A regression dataset makes
        the search maximise the validation R² (``val_r2``) instead of ``val_acc``. search_space : a bundled name (``quick``, ``mlp``) or a YAML path.
    num_samples : trials. max_concurrent : trials at once; each gets ``cluster CPUs // max_concurrent``
        CPUs (at least 1) unless ``cpus_per_trial`` is given, and ``gpus_per_trial`` GPUs.
    tracking_uri : MLflow URI (default: ``MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlflow.db``).
    storage : SQLAlchemy URL of the Optuna study (default ``sqlite:///<out>/optuna.db``).
    study_name : default ``senn-<dataset>``; also the Tune experiment name and the MLflow parent run's
        study tag. address : ``None`` starts a local Ray instance; otherwise ``HOST:PORT`` / ``auto``.
    resume : restore the interrupted Tune experiment ``<storage_path>/<study_name>`` (unfinished and
        errored trials continue from their checkpoints); without a restorable experiment, start a new
        Tune run that continues the Optuna study of the same name.
    multi_objective : Optuna optimises (max val_acc, min n_params); ASHA still stops on val_acc
        (regression: val_r2 in both).
    storage_path : Ray results folder (default ``<out>/ray_results``), or a URI Ray Tune's storage
        accepts (``s3://bucket/path``), used as given. seed : dataset split and TPE seed.
    registered_model_name : default ``senn-<dataset>``. register : which logged models become its versions,
        ``"all"`` (every growth checkpoint and each trial's final model), ``"final"`` or ``"none"`` (then no
        champion is marked); every model stays a LoggedModel of its trial's run. out : output folder.
    progress : a ``write(str)`` for the live view, ``None``/``True`` prints, ``False`` is silent.
    trial_overrides : constants merged into every trial config (e.g. ``{"max_epochs": 6}``).
    fixed_configs : instead of sampling, evaluate exactly these configs (``points_to_evaluate``);
        ``num_samples`` is then their count. scheduler : ``"asha"`` or ``"fifo"`` (no early stop).
    callbacks : extra ``ray.tune.Callback`` objects for the run (driver side).
    max_failures : retries of a failed trial, from its latest checkpoint (Tune's ``FailureConfig``).
    time_budget_s : wall-clock seconds for the Tune run (``TuneConfig.time_budget_s``): trials still
        running then are stopped, PRUNED in Optuna with their last value, ``pruned`` on the
        leaderboard; ``None``: no limit.
    """
    t_start = time.time()
    ray_env_defaults()
    if fixed_configs:
        num_samples = len(fixed_configs)

    # ---- cheap validation, no services started yet
    _check_counts(num_samples=num_samples, max_concurrent=max_concurrent, gpus_per_trial=gpus_per_trial,
                  cpus_per_trial=cpus_per_trial, scheduler=scheduler, register=register, max_failures=max_failures,
                  time_budget_s=time_budget_s, grace_period=grace_period)
    if scheduler == "pbt" and (multi_objective or fixed_configs):
        raise SearchSetupError("scheduler='pbt' samples its own initial population and optimises val_acc alone: "
                               "drop --multi-objective / fixed_configs, or use --scheduler asha or fifo")
    _check_names(study_name=study_name, registered_model_name=registered_model_name, experiment_name=experiment_name)
    ds = _load_data(dataset, seed, data_root, target, task=(trial_overrides or {}).get("task", "auto"))
    space, max_t = _checked_space(search_space, ds, seed, trial_overrides, fixed_configs)
    if scheduler == "pbt" and not _pbt_mutations(space, trial_overrides or {}):
        raise SearchSetupError(f"scheduler='pbt': the search space has none of {', '.join(PBT_MUTABLE)} as a "
                               f"searched parameter, so there is nothing to explore; use --scheduler asha")
    out, created = _checked_out(out)
    lock = _lock_out(out)  # one search per output folder (its Optuna db, Ray results, leaderboard)
    try:
        try:
            tracking_uri = _checked_tracking_uri(tracking_uri)
            opts = SearchOptions(
                dataset=dataset, data_root=data_root, search_space=search_space, num_samples=num_samples,
                max_concurrent=max_concurrent, tracking_uri=tracking_uri, storage=storage or f"sqlite:///{out / 'optuna.db'}",
                study_name=study_name or f"senn-{ds.name}", address=address, resume=resume, multi_objective=multi_objective,
                metric="val_r2" if ds.is_regression else "val_acc",
                target=None if target is None else ((target,) if isinstance(target, str) else tuple(target)),
                gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
                storage_path=_storage_path(storage_path, out), seed=seed,
                registered_model_name=registered_model_name or f"senn-{ds.name}", register=register, out=out,
                experiment_name=experiment_name, max_t=max_t,
                grace_period=max(1, min(max_t, max(2, max_t // 4))) if grace_period is None else grace_period,
                reduction_factor=reduction_factor, num_to_keep=num_to_keep, ray_temp_dir=ray_temp_dir, progress=progress,
                trial_overrides=dict(trial_overrides or {}), fixed_configs=tuple(fixed_configs or ()), scheduler=scheduler,
                callbacks=tuple(callbacks or ()), max_failures=max_failures, time_budget_s=time_budget_s,
            )
            rdb = _open_study_storage(opts)
            _check_resume(opts, rdb)
            if address is not None:
                _probe_address(address)
        except SearchSetupError:
            if created:  # refused before any trial: leave no output folder behind
                shutil.rmtree(out, ignore_errors=True)
            raise
        return _run_with_ray(opts, rdb=rdb, ds=ds, space=space, t_start=t_start)
    finally:
        lock.release()


def _run_with_ray(opts: SearchOptions, *, rdb, ds, space, t_start: float) -> SearchResult:
    """Start (or join) Ray, run the search, shut down a Ray this call started and remove its session folder."""
    timings = {"validate_s": time.time() - t_start}
    t_ray = time.time()
    started_ray, ray_dir = _start_ray(opts)
    timings["ray_init_s"] = time.time() - t_ray
    try:
        result = _run_started(opts, rdb=rdb, ds=ds, space=space, t_start=t_start, timings=timings)
    finally:
        t_stop = time.time()
        if started_ray:
            ray.shutdown()
        if ray_dir is not None:  # this search's Ray session folder (logs, sockets): ~1 MB per run otherwise
            shutil.rmtree(ray_dir, ignore_errors=True)
    result.timings = {**(result.timings or {}), "ray_stop_s": time.time() - t_stop}
    return result


# ----------------------------------------------------------------------------------- validation
def _storage_path(storage_path, out: Path) -> str:
    """``storage_path`` as Tune gets it: a URI (``scheme://``) unchanged, a local path resolved."""
    if storage_path is None:
        return str(out / "ray_results")
    if "://" in str(storage_path):
        return str(storage_path)
    return str(Path(storage_path).expanduser().resolve())


def _check_counts(*, num_samples, max_concurrent, gpus_per_trial, cpus_per_trial, scheduler, register,
                  max_failures=2, time_budget_s=None, grace_period=None) -> None:
    from senn_automl.integrations.tracking import REGISTER_CHOICES

    if register not in REGISTER_CHOICES:
        raise SearchSetupError(f"register={register!r} is invalid: use one of {', '.join(REGISTER_CHOICES)}")
    if not isinstance(num_samples, int) or num_samples < 1:
        raise SearchSetupError(f"num_samples={num_samples!r} is invalid: use a whole number >= 1")
    if not isinstance(max_concurrent, int) or max_concurrent < 1:
        raise SearchSetupError(f"max_concurrent={max_concurrent!r} is invalid: use a whole number >= 1")
    if gpus_per_trial is None or not math.isfinite(gpus_per_trial) or gpus_per_trial < 0:
        raise SearchSetupError(f"gpus_per_trial={gpus_per_trial!r} is invalid: use a number >= 0")
    if cpus_per_trial is not None and cpus_per_trial < 1:
        raise SearchSetupError(f"cpus_per_trial={cpus_per_trial!r} is invalid: use a whole number >= 1")
    if not isinstance(max_failures, int) or max_failures < 0:
        raise SearchSetupError(f"max_failures={max_failures!r} is invalid: use a whole number >= 0 (retries of a failed trial)")
    if time_budget_s is not None and (not math.isfinite(time_budget_s) or time_budget_s <= 0):
        raise SearchSetupError(f"time_budget_s={time_budget_s!r} is invalid: use a number of seconds > 0, or leave it out")
    if grace_period is not None and (not isinstance(grace_period, int) or grace_period < 1):
        raise SearchSetupError(f"grace_period={grace_period!r} is invalid: use a whole number of epochs >= 1")
    if scheduler not in SCHEDULERS:
        raise SearchSetupError(f"scheduler={scheduler!r} is invalid: use one of {', '.join(SCHEDULERS)}")


#: study names: also a folder name (the Tune experiment) and a value in MLflow filter strings
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _check_names(*, study_name, registered_model_name, experiment_name) -> None:
    from senn_automl.integrations.tracking import check_names

    if study_name is not None and (not _STUDY_NAME.fullmatch(study_name) or ".." in study_name):
        raise SearchSetupError(
            f"study_name={study_name!r} is invalid: it names the Tune experiment folder, so use letters, digits, "
            f"'.', '_' and '-' (starting with a letter or digit, no '..', at most 100), e.g. senn-digits-2"
        )
    try:
        check_names(registered_model_name=registered_model_name, experiment_name=experiment_name)
    except ValueError as exc:
        raise SearchSetupError(str(exc)) from None


def _checked_out(out) -> tuple[Path, bool]:
    """(the output folder, resolved and created; whether this call created it); SearchSetupError if
    it (or a folder above it) is a file."""
    out = Path(out).expanduser().resolve()
    created = not out.exists()
    for p in [out, *out.parents]:
        if p.exists() and not p.is_dir():
            raise SearchSetupError(f"out={str(out)!r} is invalid: {p} is a file; pass a folder for the search's output")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SearchSetupError(f"out={str(out)!r} cannot be created ({exc.strerror or exc}); pass a folder you can write to") from None
    return out, created


def _lock_out(out: Path):
    """Hold ``<out>/.search.lock`` (a ``filelock.FileLock``, released when the process ends however it
    ends); SearchSetupError if another search holds it."""
    import filelock

    lock = filelock.FileLock(str(out / ".search.lock"), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise SearchSetupError(
            f"another search is running with out={str(out)!r} (it holds {out / '.search.lock'}): wait for it to "
            f"end, or pass another --out (and --study-name) for a second search"
        ) from None
    return lock


def _load_data(dataset: str, seed: int, data_root, target=None, task: str = "auto"):
    from senn_automl.data import load_any

    try:
        return load_any(dataset, seed=seed, root=data_root, target=target, task=task)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise SearchSetupError(f"dataset: {exc}") from None


def _checked_space(search_space, ds, seed: int, trial_overrides: Mapping[str, Any] | None,
                   fixed_configs: Sequence[dict[str, Any]] | None) -> tuple[Any, int]:
    """(the define-by-run space, with ``trial_overrides`` applied; ``max_t``, the most epochs a trial
    can train), after sampling it once and building the sampled config and each fixed config."""
    from senn_automl.integrations.tune.search_space import load_search_space
    from senn_automl.training.config import build, resolve

    space = load_search_space(search_space)  # SearchSpaceError (a ValueError) names file, key, reason
    try:
        pickle.dumps(space)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:  # what pickle raises for an unpicklable object
        raise SearchSetupError(f"search space {search_space!r} is not picklable ({exc}); Ray saves it with pickle") from None
    if trial_overrides:
        space = OverriddenSpace(space, tuple(sorted(trial_overrides.items())))
    branch = ""
    try:
        sample, dists = _dry_sample(space, seed)
        for fc in fixed_configs or []:
            build(resolve({**split_config(sample)[0], **split_config(fc)[0], "task": ds.task}), ds.n_features, ds.n_outputs,
                  ds.image_shape)
        build(resolve({**split_config(sample)[0], "task": ds.task}), ds.n_features, ds.n_outputs, ds.image_shape)
        # every branch, so that a --set value only one policy reads is checked before any trial runs it
        for name, choice in _branches(space):
            branch = f" (with {name}={choice!r})"
            conf, _ = _dry_sample(space, seed, fixed={name: choice})
            build(resolve({**split_config(conf)[0], "task": ds.task}), ds.n_features, ds.n_outputs, ds.image_shape)
    except SearchSetupError:
        raise
    except (ValueError, TypeError) as exc:
        raise SearchSetupError(f"search space {search_space!r} gives an invalid trial config{branch}: {exc}") from None
    return space, _max_epochs(sample, {} if trial_overrides and "max_epochs" in trial_overrides else dists)


def _space_params(space) -> tuple:
    """The :class:`ParamSpec` parameters of a bundled-format search space (unwrapping
    :class:`OverriddenSpace`); ``()`` for a plain define-by-run function."""
    return tuple(getattr(getattr(space, "space", space), "params", ()))


def _branches(space) -> list[tuple[str, Any]]:
    """(name, choice) of every choice of every categorical parameter of the search space."""
    return [(p.name, c) for p in _space_params(space) if p.type == "categorical" for c in p.choices]


def _checked_tracking_uri(tracking_uri: str | None) -> str:
    from senn_automl.integrations.tracking import check_tracking_uri, resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(tracking_uri)
    try:
        check_tracking_uri(tracking_uri)
    except ValueError as exc:
        raise SearchSetupError(f"tracking URI: {exc}") from None
    return tracking_uri


@dataclasses.dataclass(frozen=True)
class _SqliteWal:
    """SQLAlchemy ``creator`` of the study's sqlite connections (picklable: Tune snapshots the searcher,
    storage included): write-ahead log and ``synchronous=NORMAL``, so that the intermediate value the
    searcher writes at every epoch's report, while the trial waits for the driver, commits without
    an fsync (0.5 ms instead of 2.0 ms a write on this machine; SQLite keeps a WAL database
    consistent through a crash with this setting, and a power cut loses at most the last writes).
    The study's database is the driver's alone, on its machine (WAL needs one host)."""

    path: str

    def __call__(self):
        import sqlite3

        con = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        return con


def _study_engine_kwargs(url: str) -> dict[str, Any]:
    """``engine_kwargs`` of the study's storage: :class:`_SqliteWal` for a sqlite file, none otherwise."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:  # a malformed URL: RDBStorage reports it
        return {}
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return {}
    return {"creator": _SqliteWal(str(Path(parsed.database).expanduser().resolve()))}


def _open_study_storage(opts: SearchOptions) -> optuna.storages.RDBStorage:
    """The Optuna storage, checked to open and, when it already holds the study with trials, to
    optimise the same objectives."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        rdb = optuna.storages.RDBStorage(opts.storage, engine_kwargs=_study_engine_kwargs(opts.storage))
    # a malformed URL or a database that cannot be opened (SQLAlchemyError, StorageInternalError), a
    # missing database driver (ImportError), a schema of another Optuna version (RuntimeError)
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError, ImportError, RuntimeError) as exc:
        raise SearchSetupError(f"Optuna storage {opts.storage!r} cannot be opened: {exc}") from None
    try:
        existing = optuna.load_study(study_name=opts.study_name, storage=rdb)
    except KeyError:  # a new study
        return rdb
    directions = [d.name.lower() for d in existing.directions]
    want = ["maximize", "minimize"] if opts.multi_objective else ["maximize"]
    if existing.trials and directions != want:
        raise SearchSetupError(
            f"Optuna study {opts.study_name!r} in {opts.storage} optimises {directions}, not {want}: "
            f"use another --study-name or {'drop' if opts.multi_objective else 'add'} --multi-objective"
        )
    return rdb


def _check_resume(opts: SearchOptions, rdb: optuna.storages.RDBStorage) -> None:
    """With ``resume``: there is a search to continue (an Optuna study or a restorable Tune
    experiment); a restorable one still has a trial to continue (RUNNING after a killed driver,
    interrupted by Ctrl-C) or fewer trials than ``num_samples``; a study without a restorable
    experiment has fewer finished trials than ``num_samples`` (a new Tuner samples the rest)."""
    if not opts.resume:
        return
    restorable = tune.Tuner.can_restore(str(opts.experiment_path))
    try:
        study = optuna.load_study(study_name=opts.study_name, storage=rdb)
    except KeyError:  # no such study
        study = trials = None
    else:
        trials = study.get_trials(deepcopy=False)
    if trials is None and not restorable:
        raise SearchSetupError(
            f"--resume: nothing to continue: no Optuna study {opts.study_name!r} in {opts.storage} and no Tune "
            f"experiment in {opts.experiment_path}; run without --resume to start this search (or fix --out / --study-name)"
        )
    if not restorable:  # a new Tuner continues the study: it needs trials left to sample
        done = finished_trials(rdb, opts.study_name)
        if done >= opts.num_samples:
            raise SearchSetupError(
                f"--resume: study {opts.study_name!r} already has {done} finished trials (>= --num-samples "
                f"{opts.num_samples}) and {opts.experiment_path} cannot be restored; raise --num-samples to add trials"
            )
        return
    if trials is None:
        return
    live = live_records(trials)
    unfinished = [t for t in live if t.state == optuna.trial.TrialState.RUNNING or t.user_attrs.get(INTERRUPTED_ATTR)]
    recorded = len(live) - len(unfinished)
    target = int(study.user_attrs.get(NUM_SAMPLES_ATTR, opts.num_samples))  # what the restored Tune run samples
    if not unfinished and recorded >= target:
        more = (f"; --num-samples {opts.num_samples} does not add trials to it (a restored search keeps its {target})"
                if opts.num_samples > target else "")
        raise SearchSetupError(
            f"--resume: search {opts.study_name!r} has finished ({recorded} trials, none interrupted): nothing to "
            f"continue{more}; to search further, start a new search with another --study-name"
        )


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


def _dry_sample(space, seed: int, fixed: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sample the search space once in memory, with the parameters ``fixed`` set (enqueued);
    returns (config, distributions)."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(level)
    if fixed:
        study.enqueue_trial(fixed)
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



# ----------------------------------------------------------------------------------- Ray
def _start_ray(opts: SearchOptions) -> tuple[bool, str | None]:
    """Start a local Ray instance (``address`` None) or connect to the cluster, unless Ray is
    initialised already; (whether this call did and must shut it down, the folder of a local
    instance's session, which the caller removes after the shutdown). A local instance gets its own
    folder below ``ray_temp_dir`` / ``$SENN_RAY_TMPDIR`` / ``/tmp/senn-ray`` (kept short: socket paths)."""
    if ray.is_initialized():
        return False, None
    temp = None
    try:
        if opts.address is None:
            parent = Path(opts.ray_temp_dir or os.environ.get("SENN_RAY_TMPDIR") or DEFAULT_RAY_TMPDIR)
            parent.mkdir(parents=True, exist_ok=True)
            temp = tempfile.mkdtemp(prefix="r", dir=parent)
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
            ray.init(address=opts.address, log_to_driver=False, logging_level="ERROR")
    # Broad on purpose, and not silent: besides ConnectionError, RuntimeError, ValueError and
    # ray.exceptions.AuthenticationError, ray.init raises plain ``Exception`` itself (e.g. "The current
    # node timed out during startup", ray/_private/node.py); each becomes a SearchSetupError naming it.
    except Exception as exc:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        raise SearchSetupError(
            f"cannot {'start a local Ray instance' if opts.address is None else 'connect to the Ray cluster at ' + opts.address}: "
            f"{type(exc).__name__}: {exc} (RAY_AUTH_MODE must match the cluster's: now "
            f"{os.environ.get('RAY_AUTH_MODE', 'unset')})"
        ) from None
    return True, temp


def _trial_resources(opts: SearchOptions) -> dict[str, float]:
    """CPUs and GPUs per trial, checked against the cluster before any trial."""
    res = ray.cluster_resources()
    cluster_cpus = int(res.get("CPU", 0))
    cluster_gpus = float(res.get("GPU", 0))
    if opts.gpus_per_trial > 0 and cluster_gpus < opts.gpus_per_trial:
        raise SearchSetupError(
            f"gpus_per_trial={opts.gpus_per_trial} but the Ray cluster has {cluster_gpus:g} GPU(s): trials would stay "
            f"PENDING forever; use --gpus-per-trial 0"
        )
    cpus_per_trial = opts.cpus_per_trial if opts.cpus_per_trial is not None else max(1, cluster_cpus // opts.max_concurrent)
    if cpus_per_trial > max(cluster_cpus, 1):
        raise SearchSetupError(f"cpus_per_trial={cpus_per_trial} exceeds the cluster's {cluster_cpus} CPUs")
    return {"cpu": cpus_per_trial, "gpu": opts.gpus_per_trial}


def _run_started(opts: SearchOptions, *, rdb, ds, space, t_start: float, timings: dict[str, float]) -> SearchResult:
    from senn_automl.integrations.tracking import end_parent_run, start_parent_run

    resources = _trial_resources(opts)

    # ---- MLflow parent run (created in the driver before trials: no schema/experiment races)
    tags = {
        "dataset": opts.dataset,
        "search_space": str(opts.search_space),
        "optuna.storage": opts.storage,
        "multi_objective": str(bool(opts.multi_objective)).lower(),
        "ray.experiment_path": str(opts.experiment_path),
    }
    previous = _previous_parent_run(opts) if opts.resume else None
    if previous is not None:  # one parent run per study: a resumed search reopens it
        experiment_id, parent_run_id = previous
    else:
        experiment_id, parent_run_id = start_parent_run(opts.tracking_uri, opts.experiment_name, opts.study_name, tags)
    status = "FAILED"
    try:
        param_space = {
            "mlflow_uri": opts.tracking_uri,
            "experiment_id": experiment_id,
            "parent_run_id": parent_run_id,
            "study_name": opts.study_name,
            "registered_model_name": opts.registered_model_name,
            "register": opts.register,
            "dataset": opts.dataset,
            "data_root": None if opts.data_root is None else str(opts.data_root),
            "target": None if opts.target is None else list(opts.target),
        }
        data = dataclasses.replace(ds, X_test=ds.X_test[:0], y_test=ds.y_test[:0])  # trials never see the test split
        trainable = tune.with_resources(tune.with_parameters(train_senn, data=data), resources)

        tuner, resumed, num_samples = _tuner(opts, trainable, param_space, rdb, space)
        t_fit = time.time()
        with _short_gil_slices():
            grid = tuner.fit()
        timings["fit_s"] = time.time() - t_fit
        t_flush = time.time()  # the trials' models that the driver has not logged yet (relay)
        flush_relay(opts.tracking_uri, opts.out / MODEL_SPOOL, opts.experiment_path)
        timings["model_flush_s"] = time.time() - t_flush
        # Tune catches the first SIGINT (Ctrl-C), saves its state, stops the running trials and returns:
        # their Optuna trials are still RUNNING (no one told them), or, between two trials, fewer
        # trials than asked for exist
        stopped = running_trial_ids(rdb, opts.study_name) & {(r.metrics or {}).get("trial_id") for r in grid}
        if opts.scheduler == "pbt":  # no Optuna; nothing stops a PBT trial before its end but Ctrl-C or the budget
            stopped = {(r.metrics or {}).get("trial_id") for r in grid if not r.error and not (r.metrics or {}).get("final")}
        if opts.time_budget_s and not resumed and timings["fit_s"] >= opts.time_budget_s:
            # the time budget ended the run: its running trials were stopped early, as a scheduler would
            prune_running_trials(rdb, opts.study_name, stopped)
            stopped = set()
        interrupted = stopped if stopped or (not resumed and len(grid) < num_samples and not opts.time_budget_s) else None
        # RUNNING trials left are also those a killed driver had asked Optuna for but Tune never recorded
        fail_running_trials(rdb, opts.study_name, interrupted=stopped)
        t_sum = time.time()
        result = _summarise(grid, opts, rdb=rdb, experiment_id=experiment_id, parent_run_id=parent_run_id, resumed=resumed,
                            t_start=t_start, interrupted=interrupted)
        if result.interrupted:
            status = "KILLED"
            result.timings = timings
            return result
        if result.champion_version and len(ds.y_test):
            try:
                scores = champion_test_scores(opts.tracking_uri, opts.registered_model_name, result.champion_version,
                                              parent_run_id, ds)
                result.champion_test_acc = scores.get("accuracy")
                result.champion_test_r2, result.champion_test_rmse = scores.get("r2"), scores.get("rmse")
            # Broad on purpose: the search itself succeeded, and loading the model back can fail in MLflow,
            # in unpickling or in torch; the error is kept in the result (the CLI prints it) and warned.
            except Exception as exc:
                result.champion_test_error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
                warnings.warn(f"champion test score not measured: {result.champion_test_error}", SummaryWarning,
                              stacklevel=2)
        timings["summary_s"] = time.time() - t_sum
        result.timings = timings
        status = "FINISHED"
        return result
    except KeyboardInterrupt:  # a second Ctrl-C, while Tune saved its state or during the summary
        status = "KILLED"
        fail_running_trials(rdb, opts.study_name, interrupted=running_trial_ids(rdb, opts.study_name))
        raise
    finally:
        end_parent_run(parent_run_id, status, tracking_uri=opts.tracking_uri)


#: the driver's thread switch interval during ``Tuner.fit`` (CPython's default: 5 ms)
DRIVER_SWITCH_INTERVAL_S = 0.0005


@contextlib.contextmanager
def _short_gil_slices() -> Iterator[None]:
    """Shorter GIL time slices in the driver while trials run: Tune's loop answers every trial's
    report, and while the relay's thread (:class:`MLflowRelay`) exports a model, each of the loop's
    many GIL re-acquisitions per result would wait up to a full slice; with two concurrent trials on
    two cores that made a search 15-20 % slower than logging in the trials
    (``python bench/search_overhead.py --trials 8``, BENCHMARKS §5). Restored afterwards."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(DRIVER_SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def _tuner(opts: SearchOptions, trainable, param_space: dict[str, Any], rdb, space) -> tuple[tune.Tuner, bool, int]:
    """(the Tuner, whether it restores the interrupted experiment, the trials a new Tuner samples): with ``resume`` and a restorable
    experiment, ``Tuner.restore`` (unfinished and errored trials continue from their checkpoints);
    otherwise a new Tuner, which with ``resume`` continues the Optuna study up to ``num_samples``."""
    if opts.resume and tune.Tuner.can_restore(str(opts.experiment_path)):
        before = set(live_relays())
        with restored_views_write_to(opts.writer):  # the restored ProgressView writes where this call's would
            tuner = tune.Tuner.restore(
                str(opts.experiment_path), trainable=trainable, resume_unfinished=True, resume_errored=True,
                param_space=param_space,
            )
        for relay in set(live_relays()) - before:  # the restored run config's relay: this call's store and spool
            relay.tracking_uri, relay.spool = str(opts.tracking_uri), opts.out / MODEL_SPOOL
        return tuner, True, opts.num_samples

    num_samples = opts.num_samples
    if opts.resume:  # no restorable Tune experiment: a new Tuner continues the Optuna study
        fail_running_trials(rdb, opts.study_name)  # left RUNNING by a killed driver: no one will tell them
        num_samples -= finished_trials(rdb, opts.study_name)  # < num_samples: checked by _check_resume
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    callbacks = [*opts.callbacks, MLflowRelay(opts.tracking_uri, opts.out / MODEL_SPOOL), JsonLoggerCallback(),
                 CSVLoggerCallback()]
    if opts.progress is not False:
        callbacks.append(ProgressView(num_samples, opts.writer))
    run_config = tune.RunConfig(
        name=opts.study_name,
        storage_path=str(opts.storage_path),
        failure_config=tune.FailureConfig(max_failures=opts.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=opts.num_to_keep),
        verbose=0,
        callbacks=callbacks,
    )
    if opts.scheduler == "pbt":
        return _pbt_tuner(opts, trainable, param_space, space, num_samples, run_config), False, num_samples
    searcher = make_searcher(
        space, storage=rdb, study_name=opts.study_name, seed=opts.seed, max_t=opts.max_t,
        multi_objective=opts.multi_objective, metric=opts.metric,
        points_to_evaluate=[split_config(c)[0] for c in opts.fixed_configs] if opts.fixed_configs else None,
    )
    optuna.load_study(study_name=opts.study_name, storage=rdb).set_user_attr(NUM_SAMPLES_ATTR, opts.num_samples)
    if opts.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        sched = ASHAScheduler(
            metric=opts.metric, mode="max", time_attr="training_iteration", max_t=opts.max_t,
            grace_period=opts.grace_period, reduction_factor=opts.reduction_factor,
        )
    else:
        from ray.tune.schedulers import FIFOScheduler

        sched = FIFOScheduler()
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=sched, num_samples=num_samples,
            max_concurrent_trials=opts.max_concurrent, reuse_actors=True, time_budget_s=opts.time_budget_s,
        ),
        run_config=run_config,
    )
    return tuner, False, num_samples


def _pbt_tuner(opts: SearchOptions, trainable, param_space: dict[str, Any], space, num_samples: int, run_config) -> tune.Tuner:
    """Population-based training over the search space: ``num_samples`` initial configs sampled at
    random (seeded) from the space; every ``perturbation_interval`` epochs the bottom quarter
    exploits (copies the network, optimiser and policy state of) a top-quarter trial and explores
    its growth settings and lr within the space's ranges. Growth is function-preserving, so an
    exploited network keeps growing under the new settings (the trainable applies them with
    :func:`senn_automl.training.config.reconfigure`)."""
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    mutations = _pbt_mutations(space, opts.trial_overrides)  # not empty: run_search checked it
    interval = max(2, opts.max_t // 5)
    while opts.max_t % interval == 0 and interval < opts.max_t:  # no exploit at the last epoch (it would copy finished models)
        interval += 1
    population = []
    for i in range(num_samples):
        conf, _ = _dry_sample(space, opts.seed * 1000 + i)
        for name, spec in mutations.items():  # every member carries every mutated key (PBT requires it)
            conf.setdefault(name, spec.midpoint())
        population.append(split_config(conf)[0])
    pbt = PopulationBasedTraining(
        time_attr="training_iteration", metric=opts.metric, mode="max", perturbation_interval=interval,
        hyperparam_mutations={name: _tune_domain(spec) for name, spec in mutations.items()},
        custom_explore_fn=_ClipToSpace(tuple(mutations.values())),
        quantile_fraction=0.25, resample_probability=0.25,
        synch=True,  # trials ahead wait at each interval: with fewer slots than members, none exploits a finished one
    )
    base: dict[str, Any] = {}  # the points may only set keys param_space has
    for member in population:
        for k, v in member.items():
            base.setdefault(k, v)
    return tune.Tuner(
        trainable,
        param_space={**base, **param_space, "checkpoint_every": interval},
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(points_to_evaluate=population), scheduler=pbt, num_samples=num_samples,
            # a reused actor reports the trial id of the trial it first ran after an exploit
            max_concurrent_trials=opts.max_concurrent, reuse_actors=False, time_budget_s=opts.time_budget_s,
        ),
        run_config=run_config,
    )


def _pbt_mutations(space, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The search space's :class:`ParamSpec` of each mutable key it searches (not fixed by ``--set``)."""
    return {p.name: p for p in _space_params(space) if p.name in PBT_MUTABLE and p.name not in overrides}


@dataclasses.dataclass(frozen=True)
class _ClipToSpace:
    """PBT's ``custom_explore_fn``: perturbed values (×0.8 / ×1.2) clipped to their parameter's
    range and step in the search space, so explore stays where the space is valid (picklable)."""

    specs: tuple

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for spec in self.specs:
            if spec.name in config and spec.type in ("float", "int"):
                v = min(max(config[spec.name], spec.low), spec.high)
                if spec.step:
                    v = spec.low + round((v - spec.low) / spec.step) * spec.step
                config[spec.name] = int(round(v)) if spec.type == "int" else float(v)
        return config


def _tune_domain(spec):
    """A Ray Tune sampling domain over a :class:`ParamSpec`'s range (PBT's resample step)."""
    if spec.type == "categorical":
        return list(spec.choices)
    if spec.type == "int":
        return list(range(int(spec.low), int(spec.high) + 1, int(spec.step or 1)))
    return tune.loguniform(spec.low, spec.high) if spec.log else tune.uniform(spec.low, spec.high)


def _previous_parent_run(opts: SearchOptions) -> tuple[str, str] | None:
    """(experiment_id, run_id) of the latest parent run of this study and Tune experiment, set
    RUNNING again; None if there is none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=opts.tracking_uri)
    exp = client.get_experiment_by_name(opts.experiment_name)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.study = '{opts.study_name}' and tags.`ray.experiment_path` = '{opts.experiment_path}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        return None
    run_id = runs[0].info.run_id
    client.update_run(run_id, status="RUNNING")
    client.set_tag(run_id, "resumed", "true")
    return exp.experiment_id, run_id


# ----------------------------------------------------------------------------------- summary
def _summarise(grid, opts: SearchOptions, *, rdb, experiment_id: str, parent_run_id: str, resumed: bool,
               t_start: float, interrupted: set[str] | None = None) -> SearchResult:
    """The jobs after ``Tuner.fit``, one function each (see :mod:`senn_automl.integrations.tune.summary`).
    An ``interrupted`` search (the Tune trial ids a Ctrl-C stopped) ends its trials' runs KILLED and
    leaves the registry and the champion alias as they were: a resume cleans and marks them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=opts.tracking_uri, registry_uri=opts.tracking_uri)
    runs, latest = child_runs(client, experiment_id, parent_run_id)
    lb = leaderboard(grid, latest, interrupted, metric=opts.metric)
    trials = set(lb["trial"])
    end_orphan_runs(client, runs, trials)
    for tid in interrupted or ():  # Tune ended the trials with SystemExit, which the trainable takes for a normal end
        if tid in latest:
            client.set_terminated(latest[tid].info.run_id, "KILLED")
    if interrupted is None:
        versions = clean_registry(client, opts.registered_model_name, runs, trials)
        champion_version, champion_trial = mark_champion(client, opts.registered_model_name, lb, versions, metric=opts.metric)
    else:
        versions, champion_version, champion_trial = [], None, None
    # outcomes that never reached the searcher (see reconcile_with_leaderboard): reruns after a
    # restore, or a trial that finished as the time budget ran out (its Optuna trial, still
    # RUNNING then, was pruned above); a no-op where Optuna agrees with the leaderboard
    reconcile_with_leaderboard(rdb, opts.study_name, lb, opts.multi_objective, metric=opts.metric)
    states, pareto = optuna_summary(opts.storage, opts.study_name, opts.multi_objective, metric=opts.metric)
    log_summary(client, parent_run_id, opts.out, lb, pareto, champion_version, champion_trial, metric=opts.metric)
    return SearchResult(
        leaderboard=lb, champion_version=champion_version, champion_trial=champion_trial,
        registered_model_name=opts.registered_model_name, study_name=opts.study_name, storage=opts.storage,
        tracking_uri=opts.tracking_uri, experiment_id=str(experiment_id), parent_run_id=parent_run_id,
        experiment_path=str(opts.experiment_path), out=str(opts.out), seconds=time.time() - t_start, resumed=resumed,
        pareto=pareto, optuna_states=states, versions=versions, interrupted=interrupted is not None, metric=opts.metric,
    )
