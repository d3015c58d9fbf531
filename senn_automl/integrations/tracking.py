"""MLflow tracking and model registry for growing networks (an integration: imports mlflow).

One MLflow run per training run (a child of a study's parent run when tuning), per-epoch metrics,
the growth log and plot as artifacts, and one **LoggedModel per growth check** plus the final model
(tag ``final=true``), each registered as a new version of a registered model with tags (``register``
chooses all, final or none). A logged model is the network with its input scaling
(:class:`RawInputModel`: raw features in, probabilities out), exported with ``torch.export``
(MLflow's ``pytorch`` flavour, ``pt2`` format; also a ``pyfunc``), with a signature and an input
example; its checkpoint files ride along so that :func:`load_model` rebuilds the growable module.

    proba = mlflow.pyfunc.load_model("models:/senn-digits@champion").predict(X_raw)   # (n, n_classes)
    module = mlflow.pytorch.load_model("models:/senn-digits@champion")                # torch module
    grown = load_model("models:/senn-digits@champion")     # growable module, spec, scaling, checkpoint

The core modules never import this one. Usage::

    from senn_automl.integrations.tracking import MLflowCallback, resolve_tracking_uri, check_tracking_uri

    uri = resolve_tracking_uri(None)            # argument > $MLFLOW_TRACKING_URI > sqlite:///<cwd>/mlflow.db
    check_tracking_uri(uri)                     # ValueError naming the fix if an http server is down
    cb = MLflowCallback(uri, experiment_id, run_name="trial-0", registered_model_name="senn-digits")
    trainer = Trainer(model, policy, train, [cb])
    try:
        trainer.fit(X, y, Xv, yv)
    except SystemExit:                          # Ray Tune stops trials by raising SystemExit
        cb.close("FINISHED"); raise
    except BaseException:
        cb.close("FAILED"); raise

(``with cb: trainer.fit(...)`` does the same.) Use a sqlite store (``sqlite:////abs/mlflow.db``) or an
``mlflow server`` started with ``mlflow/start_server.sh``; the file store (``./mlruns``) is refused
by MLflow 3.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import posixpath
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import mlflow.pytorch
import numpy as np
import torch
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import mlflow
from senn_automl.training.trainer import Callback
from senn_automl.validation import is_whole, require, require_choice

__all__ = [
    "resolve_tracking_uri",
    "check_names",
    "check_tracking_uri",
    "RawInputModel",
    "LoadedModel",
    "load_model",
    "log_growth_model",
    "log_model_job",
    "log_growth_plot",
    "MODEL_JOB_FILE",
    "MLflowCallback",
    "set_champion",
    "start_parent_run",
    "get_or_create_experiment",
    "end_parent_run",
    "CHAMPION_ALIAS",
    "quiet_mlflow",
]

CHAMPION_ALIAS = "champion"
#: values of ``register`` (``--register``): which logged models become registered versions
REGISTER_CHOICES = ("all", "final", "none")
_STATUSES = ("FINISHED", "FAILED", "KILLED")
_MAX_PARAM_LEN = 6000


# ---------------------------------------------------------------------------------- URIs
def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri`` if given, else ``$MLFLOW_TRACKING_URI``, else
    ``sqlite:///<absolute cwd>/mlflow.db`` (an absolute path, so workers in other folders agree)."""
    if uri:
        return str(uri)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    rest = uri[len("sqlite://"):]
    if not rest.startswith("/"):
        return None  # "sqlite://" (in-memory)
    path = rest[1:].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


#: URI schemes of the tracking stores MLflow 3 accepts besides a server (``+driver`` suffixes allowed)
_DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def check_tracking_uri(uri: str, timeout: float = 3.0, *, must_exist: bool = False) -> None:
    """Fail early, with the fix, when the tracking store cannot be used.

    ``http(s)://``: GET ``<uri>/health``; raises ``ValueError`` if it does not answer 200 within
    ``timeout`` seconds. ``sqlite:///path``: the database's folder is created (unless
    ``must_exist``, which requires the file, e.g. for a read-only command), then the database is
    opened; ``ValueError`` when a part of the path is a file or it cannot be opened.
    ``postgresql://``, ``mysql://``, ``mssql://``, ``databricks``: left to MLflow. Any other scheme,
    a plain folder or ``file:`` (MLflow 3 refuses file stores unless ``MLFLOW_ALLOW_FILE_STORE=true``):
    ``ValueError`` naming the accepted forms.
    """
    scheme = urllib.parse.urlparse(uri).scheme.split("+", 1)[0].lower()
    forms = "use sqlite:////abs/path/mlflow.db, http(s)://HOST:PORT of an mlflow server, or a postgresql:// / mysql:// URL"
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http(s) only)
                status = resp.status
            reason = None if status == 200 else f"/health answered HTTP {status}"
        except urllib.error.HTTPError as exc:
            reason = f"/health answered HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = str(getattr(exc, "reason", exc))
        if reason is not None:
            raise ValueError(
                f"tracking server {uri} is unreachable: {reason}; start one with mlflow/start_server.sh "
                f"or pass --tracking-uri sqlite:///..."
            )
    elif scheme == "sqlite":
        path = _sqlite_path(uri)
        if path is not None:
            _check_sqlite_file(uri, path.expanduser(), must_exist)
    elif uri.strip().lower() == "databricks":  # MLflow's Databricks form without a profile: left to MLflow
        pass
    elif scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):  # a path (C: on Windows)
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):  # MLflow's own opt-in
            raise ValueError(f"{uri!r} is a folder (an MLflow file store, which MLflow 3 refuses): {forms}")
    elif scheme not in _DATABASE_SCHEMES and scheme != "databricks":
        raise ValueError(f"{uri!r} has the unsupported scheme {scheme!r}: {forms}")


def check_names(*, registered_model_name: str | None = None, experiment_name: str | None = None) -> None:
    """``ValueError`` with the fix for a registered model name MLflow would refuse at the first
    registration (blank, ``/`` or ``:``, ``.``, or starting with ``..``) or that ``models:/NAME@ALIAS`` URIs cannot
    name (``@``), and for a blank experiment name; checked before any trial."""
    if registered_model_name is not None:
        bad = [c for c in "/:@" if c in registered_model_name]
        # MLflow also refuses a name that is not its own normalised path ('.', '..x'; '/' is refused above)
        norm = posixpath.normpath(registered_model_name)
        if not registered_model_name.strip() or bad or norm != registered_model_name or norm == "." or norm.startswith(".."):
            raise ValueError(
                f"registered model name {registered_model_name!r} is invalid"
                f"{': it contains ' + ' '.join(repr(c) for c in bad) if bad else ''}; use letters, digits, '-', '_', '.' "
                f"(e.g. senn-digits)")
    if experiment_name is not None and not experiment_name.strip():
        raise ValueError(f"experiment name {experiment_name!r} is blank; pass a name, e.g. --experiment senn-automl")


def _check_sqlite_file(uri: str, path: Path, must_exist: bool) -> None:
    import sqlite3

    for parent in [path, *path.parents]:
        if parent.exists() and parent != path and not parent.is_dir():
            raise ValueError(f"{uri}: {parent} is a file, not a folder; put the database in a folder")
    if path.is_dir():
        raise ValueError(f"{uri}: {path} is a folder; name a database file, e.g. {path / 'mlflow.db'}")
    if must_exist and not path.is_file():
        raise ValueError(f"{uri}: no MLflow database at {path}; pass the sqlite URI that the search wrote to")
    try:
        if path.is_file():
            # quoted: a '#' or '?' in the path would otherwise end it (and mode=) and open or create another file
            con = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?mode={'ro' if must_exist else 'rw'}", uri=True,
                                  timeout=5)
            try:
                con.execute("select count(*) from sqlite_master")  # reads the header: 'file is not a database'
            finally:
                con.close()
        else:  # MLflow creates it; only check that it can (no empty database left by a refused run)
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".mlflow-check-"):
                pass
    except (OSError, sqlite3.Error) as exc:
        how = "opened" if path.is_file() else f"created in {path.parent}"
        fix = ("name an MLflow sqlite database, or a new file" if path.is_file() and isinstance(exc, sqlite3.DatabaseError)
               else "choose a folder you can write to")
        raise ValueError(f"{uri}: the sqlite database {path} cannot be {how} "
                         f"({getattr(exc, 'strerror', None) or exc}); {fix}") from None


# ---------------------------------------------------------------------------------- logged models
#: files of a growth checkpoint stored with each logged model (``extra_files/`` of its artifacts)
CHECKPOINT_FILES = ("state.pt", "arch.json", "preprocessing.json")


class RawInputModel(torch.nn.Module):
    """The served form of a growable network: raw features in, class probabilities or values out.

    ``forward(x)``: ``x`` of shape ``(n, n_features)``, float32, in the data's own units (digits grey
    levels 0..16, MNIST pixels 0..255, tabular sets as measured; images flattened channels-first,
    C·H·W columns) → classification: ``softmax(model((x - offset) / scale))``, shape
    ``(n, n_classes)``; regression: ``model((x - offset) / scale) · target_scale + target_offset``,
    shape ``(n, n_outputs)``, in the targets' own units; float32. ``offset`` and ``scale`` (buffers
    of shape ``(n_features,)``) are the scaling the network was trained on
    (:attr:`senn_automl.data.Dataset.feature_offset` / ``feature_scale``), ``target_offset`` and
    ``target_scale`` (``(n_outputs,)``) the standardisation of its targets
    (:attr:`senn_automl.data.Dataset.target_offset` / ``target_scale``).
    """

    def __init__(self, model: torch.nn.Module, offset: Any, scale: Any, *, task: str = "classification",
                 target_offset: Any = None, target_scale: Any = None):
        super().__init__()
        require_choice("task", task, ("classification", "regression"))
        self.model = model
        self.regression = task == "regression"
        n = _n_features(model)
        self.register_buffer("offset", _vector(offset, n, "offset"))
        self.register_buffer("scale", _vector(scale, n, "scale"))
        k = _n_outputs(model)
        self.register_buffer("target_offset", _vector(target_offset, k, "offset", what="target"))
        self.register_buffer("target_scale", _vector(target_scale, k, "scale", what="target"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model((x - self.offset) / self.scale)
        if self.regression:
            return out * self.target_scale + self.target_offset
        return torch.softmax(out, dim=1)


def _n_outputs(model: torch.nn.Module) -> int:
    last = model.fc if hasattr(model, "fc") else (model.linears[-1] if hasattr(model, "linears") else model.layers[-1])
    return int(last.bias.shape[0])


def _n_features(model: torch.nn.Module) -> int:
    shape = getattr(model, "in_shape", None)
    return int(np.prod(shape)) if shape is not None else int(model.in_features)


def _vector(value: Any, n: int, name: str, what: str = "feature") -> torch.Tensor:
    """``value`` (None: 0 for the offset, 1 for the scale; a scalar; or ``n`` values) as a float32 vector of ``n``."""
    if value is None:
        value = 0.0 if name == "offset" else 1.0
    v = torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(-1)
    if v.numel() == 1:
        v = v.expand(n).clone()
    if v.shape != (n,):
        raise ValueError(f"{what} {name} has {v.numel()} values; the model has {n} {what}s: pass one per {what} or a scalar")
    if name == "scale" and not bool(torch.all(v > 0)):
        raise ValueError(f"{what} scale must be > 0 for every {what}")
    return v


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A growth checkpoint read back by :func:`load_model`.

    model : the growable module (GrowingMLP, GrowingCNN or EdgeMLP), eval mode, on the CPU; it takes
        *scaled* features, shape ``(n, n_features)``, and returns logits ``(n, n_classes)`` or
        standardised values ``(n, n_outputs)``.
    spec : its architecture spec (``model.spec()``). feature_offset, feature_scale : the input scaling,
        shape ``(n_features,)``. task : "classification" or "regression". target_offset,
        target_scale : the target standardisation, ``(n_outputs,)`` (0 and 1 for classification). checkpoint : the whole ``arch.json`` (growth log, history, policy and
        training config; rebuild a trainer with :func:`senn_automl.training.trainer.load_checkpoint`
        on the downloaded ``extra_files`` folder to go on growing).
    """

    model: torch.nn.Module
    spec: dict
    feature_offset: np.ndarray
    feature_scale: np.ndarray
    checkpoint: dict
    task: str = "classification"
    target_offset: np.ndarray | None = None
    target_scale: np.ndarray | None = None

    def served(self) -> RawInputModel:
        """The module MLflow serves: raw features in, probabilities or values out (see :class:`RawInputModel`)."""
        return RawInputModel(self.model, self.feature_offset, self.feature_scale, task=self.task,
                             target_offset=self.target_offset, target_scale=self.target_scale).eval()

    def predict(self, X_raw: Any) -> np.ndarray:
        """What the served model returns for raw features ``X_raw`` ``(n, n_features)``, float64:
        class probabilities ``(n, n_classes)``, or values ``(n, n_outputs)`` in the targets' units."""
        X = np.asarray(X_raw, dtype=np.float32)
        with torch.no_grad():
            return self.served()(torch.from_numpy(np.ascontiguousarray(X))).double().numpy()

    def predict_proba(self, X_raw: Any) -> np.ndarray:
        """Class probabilities, shape ``(n, n_classes)`` float64, of raw features ``X_raw``
        ``(n, n_features)``. Raises ``ValueError`` for a regression model (use :meth:`predict`)."""
        if self.task == "regression":
            raise ValueError("this is a regression model: it has no class probabilities; use predict()")
        return self.predict(X_raw)


def _checkpoint_folder(local: Path) -> Path:
    for d in (local / "extra_files", local):
        if (d / "arch.json").is_file() and (d / "state.pt").is_file():
            return d
    raise FileNotFoundError(f"{local} holds no senn_automl checkpoint (extra_files/arch.json and state.pt): "
                            "was this model logged by senn_automl.integrations.tracking?")


def load_model(model_uri: str, *, tracking_uri: str | None = None) -> LoadedModel:
    """Read a logged growth checkpoint back as a growable module with its spec and input scaling.

    ``model_uri`` : ``models:/<name>/<version>``, ``models:/<name>@champion``, ``models:/m-<id>`` or a
    local folder of a downloaded model. The weights are loaded with ``torch.load(weights_only=True)``
    (no unpickling of code). For inference alone, ``mlflow.pytorch.load_model(model_uri)`` returns the
    served module (a ``torch.export`` program: raw features in, probabilities out) and
    ``mlflow.pyfunc.load_model(model_uri).predict`` the same as NumPy.

    Raises ``FileNotFoundError`` if the model holds no senn_automl checkpoint, ``MlflowException``
    if the URI cannot be resolved.
    """
    from senn_automl.models.registry import model_from_spec

    path = Path(model_uri)
    with tempfile.TemporaryDirectory(prefix="senn-model-") as tmp:
        if path.is_dir():
            local = path
        else:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp, tracking_uri=tracking_uri))
        d = _checkpoint_folder(local)
        meta = json.loads((d / "arch.json").read_text())
        state = torch.load(d / "state.pt", map_location="cpu", weights_only=True)
        pre = json.loads((d / "preprocessing.json").read_text()) if (d / "preprocessing.json").is_file() else {}
    model = model_from_spec(meta["spec"])
    model.load_state_dict(state["model"])
    model.eval()
    n = _n_features(model)
    offset = _vector(pre.get("feature_offset"), n, "offset").numpy()
    scale = _vector(pre.get("feature_scale"), n, "scale").numpy()
    k = _n_outputs(model)
    return LoadedModel(model=model, spec=meta["spec"], feature_offset=offset, feature_scale=scale, checkpoint=meta,
                       task=_task_of(meta), target_offset=_vector(pre.get("target_offset"), k, "offset", what="target").numpy(),
                       target_scale=_vector(pre.get("target_scale"), k, "scale", what="target").numpy())


def _task_of(meta: Mapping[str, Any]) -> str:
    """The task of a checkpoint's ``arch.json`` (checkpoints without one are classification)."""
    return str(meta.get("train_config", {}).get("task", "classification"))


def _str_dict(d: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): ("" if v is None else str(v)) for k, v in (d or {}).items()}


def log_growth_model(
    checkpoint_dir: str | os.PathLike,
    *,
    name: str,
    step: int,
    feature_offset: Any = None,
    feature_scale: Any = None,
    target_offset: Any = None,
    target_scale: Any = None,
    input_example: Any = None,
    params: Mapping[str, Any] | None = None,
    registered_model_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    validate: bool = True,
    run_id: str | None = None,
):
    """Log a checkpoint written by :meth:`Trainer.save_checkpoint` as a LoggedModel of run ``run_id``
    (default: the active run; the run may have ended) (MLflow's ``pytorch`` flavour, ``pt2`` format, with a ``pyfunc`` flavour), and register it as a new
    version of ``registered_model_name`` if given.

    The logged module is :class:`RawInputModel` (raw features ``(n, n_features)`` in, class
    probabilities ``(n, n_classes)`` or, for a regression checkpoint (its ``train_config.task``),
    values ``(n, n_outputs)`` in the targets' units out), exported with ``torch.export`` for any batch size, so it
    loads without senn_automl and without unpickling code. ``feature_offset`` / ``feature_scale``
    (scalars or ``(n_features,)``; default 0 and 1) are the scaling the network was trained on;
    ``target_offset`` / ``target_scale`` (regression, ``(n_outputs,)``; default 0 and 1) undo the
    target standardisation; ``input_example`` (raw rows, default two rows at the offset) gives the
    signature. The checkpoint
    files (:data:`CHECKPOINT_FILES`) are kept as the model's ``extra_files`` for :func:`load_model`.
    ``validate=False`` skips MLflow's check that the logged model loads back and predicts the input
    example (see :func:`_log_pt2_model`); the module is still run on the example here, before logging.

    Returns ``(model_info, model_version or None)``. Raises ``RuntimeError`` without ``run_id`` or an active run,
    ``FileNotFoundError`` if the checkpoint is incomplete, ``ValueError`` for scaling or an example
    of the wrong width.
    """
    from mlflow.models import infer_signature

    from senn_automl.models.registry import model_from_spec

    if run_id is None:
        if mlflow.active_run() is None:
            raise RuntimeError("log_growth_model needs an MLflow run: pass run_id or call mlflow.start_run() first")
        run_id = mlflow.active_run().info.run_id
    d = Path(checkpoint_dir)
    for f in CHECKPOINT_FILES[:2]:
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d / f} not found: write the checkpoint with Trainer.save_checkpoint first")
    meta = json.loads((d / "arch.json").read_text())
    model = model_from_spec(meta["spec"])
    model.load_state_dict(torch.load(d / "state.pt", map_location="cpu", weights_only=True)["model"])
    served = RawInputModel(model.eval(), feature_offset, feature_scale, task=_task_of(meta),
                           target_offset=target_offset, target_scale=target_scale).eval()
    n = _n_features(model)
    example = (np.tile(served.offset.numpy(), (2, 1)) if input_example is None
               else np.ascontiguousarray(np.asarray(input_example, dtype=np.float32)))
    if example.ndim != 2 or example.shape[1] != n:
        raise ValueError(f"input_example has shape {example.shape}; the model takes (n, {n}) raw features")
    with torch.no_grad():
        out = served(torch.from_numpy(example)).numpy()
    str_tags = _str_dict(tags)
    with tempfile.TemporaryDirectory(prefix="senn-extra-") as tmp:
        pre = Path(tmp) / "preprocessing.json"
        pre.write_text(json.dumps({"feature_offset": served.offset.tolist(), "feature_scale": served.scale.tolist(),
                                   "x_model": "(x_raw - feature_offset) / feature_scale",
                                   "target_offset": served.target_offset.tolist(), "target_scale": served.target_scale.tolist(),
                                   "y_raw": "y_model * target_scale + target_offset (regression)"}))
        info = _log_pt2_model(
            served,
            validate=validate,
            name=name,
            signature=infer_signature(example, out),
            input_example=example,
            extra_files=[str(d / "state.pt"), str(d / "arch.json"), str(pre)],
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            step=int(step),
            run_id=run_id,
            model_id=_new_logged_model(run_id, name, str_tags, _str_dict(params)),
        )
    version = None
    if registered_model_name:
        version = _register(info.model_id, registered_model_name, str_tags, run_id)
    return info, version


def _new_logged_model(run_id: str, name: str, tags: dict[str, str], params: dict[str, str]) -> str:
    """A new (PENDING) LoggedModel of run ``run_id``, in the run's experiment, with the run's params
    added to ``params``; its id. (Left to ``log_model``, the model would go to the thread's active
    experiment, MLflow's default one where no run is active: a driver logging a trial's model.)"""
    run = MlflowClient().get_run(run_id)
    model = mlflow.initialize_logged_model(name=name, source_run_id=run_id, experiment_id=run.info.experiment_id,
                                           tags=tags or None, params={**params, **run.data.params} or None)
    return model.model_id


def _log_pt2_model(served: torch.nn.Module, *, validate: bool, **kwargs):
    """``mlflow.pytorch.log_model(served, serialization_format="pt2", **kwargs)``, with or without
    MLflow's serving-input check (it loads the saved program back and predicts the input example).
    ``run_id`` (in ``kwargs``) reaches ``mlflow.models.Model.log``, whose documented parameter it is.

    The check is about a quarter of the time of logging one growth checkpoint (a profile of the
    trials of ``bench/search_overhead.py``; BENCHMARKS §5). A pt2 model must carry an input example, so
    the public way to skip the check (log a signature without an example) is closed to it; the only
    switch is the ``validate_serving_input`` keyword that ``mlflow.models.Model.log`` reads from its
    ``**kwargs`` (undocumented; present in mlflow 3.5 to 3.17, the range pinned in pyproject.toml).
    """
    if not validate:
        kwargs["validate_serving_input"] = False
    return mlflow.pytorch.log_model(served, serialization_format="pt2", **kwargs)


def _register(model_id: str, name: str, tags: dict[str, str], run_id: str):
    """A new version of registered model ``name`` from LoggedModel ``model_id`` of run ``run_id`` (what
    ``mlflow.register_model`` does, without its two lines on stderr per version)."""
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    return client.create_model_version(name, f"models:/{model_id}", run_id=run_id, tags=tags or None,
                                       model_id=model_id)


#: the file that makes a folder a deferred model: a :meth:`Trainer.save_checkpoint` checkpoint plus
#: this JSON of :func:`log_growth_model`'s arguments (``MLflowCallback(defer_models=...)`` writes it)
MODEL_JOB_FILE = "model_job.json"


def _listed(value: Any) -> Any:
    return None if value is None else np.asarray(value, dtype=np.float64).tolist()


def log_model_job(directory: str | os.PathLike, *, tracking_uri: str | None = None):
    """Log the deferred model in ``directory`` (its checkpoint and :data:`MODEL_JOB_FILE`, written by
    :class:`MLflowCallback` with ``defer_models``) with :func:`log_growth_model` into the run named in
    the job, at ``tracking_uri`` (default: the current one; when given, it becomes the process's
    tracking URI, ``mlflow.set_tracking_uri``); the final model's job also logs the run's growth
    plot (:func:`log_growth_plot`; a plot that fails is warned about, ``RuntimeWarning``).

    Resumable: each step done (the LoggedModel, its registered version, the plot) is recorded in the
    folder's ``logged.json``, so a call after a failure (a store that was locked, a killed process)
    does only the steps left and makes no second model or version. Returns ``(model_id, version or
    None)``; raises ``FileNotFoundError`` when the folder holds no job, and what
    :func:`log_growth_model` and MLflow raise."""
    d = Path(directory)
    if not (d / MODEL_JOB_FILE).is_file():
        raise FileNotFoundError(f"{d / MODEL_JOB_FILE} not found: not a deferred model of MLflowCallback(defer_models=...)")
    job = json.loads((d / MODEL_JOB_FILE).read_text())
    if tracking_uri is not None:
        mlflow.set_tracking_uri(tracking_uri)
    progress = d / "logged.json"
    done = json.loads(progress.read_text()) if progress.is_file() else {}

    def record(**steps):
        done.update(steps)
        progress.write_text(json.dumps(done))

    if "model_id" not in done:
        info, _ = log_growth_model(
            d, name=job["name"], step=job["step"], run_id=job["run_id"], tags=job["tags"], validate=job["validate"],
            feature_offset=job["feature_offset"], feature_scale=job["feature_scale"], target_offset=job["target_offset"],
            target_scale=job["target_scale"], input_example=job["input_example"],
        )
        record(model_id=info.model_id)
    if job["registered_model_name"] and "version" not in done:
        mv = _register(done["model_id"], job["registered_model_name"], _str_dict(job["tags"]), job["run_id"])
        record(version=str(mv.version))
    if job.get("plot_title") and not done.get("plot"):  # the run's growth plot, from the final checkpoint
        meta = json.loads((d / "arch.json").read_text())
        try:
            log_growth_plot(job["run_id"], meta["history"], meta["growth_log"], job["plot_title"])
            record(plot=True)
        # Broad on purpose: matplotlib or the artifact store; the model is logged, the plot is a picture of it
        except Exception as exc:
            warnings.warn(f"growth plot of MLflow run {job['run_id']} not logged: {type(exc).__name__}: {exc}",
                          RuntimeWarning, stacklevel=2)
    return done["model_id"], done.get("version")


def quiet_mlflow() -> None:
    """No MLflow INFO lines (database creation, alembic migrations) and no artifact download bars in
    this process (and the processes it starts: ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` unless set)."""
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


# ---------------------------------------------------------------------------------- callback
def _now_ms() -> int:
    """MLflow's timestamp unit: milliseconds since the epoch."""
    return int(time.time() * 1000)


def _flat_params(params: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for k, v in params.items():
        s = json.dumps(v) if isinstance(v, (list, tuple, dict)) else ("None" if v is None else str(v))
        out[str(k)] = s[:_MAX_PARAM_LEN]
    return out


class MLflowCallback(Callback):
    """Trainer callback that records one training run in MLflow.

    Parameters
    ----------
    tracking_uri : tracking store (set with ``mlflow.set_tracking_uri`` at fit start, so it works in
        worker processes). experiment_id : experiment of the run (``None``: MLflow's default).
    parent_run_id : nest the run under this run (e.g. the study run of :func:`start_parent_run`).
    run_id : log into this existing run instead of creating one (e.g. ``$MLFLOW_RUN_ID`` under
        ``mlflow run``); ``experiment_id`` and ``parent_run_id`` are then not used.
    run_name : the run's name, also the ``trial`` tag of registered versions.
    params : flat configuration logged as params (default: the policy's and training config).
    registered_model_name : the registered model that versions are added to (None: none are).
    register : which logged models become versions of it: ``"all"`` (every growth checkpoint and the
        final model, the default), ``"final"`` (the final model only) or ``"none"``; every model is a
        LoggedModel of the run in any case. tags : tags of the run (also added to registered versions).
        The final model is the one the trainer returns (the best-validation epoch's under
        ``restore_best``): its version's ``epoch``, metric, ``n_params`` and ``growth_step`` tags are
        that epoch's, ``last_epoch`` the last trained one, and it is logged at that epoch's step.
    feature_offset, feature_scale : the input scaling the network trains on (scalars or
        ``(n_features,)``; see :class:`RawInputModel`), so logged models take raw features.
    target_offset, target_scale : regression: the target standardisation (``(n_outputs,)``), so
        logged models predict in the targets' units.
    input_example : a few raw rows ``(k, n_features)`` stored with each logged model (its signature).
        MLflow checks that the final model loads back and predicts them; growth checkpoints skip that
        check (``log_growth_model(validate=False)``), since they are exported the same way.
    plot : log the growth plot (``growth/growth.png``: parameters and validation accuracy or R² against
        epochs, events marked) when the run ends (with ``defer_models``: when the final model's job is logged).
    defer_models : ``None`` (log each model when it is made) or a callable that takes charge of a
        deferred model: the callback writes the model's checkpoint and :data:`MODEL_JOB_FILE` (the
        arguments of :func:`log_growth_model`, this run's id among them, and a ``job_id``) into a new
        temporary folder and passes its path, and whoever receives it must run :func:`log_model_job` on
        it. Ray Tune trials hand them to the search's driver, which logs them while the trials train
        (:mod:`senn_automl.integrations.tune.relay`). Deferred models are not in ``versions``,
        ``final_version`` and ``logged_models``, and only models logged before a step's metrics carry them.
    defer_metrics : ``None`` (send metrics to the run) or a callable that takes each batch of metrics
        instead, as ``[key, value, timestamp_ms, step]`` rows, and must log them to this run
        (Ray Tune trials send them with their next report, and the driver logs them).
    metrics_every : the per-epoch metrics are sent in one ``log_batch`` every this many epochs, at
        each growth check that grew and when the run ends (``1``: every epoch). One batch costs about
        what one ``log_metrics`` call costs (a profile of bench/search_overhead.py's tracked loop on a
        local sqlite store); a process killed in between loses at most the last ``metrics_every - 1``
        epochs' metrics (Ray Tune trials use ``1``: see :func:`~senn_automl.integrations.tune.trainable.train_senn`).

    After fit: ``run_id``, ``versions`` (list of ``(version, tags)``), ``final_version``,
    ``logged_models`` (``ModelInfo`` of each logged model), ``events`` (growth log dicts).

    The run ends in ``on_fit_end``. If ``fit`` raises, call :meth:`close` (``"FINISHED"`` for
    ``SystemExit``, which Ray Tune uses to stop trials; ``"FAILED"`` otherwise) or use the
    callback as a context manager, so no run stays RUNNING.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str | None,
        *,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        registered_model_name: str | None = None,
        register: str = "all",
        tags: Mapping[str, Any] | None = None,
        feature_offset: Any = None,
        feature_scale: Any = None,
        target_offset: Any = None,
        target_scale: Any = None,
        input_example: Any = None,
        plot: bool = True,
        metrics_every: int = 10,
        defer_models: Callable[[Path], None] | None = None,
        defer_metrics: Callable[[list[list]], None] | None = None,
    ):
        require_choice("register", register, REGISTER_CHOICES)
        require(is_whole(metrics_every) and metrics_every >= 1, "metrics_every", metrics_every, "use a whole number of epochs >= 1")
        self.tracking_uri = tracking_uri
        self.experiment_id = None if experiment_id is None else str(experiment_id)
        self.parent_run_id = parent_run_id
        self.run_name = run_name
        self.params = dict(params) if params is not None else None
        self.registered_model_name = registered_model_name
        self.register = register
        self.tags = _str_dict(tags)
        self.feature_offset, self.feature_scale, self.input_example = feature_offset, feature_scale, input_example
        self.target_offset, self.target_scale = target_offset, target_scale
        self.plot = bool(plot)
        self.metrics_every = int(metrics_every)
        self.defer_models = defer_models
        self.defer_metrics = defer_metrics
        self._unsent: list[Any] = []  # mlflow.entities.Metric of epochs not yet sent
        self._models_at: dict[int, list[str]] = {}  # step -> ids of the LoggedModels logged at it
        self.run_id: str | None = run_id
        self._params_logged = False
        self.versions: list[tuple[str, dict[str, str]]] = []
        self.final_version: str | None = None
        self.logged_models: list[Any] = []
        self.events: list[dict[str, Any]] = []
        self._open = False

    # ------------------------------------------------------------------ run lifecycle
    def on_fit_start(self, trainer) -> None:
        if self._open:
            return
        mlflow.set_tracking_uri(self.tracking_uri)
        nested = mlflow.active_run() is not None
        if self.run_id is not None:  # a later fit() call, or an existing run given as run_id: continue it
            mlflow.start_run(run_id=self.run_id, nested=nested)
            if self.tags and not self._params_logged:  # an existing run: add this run's tags once
                mlflow.set_tags(self.tags)
        else:
            parent = self.parent_run_id
            # `mlflow run` exports MLFLOW_RUN_ID; start_run() would then *resume* that run instead of
            # creating this one. Drop it, and nest under it when no parent was given and it exists here.
            env_run = os.environ.pop("MLFLOW_RUN_ID", None)
            if env_run and parent is None and not nested:
                try:
                    MlflowClient(self.tracking_uri).get_run(env_run)
                    parent = env_run
                except MlflowException:
                    pass
            run = mlflow.start_run(
                experiment_id=self.experiment_id,
                parent_run_id=parent,
                run_name=self.run_name,
                tags=self.tags or None,
                nested=nested,
            )
            self.run_id = run.info.run_id
            if self.run_name is None:
                self.run_name = run.info.run_name
        self._open = True
        if not self._params_logged:
            self._params_logged = True
            params = self.params if self.params is not None else self._trainer_params(trainer)
            if self.params is not None:
                # the values training uses: a config may say "auto" (weight_decay) where the trainer
                # holds what it resolved to
                used = dataclasses.asdict(trainer.config)
                params = {**params, **{k: used[k] for k in params if k in used}}
            if params:
                mlflow.log_params(_flat_params(params))

    @staticmethod
    def _trainer_params(trainer) -> dict[str, Any]:
        params = dict(trainer.policy.config())
        params.update(dataclasses.asdict(trainer.config))
        params["start_hidden"] = list(trainer.model.hidden)
        return params

    def _ensure_active(self) -> None:
        active = mlflow.active_run()
        if not self._open or active is None or active.info.run_id != self.run_id:
            raise RuntimeError(f"MLflow run {self.run_id} is not the active run (was on_fit_start called?)")

    def close(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` (FINISHED, FAILED or KILLED) if it is still open; idempotent."""
        status = status.upper()
        if status not in _STATUSES:
            raise ValueError(f"status={status!r} is invalid: use one of {', '.join(_STATUSES)}")
        if not self._open or self.run_id is None:
            return
        try:
            self._flush_metrics()
        finally:  # the run ends even when the store refuses the last metrics (the error still surfaces)
            self._open = False
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                mlflow.end_run(status)
            else:  # not on this thread's stack any more: end it through the client
                MlflowClient(self.tracking_uri).set_terminated(self.run_id, status)

    def __enter__(self) -> "MLflowCallback":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close("FINISHED")
        elif issubclass(exc_type, SystemExit):
            if self._open:
                MlflowClient(self.tracking_uri).set_tag(self.run_id, "stopped_by", "SystemExit")
            self.close("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("KILLED")
        else:
            self.close("FAILED")
        return False

    # ------------------------------------------------------------------ hooks
    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        self._ensure_active()
        keys = ("val_acc", "val_r2", "val_loss", "train_loss", "n_params", "n_growth_events", "eta")
        metrics = {k: float(record[k]) for k in keys if record.get(k) is not None}
        metrics["depth"] = float(len(record.get("hidden", ())))
        now, step = _now_ms(), int(record["epoch"])
        # as mlflow.log_metrics does: a metric of a step at which a model was logged is also that model's
        for model_id in self._models_at.get(step, [None]):
            self._unsent.extend(mlflow.entities.Metric(k, v, now, step, model_id=model_id) for k, v in metrics.items())
        if (step + 1) % self.metrics_every == 0:
            self._flush_metrics()

    def _flush_metrics(self) -> None:
        """Send the buffered metrics to the run (``MlflowClient.log_batch`` splits them into
        requests of MLflow's 1,000-metric limit), or hand them to ``defer_metrics``."""
        if self._unsent:
            metrics, self._unsent = self._unsent, []
            if self.defer_metrics is not None:
                self.defer_metrics([[m.key, m.value, m.timestamp, m.step] for m in metrics])
            else:
                MlflowClient(self.tracking_uri).log_batch(self.run_id, metrics=metrics)

    def _add_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = _now_ms()
        self._unsent.extend(mlflow.entities.Metric(k, float(v), now, int(step)) for k, v in metrics.items())

    def on_growth(self, trainer, events) -> None:
        self._ensure_active()
        if not events:
            return
        self.events.extend(e.to_dict() for e in events)
        mlflow.log_dict(self.events, "growth/events.json")
        epoch = int(events[-1].epoch)  # -1 for the check before the first epoch (check_at_start)
        self._add_metrics(
            {
                "growth_events_in_check": float(len(events)),
                "growth_params_added": float(events[-1].params_after - events[0].params_before),
                "growth_neurons": float(sum(e.n for e in events if e.kind in ("neuron", "units"))),
                "growth_layers": float(sum(e.kind == "layer" for e in events)),
                # before the first epoch no epoch record logs the size (nor any validation score)
                **({"n_params": float(trainer.model.n_params())} if epoch < 0 else {}),
            },
            step=epoch,
        )
        self._flush_metrics()  # before the model (MLflow links it to its step's metrics); a process killed
        # after this check keeps the metrics up to its checkpoint
        step = int(events[-1].step)
        tags = {
            "growth_step": step,
            "n_events": len(events),
            "kinds": ",".join(e.kind for e in events),
            "hidden": json.dumps(list(trainer.model.hidden)),
        }
        self._log_model(trainer, name=f"growth-{step:03d}", step=epoch, extra_tags=tags)

    def on_fit_end(self, trainer) -> None:
        if not self._open:
            return
        try:
            self._ensure_active()
            self._flush_metrics()  # before the final model is logged: MLflow links it to its step's metrics
            record = _returned_record(trainer)  # the best-validation epoch's, when fit restored that model
            epoch = int(record["epoch"]) if record else 0
            events = int(record.get("n_growth_events", 0)) if record else 0
            tags = {
                "final": "true",
                "growth_step": events - 1 if events else "",
                "hidden": json.dumps(list(trainer.model.hidden)),
                "stopped_early": str(bool(trainer.stopped_early)).lower(),
                "last_epoch": int(trainer.history[-1]["epoch"]) if trainer.history else "",
            }
            version = self._log_model(trainer, name="final", step=epoch, extra_tags=tags, record=record)
            self.final_version = version
            self._add_metrics({"final_n_params": float(trainer.model.n_params())}, step=epoch)
            self._flush_metrics()
            if self.plot and trainer.history and self.defer_models is None:  # deferred: drawn with the final model's job
                log_growth_plot(self.run_id, trainer.history, [e.to_dict() for e in trainer.growth_log], self._plot_title())
        except BaseException:
            self.close("FAILED")
            raise
        self.close("FINISHED")

    def _log_model(self, trainer, *, name: str, step: int, extra_tags: Mapping[str, Any],
                   record: Mapping[str, Any] | None = None) -> str | None:
        last = record if record is not None else (trainer.history[-1] if trainer.history else {})
        tags = {
            **self.tags,
            "trial": self.run_name or self.run_id,
            "run_id": self.run_id,
            "policy": getattr(trainer.policy, "name", type(trainer.policy).__name__),
            "epoch": step,
            "n_params": trainer.model.n_params(),
            trainer.task.metric: last.get(trainer.task.metric, ""),
            **extra_tags,
        }
        tags = _str_dict(tags)
        registered = self.registered_model_name if self.register == "all" or (self.register == "final" and name == "final") else None
        if self.defer_models is not None:
            folder = Path(tempfile.mkdtemp(prefix=f"senn-model-{name}-"))
            trainer.save_checkpoint(folder)
            (folder / MODEL_JOB_FILE).write_text(json.dumps({
                "job_id": uuid.uuid4().hex, "run_id": self.run_id, "name": name, "step": int(step),
                "registered_model_name": registered, "tags": tags, "validate": name == "final",
                "feature_offset": _listed(self.feature_offset), "feature_scale": _listed(self.feature_scale),
                "target_offset": _listed(self.target_offset), "target_scale": _listed(self.target_scale),
                "input_example": _listed(self.input_example),
                "plot_title": self._plot_title() if name == "final" and self.plot and trainer.history else None,
            }))
            self.defer_models(folder)
            return None
        with tempfile.TemporaryDirectory(prefix="senn-ckpt-") as tmp:
            trainer.save_checkpoint(tmp)
            info, mv = log_growth_model(
                tmp, name=name, step=step, registered_model_name=registered, tags=tags,
                feature_offset=self.feature_offset, feature_scale=self.feature_scale, input_example=self.input_example,
                target_offset=self.target_offset, target_scale=self.target_scale,
                validate=name == "final",  # growth checkpoints share the final model's export path
            )
        self.logged_models.append(info)
        self._models_at.setdefault(int(step), []).append(info.model_id)
        if mv is None:
            return None
        self.versions.append((str(mv.version), tags))
        return str(mv.version)


    def _plot_title(self) -> str:
        return f"{self.run_name or self.run_id}: growth during training"


def log_growth_plot(run_id: str, history: list[dict[str, Any]], growth_log: list[dict[str, Any]], title: str) -> None:
    """Log the growth plot (:func:`~senn_automl.integrations.plotting.plot_growth`: parameters and the
    validation score against epochs, events marked) as ``growth/growth.png`` of run ``run_id``."""
    from senn_automl.integrations.plotting import plot_growth

    with tempfile.TemporaryDirectory(prefix="senn-plot-") as tmp:
        png = plot_growth(history, growth_log, Path(tmp) / "growth.png", title=title)
        MlflowClient().log_artifact(run_id, str(png), "growth")


def _returned_record(trainer) -> dict[str, Any] | None:
    """The history record of the epoch whose model the trainer holds after ``fit``: the restored
    best-validation epoch (``trainer.restored_epoch``), else the last one; None before any epoch."""
    if not trainer.history:
        return None
    return next((r for r in trainer.history if int(r["epoch"]) == trainer.restored_epoch), trainer.history[-1])


# ---------------------------------------------------------------------------------- registry / study
def set_champion(registered_model_name: str, version: str | int, client: MlflowClient | None = None) -> None:
    """Point the ``champion`` alias of ``registered_model_name`` at ``version``
    (load it with ``mlflow.pyfunc.load_model("models:/<name>@champion")``)."""
    client = client or MlflowClient()
    client.set_registered_model_alias(registered_model_name, CHAMPION_ALIAS, str(version))


def get_or_create_experiment(tracking_uri: str, name: str) -> str:
    """The id of experiment ``name`` in ``tracking_uri``, created if missing (a sqlite store keeps its
    artifacts next to the database, as in :func:`start_parent_run`). Raises ``ValueError`` naming the
    fix when the store cannot be used (see :func:`check_tracking_uri`)."""
    check_tracking_uri(tracking_uri)
    return _get_or_create_experiment(MlflowClient(tracking_uri), name, _default_artifact_location(tracking_uri, name))


def _get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:  # created concurrently by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _default_artifact_location(tracking_uri: str, experiment_name: str) -> str | None:
    """For a sqlite file store: ``<db folder>/mlartifacts/<experiment>`` (MLflow's default is
    ``./mlruns`` of whatever the working directory was when the experiment was created)."""
    path = _sqlite_path(tracking_uri) if tracking_uri.startswith("sqlite:") else None
    if path is None:
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment_name) or "experiment"
    return str(path.expanduser().resolve().parent / "mlartifacts" / safe)


def start_parent_run(
    tracking_uri: str,
    experiment_name: str,
    study_name: str,
    tags: Mapping[str, Any] | None = None,
    *,
    artifact_location: str | None = None,
) -> tuple[str, str]:
    """In the driver: check the store, create the experiment once (before workers start, which
    avoids sqlite schema/experiment-creation races) and open a parent run named ``study_name``.

    A new experiment in a sqlite store keeps its artifacts next to the database
    (``<db folder>/mlartifacts/<experiment>``) unless ``artifact_location`` is given; a server
    uses its own artifact store. Sets the process's tracking URI.

    Returns ``(experiment_id, run_id)``. The parent run stays RUNNING (it is not pushed on the
    fluent active-run stack, so child runs can be started in this process too); end it with
    :func:`end_parent_run`. Under ``mlflow run`` (``$MLFLOW_RUN_ID``) it is nested under the
    project's run.
    """
    check_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    location = artifact_location or _default_artifact_location(tracking_uri, experiment_name)
    experiment_id = _get_or_create_experiment(client, experiment_name, location)
    run_tags = {"study": study_name, **_str_dict(tags)}
    env_run = os.environ.get("MLFLOW_RUN_ID")  # under `mlflow run`: nest the study under the project's run
    if env_run and "mlflow.parentRunId" not in run_tags:
        try:
            client.get_run(env_run)
            run_tags["mlflow.parentRunId"] = env_run
        except MlflowException:
            pass
    # MLflow's documented system tags, which mlflow.start_run would add (client.create_run does not)
    run_tags.setdefault("mlflow.user", _user())
    run_tags.setdefault("mlflow.source.name", Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python")
    run_tags.setdefault("mlflow.source.type", "LOCAL")
    run = client.create_run(experiment_id, tags=run_tags, run_name=study_name)
    return experiment_id, run.info.run_id


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (some containers)
        return "unknown"


def end_parent_run(run_id: str, status: str = "FINISHED", tracking_uri: str | None = None) -> None:
    """End the parent run ``run_id`` with ``status`` (FINISHED, FAILED or KILLED)."""
    status = status.upper()
    if status not in _STATUSES:
        raise ValueError(f"status={status!r} is invalid: use one of {', '.join(_STATUSES)}")
    client = MlflowClient(tracking_uri) if tracking_uri else MlflowClient()
    if client.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING):
        client.set_terminated(run_id, status)
