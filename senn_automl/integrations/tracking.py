"""MLflow tracking and model registry for growing networks (an integration: imports mlflow).

One MLflow run per training run (a child of a study's parent run when tuning), per-epoch metrics,
the growth log as an artifact, and one pyfunc **LoggedModel per growth check** (weights in
``state.pt`` + architecture spec in ``arch.json``, rebuilt by :class:`SENNPyfunc`), each registered
as a new version of a registered model with tags, plus the final model (tag ``final=true``).

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
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import mlflow
from senn_automl.training.trainer import Callback

__all__ = [
    "resolve_tracking_uri",
    "check_tracking_uri",
    "SENNPyfunc",
    "log_growth_model",
    "MLflowCallback",
    "set_champion",
    "start_parent_run",
    "end_parent_run",
    "CHAMPION_ALIAS",
]

CHAMPION_ALIAS = "champion"
PACKAGE_DIR = Path(__file__).resolve().parent
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


def check_tracking_uri(uri: str, timeout: float = 3.0) -> None:
    """Fail early, with the fix, when the tracking store cannot be used.

    ``http(s)://``: GET ``<uri>/health``; raises ``ValueError`` if it does not answer 200 within
    ``timeout`` seconds. ``sqlite:///path``: creates the database's parent folder. Other schemes are
    left to MLflow.
    """
    if uri.startswith(("http://", "https://")):
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
    elif uri.startswith("sqlite:"):
        path = _sqlite_path(uri)
        if path is not None:
            path.expanduser().parent.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------------- pyfunc model
class SENNPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc flavour of a growable-model checkpoint (GrowingMLP, GrowingCNN, EdgeMLP).

    Artifacts: ``arch`` (``arch.json``, key ``"spec"``) and ``state`` (``state.pt``, key ``"model"``
    = state_dict). No nn.Module is pickled: the model is rebuilt from the spec, then the weights
    are loaded. ``predict`` takes a DataFrame or array of shape (n, n_features) (images flattened
    channels-first, C·H·W columns, for a CNN) and returns class probabilities, a float64 array of shape (n, n_classes).
    """

    def load_context(self, context) -> None:
        from senn_automl.models.registry import model_from_spec

        with open(context.artifacts["arch"]) as f:
            meta = json.load(f)
        self.model = model_from_spec(meta["spec"])
        state = torch.load(context.artifacts["state"], map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.model.eval()

    def predict(self, context, model_input, params=None):
        if hasattr(model_input, "to_numpy"):
            model_input = model_input.to_numpy()
        X = np.asarray(model_input, dtype=np.float32)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        shape = getattr(self.model, "in_shape", None)
        n_features = int(np.prod(shape)) if shape is not None else self.model.in_features
        if X.ndim != 2 or X.shape[1] != n_features:
            raise ValueError(f"model_input has shape {X.shape}; expected (n, {n_features}) features")
        with torch.no_grad():
            logits = self.model(torch.from_numpy(np.ascontiguousarray(X)))
            return torch.softmax(logits.double(), dim=1).numpy()


def _str_dict(d: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): ("" if v is None else str(v)) for k, v in (d or {}).items()}


def log_growth_model(
    checkpoint_dir: str | os.PathLike,
    *,
    name: str,
    step: int,
    params: Mapping[str, Any] | None = None,
    registered_model_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
):
    """Log a checkpoint written by :meth:`Trainer.save_checkpoint` as a pyfunc LoggedModel of the
    active run, and register it as a new version of ``registered_model_name`` if given.

    Returns ``(model_info, model_version or None)``. Raises ``RuntimeError`` without an active run
    and ``FileNotFoundError`` if the checkpoint is incomplete.
    """
    if mlflow.active_run() is None:
        raise RuntimeError("log_growth_model needs an active MLflow run: call mlflow.start_run() first")
    d = Path(checkpoint_dir)
    for f in ("state.pt", "arch.json"):
        if not (d / f).is_file():
            raise FileNotFoundError(f"{d / f} not found: write the checkpoint with Trainer.save_checkpoint first")
    str_tags = _str_dict(tags)
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=SENNPyfunc(),
        artifacts={"state": str(d / "state.pt"), "arch": str(d / "arch.json")},
        code_paths=[str(PACKAGE_DIR)],
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
        params=_str_dict(params) or None,
        tags=str_tags or None,
        step=int(step),
    )
    version = None
    if registered_model_name:
        version = mlflow.register_model(f"models:/{info.model_id}", registered_model_name, tags=str_tags or None)
    return info, version


# ---------------------------------------------------------------------------------- callback
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
    run_name : the run's name, also the ``trial`` tag of registered versions.
    params : flat configuration logged as params (default: the policy's and training config).
    registered_model_name : if given, every growth checkpoint and the final model are registered
        as new versions of this model. tags : tags of the run (also added to registered versions).

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
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        registered_model_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
    ):
        self.tracking_uri = tracking_uri
        self.experiment_id = None if experiment_id is None else str(experiment_id)
        self.parent_run_id = parent_run_id
        self.run_name = run_name
        self.params = dict(params) if params is not None else None
        self.registered_model_name = registered_model_name
        self.tags = _str_dict(tags)
        self.run_id: str | None = None
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
        if self.run_id is not None:  # a later fit() call continues the same run
            mlflow.start_run(run_id=self.run_id, nested=nested)
            self._open = True
            return
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
        params = self.params if self.params is not None else self._trainer_params(trainer)
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
        keys = ("val_acc", "val_loss", "train_loss", "n_params", "n_growth_events", "eta")
        metrics = {k: float(record[k]) for k in keys if record.get(k) is not None}
        metrics["depth"] = float(len(record.get("hidden", ())))
        mlflow.log_metrics(metrics, step=int(record["epoch"]))

    def on_growth(self, trainer, events) -> None:
        self._ensure_active()
        if not events:
            return
        self.events.extend(e.to_dict() for e in events)
        mlflow.log_dict(self.events, "growth/events.json")
        epoch = int(events[-1].epoch)
        mlflow.log_metrics(
            {
                "growth_events_in_check": float(len(events)),
                "growth_params_added": float(events[-1].params_after - events[0].params_before),
                "growth_neurons": float(sum(e.kind == "neuron" for e in events)),
                "growth_layers": float(sum(e.kind == "layer" for e in events)),
            },
            step=epoch,
        )
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
            epoch = int(trainer.history[-1]["epoch"]) if trainer.history else 0
            tags = {
                "final": "true",
                "growth_step": len(trainer.growth_log) - 1 if trainer.growth_log else "",
                "hidden": json.dumps(list(trainer.model.hidden)),
                "stopped_early": str(bool(trainer.stopped_early)).lower(),
            }
            version = self._log_model(trainer, name="final", step=epoch, extra_tags=tags)
            self.final_version = version
            mlflow.log_metrics({"final_n_params": float(trainer.model.n_params())}, step=epoch)
        except BaseException:
            self.close("FAILED")
            raise
        self.close("FINISHED")

    def _log_model(self, trainer, *, name: str, step: int, extra_tags: Mapping[str, Any]) -> str | None:
        last = trainer.history[-1] if trainer.history else {}
        tags = {
            **self.tags,
            "trial": self.run_name or self.run_id,
            "run_id": self.run_id,
            "policy": getattr(trainer.policy, "name", type(trainer.policy).__name__),
            "epoch": step,
            "n_params": trainer.model.n_params(),
            "val_acc": last.get("val_acc", ""),
            **extra_tags,
        }
        tags = _str_dict(tags)
        with tempfile.TemporaryDirectory(prefix="senn-ckpt-") as tmp:
            trainer.save_checkpoint(tmp)
            info, mv = log_growth_model(
                tmp, name=name, step=step, registered_model_name=self.registered_model_name, tags=tags
            )
        self.logged_models.append(info)
        if mv is None:
            return None
        self.versions.append((str(mv.version), tags))
        return str(mv.version)


# ---------------------------------------------------------------------------------- registry / study
def set_champion(registered_model_name: str, version: str | int, client: MlflowClient | None = None) -> None:
    """Point the ``champion`` alias of ``registered_model_name`` at ``version``
    (load it with ``mlflow.pyfunc.load_model("models:/<name>@champion")``)."""
    client = client or MlflowClient()
    client.set_registered_model_alias(registered_model_name, CHAMPION_ALIAS, str(version))


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
    from mlflow.tracking.context.registry import resolve_tags

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
    run_tags = resolve_tags(run_tags)
    run = client.create_run(experiment_id, tags=run_tags, run_name=study_name)
    return experiment_id, run.info.run_id


def end_parent_run(run_id: str, status: str = "FINISHED", tracking_uri: str | None = None) -> None:
    """End the parent run ``run_id`` with ``status`` (FINISHED, FAILED or KILLED)."""
    status = status.upper()
    if status not in _STATUSES:
        raise ValueError(f"status={status!r} is invalid: use one of {', '.join(_STATUSES)}")
    client = MlflowClient(tracking_uri) if tracking_uri else MlflowClient()
    if client.get_run(run_id).info.status == RunStatus.to_string(RunStatus.RUNNING):
        client.set_terminated(run_id, status)
