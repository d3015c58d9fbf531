"""The Ray Tune trainable: :func:`train_senn` grows one network per trial and reports each epoch
with :class:`TuneReportCallback`; :func:`split_config` separates a trial config's wiring
(:data:`PLUMBING_KEYS`) from its model/growth settings."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

from ray import tune

from senn_automl.data import Dataset
from senn_automl.training.trainer import Callback

#: Trial-config keys that carry wiring (tracking, study), not model/growth settings.
PLUMBING_KEYS = ("mlflow_uri", "experiment_id", "parent_run_id", "study_name", "registered_model_name", "register", "dataset",
                 "data_root", "target", "checkpoint_every")

#: Metrics sent to Tune every epoch (``val_acc`` for classification, ``val_r2`` for regression).
REPORTED_METRICS = ("val_acc", "val_r2", "val_loss", "train_loss", "n_params", "eta", "n_growth_events", "epoch", "final")


class TuneReportCallback(Callback):
    """Report each epoch to Ray Tune (``ray.tune.report``), one report per epoch.

    Metrics: ``val_acc`` (classification) or ``val_r2`` (regression: R² averaged over targets),
    ``val_loss, train_loss, n_params, eta`` (0.0 before the first growth
    check), ``n_growth_events, epoch`` and ``final`` (1.0 on the last report of a trial that
    trained to its end, by ``max_epochs`` or early stopping; 0.0 otherwise).

    A Tune checkpoint (:meth:`Trainer.save_checkpoint` in a temporary directory, copied by Tune)
    is attached when the epoch grew the network (``record["grew"] > 0``), is the last epoch, or
    (``checkpoint_every`` > 0, for population-based training, which exploits a trial's latest
    checkpoint) ends a multiple of ``checkpoint_every`` epochs.
    The last epoch's report is sent from ``on_fit_end``, after the trainer restored its best
    model, so the final checkpoint and metrics describe the model the run ends with; when
    ``val_data`` is given its validation metric and ``val_loss`` are re-measured on that model.

    Deferred MLflow metrics and models (:meth:`hand_metrics` and :meth:`hand_over`, the
    ``defer_metrics`` and ``defer_models`` of the trial's MLflow callback) go with the next report: the
    metrics under :data:`~senn_automl.integrations.tune.relay.METRICS_KEY`, the models' folders in
    the report's checkpoint (one is then attached), in its
    :data:`~senn_automl.integrations.tune.relay.MODELS_DIR`; the driver logs them
    (:class:`~senn_automl.integrations.tune.relay.MLflowRelay`).

    ``tune.report`` may raise ``SystemExit`` (Tune stops the trial: ASHA, ``max_t``); callers
    must let it propagate (see :func:`train_senn`). ``run_id`` (a callable, read at each report) adds
    the trial's MLflow run id to its results as ``mlflow_run_id``, which the searcher stores on the
    Optuna trial.
    """

    def __init__(self, val_data: tuple | None = None, run_id: Callable[[], str | None] | None = None,
                 checkpoint_every: int = 0):
        self.val_data = val_data
        self.run_id = run_id
        self.checkpoint_every = int(checkpoint_every or 0)
        self._pending: dict[str, Any] | None = None
        self._models: list[Path] = []  # deferred models not yet sent
        self._metrics: list[list] = []  # deferred metric rows not yet sent
        #: metrics of the final model (set just before the last report), None until then
        self.final_metrics: dict[str, Any] | None = None

    @staticmethod
    def metrics(record: dict[str, Any]) -> dict[str, Any]:
        eta = record.get("eta")
        return {
            **{k: float(record[k]) for k in ("val_acc", "val_r2") if k in record},
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

    def hand_over(self, folder: Path) -> None:
        """Take a deferred model's folder (the MLflow callback's ``defer_models``); it is moved into
        the next report's checkpoint."""
        self._models.append(Path(folder))

    def hand_metrics(self, rows: list[list]) -> None:
        """Take deferred MLflow metric rows (the MLflow callback's ``defer_metrics``); they go with the
        next report."""
        self._metrics.extend(rows)

    def discard(self) -> None:
        """Remove the deferred models not sent (a trial that fails before its next report)."""
        models, self._models = self._models, []
        for m in models:
            shutil.rmtree(m, ignore_errors=True)

    def _report(self, trainer, metrics: dict[str, Any], checkpoint: bool) -> None:
        from senn_automl.integrations.tune.relay import METRICS_KEY, MODELS_DIR

        metrics = dict(metrics)
        run_id = self.run_id() if self.run_id is not None else None
        if run_id:
            metrics["mlflow_run_id"] = run_id
        if self._metrics:
            metrics[METRICS_KEY], self._metrics = self._metrics, []
        if not checkpoint and not self._models:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="senn-ckpt-") as d:
            trainer.save_checkpoint(d)
            models, self._models = self._models, []
            for m in models:
                shutil.move(str(m), str(Path(d) / MODELS_DIR / m.name))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    def on_epoch_end(self, trainer, record):
        metrics = self.metrics(record)
        if self._is_last(trainer):
            metrics["final"] = 1.0
            self._pending = metrics  # sent from on_fit_end, after the best model is restored
            return
        periodic = self.checkpoint_every > 0 and trainer.epoch % self.checkpoint_every == 0
        self._report(trainer, metrics, checkpoint=periodic or int(record.get("grew") or 0) > 0)

    def on_fit_end(self, trainer):
        if self._pending is None:
            return
        metrics, self._pending = self._pending, None
        metrics["n_params"] = int(trainer.model.n_params())
        if self.val_data is not None:
            import torch

            Xv = torch.as_tensor(self.val_data[0], dtype=torch.float32).to(trainer.device)
            yv = trainer.task.targets(self.val_data[1], trainer.device)
            metrics["val_loss"], metrics[trainer.task.metric] = (float(v) for v in trainer.evaluate(Xv, yv))
        self.final_metrics = dict(metrics)
        self._report(trainer, metrics, checkpoint=True)



def _trial_resources() -> tuple[int, float]:
    """(CPUs, GPUs) granted to the current Tune trial; (1, 0) outside a trial."""
    trial = tune.get_context().get_trial_resources()  # None (and a Ray warning) outside a trial
    if trial is None:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)), 0.0
    res = trial.required_resources
    return max(1, int(res.get("CPU", 1))), float(res.get("GPU", 0.0))


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a trial config into (model/growth config, plumbing) by :data:`PLUMBING_KEYS`."""
    conf = {k: v for k, v in config.items() if k not in PLUMBING_KEYS}
    plumbing = {k: config[k] for k in PLUMBING_KEYS if k in config}
    return conf, plumbing


def train_senn(config: dict[str, Any], data: Dataset | None = None) -> None:
    """Ray Tune function trainable: grow one network with the trial's config.

    ``config`` is the flat trial config (keys of :data:`senn_automl.training.config.DEFAULTS`) plus the
    plumbing keys ``mlflow_uri, experiment_id, parent_run_id, study_name, registered_model_name,
    register, dataset, data_root``. ``data`` is a :class:`~senn_automl.data.Dataset` (its train and
    validation splits are used; the driver sends it without the test split), passed with
    ``tune.with_parameters`` (object store); without it the dataset named by ``config["dataset"]`` is
    loaded in the trial. Logged models carry the dataset's input scaling and take raw features.

    With a Tune checkpoint (retry after a failure, ``Tuner.restore``) the trainer is rebuilt from
    it with :func:`~senn_automl.training.trainer.load_checkpoint` and continues; otherwise it is built with
    :func:`senn_automl.training.config.build`. Callbacks: the MLflow callback first (so an epoch's metrics
    and models are handed over before that epoch's report, inside which Tune may stop the trial),
    then :class:`TuneReportCallback`. The MLflow callback defers its metrics to the reports and its
    models (growth checkpoints, the final model with the growth plot) to the reports' checkpoints,
    and the search's driver logs and registers them
    (:class:`~senn_automl.integrations.tune.relay.MLflowRelay`). The MLflow run ends FINISHED when Tune stops the trial
    (``SystemExit``) or training ends, FAILED on any other exception.
    """
    import torch

    from senn_automl.training.config import build, reconfigure, resolve
    from senn_automl.training.trainer import Trainer

    conf, plumbing = split_config(dict(config))
    if data is None:
        from senn_automl.data import load_any

        data = load_any(plumbing.get("dataset", "digits"), seed=int(conf.get("seed", 0)), root=plumbing.get("data_root"),
                        target=plumbing.get("target"))
    X_tr, y_tr, X_val, y_val = data.X_train, data.y_train, data.X_val, data.y_val

    cpus, gpus = _trial_resources()
    torch.set_num_threads(cpus)
    if "device" not in conf or conf["device"] == "auto":
        conf["device"] = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
    conf["progress"] = False
    conf["task"] = data.task
    conf = resolve(conf)

    ctx = tune.get_context()
    trial_name, trial_id = ctx.get_trial_name(), ctx.get_trial_id()
    callbacks: list[Callback] = []
    mlf = None
    reporter = TuneReportCallback(val_data=(X_val, y_val), run_id=lambda: None if mlf is None else mlf.run_id,
                                  checkpoint_every=int(plumbing.get("checkpoint_every") or 0))
    if plumbing.get("mlflow_uri"):
        from senn_automl.integrations.tracking import MLflowCallback, quiet_mlflow

        quiet_mlflow()
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
            register=plumbing.get("register", "all"),
            tags=tags,
            feature_offset=data.feature_offset,
            feature_scale=data.feature_scale,
            input_example=data.raw("train", 2),
            target_offset=data.target_offset,
            target_scale=data.target_scale,
            # every epoch, with that epoch's report: a trial Tune stops (ASHA, PBT pause, time budget) ends in a
            # daemon thread that the actor's exit can cut short, so nothing may wait for its close()
            metrics_every=1,
            # the driver logs and registers the models, while this trial trains (relay.MLflowRelay)
            defer_models=reporter.hand_over,
            defer_metrics=reporter.hand_metrics,
        )
        callbacks.append(mlf)
    callbacks.append(reporter)  # after the MLflow callback: its on_fit_end hands over the final model first

    try:
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            trainer = _restore(ckpt, callbacks=callbacks, device=conf["device"], progress=False)
            reconfigure(trainer, conf)  # the trial's growth settings and lr (a population-based explore changes them)
        else:
            model, policy, train = build(conf, data.n_features, data.n_outputs, data.image_shape)
            trainer = Trainer(model, policy, train, callbacks)
        trainer.fit(X_tr, y_tr, X_val, y_val)
    except SystemExit:  # Tune stopped the trial inside tune.report (ASHA, max_t): a normal end
        if mlf is not None:
            mlf.close("FINISHED")
            _log_final_metrics(mlf, reporter)
        raise
    except BaseException:
        reporter.discard()
        if mlf is not None:
            mlf.close("FAILED")
        raise
    else:
        if mlf is not None:
            mlf.close("FINISHED")
            _log_final_metrics(mlf, reporter)


def _restore(ckpt, **kwargs):
    """The trainer of the trial's latest Tune checkpoint or, when that one is damaged, of the newest
    intact earlier one (a local or shared-filesystem trial folder keeps ``num_to_keep`` of them as
    ``checkpoint_NNNNNN`` siblings); each skipped checkpoint is warned about in the trial's log.
    Epochs after the checkpoint used are trained again."""
    from senn_automl.training.trainer import load_checkpoint, load_newest_checkpoint

    latest = Path(ckpt.path)
    if ckpt.filesystem.type_name != "local":  # remote storage: Tune's own copy of the latest checkpoint only
        with ckpt.as_directory() as d:
            return load_checkpoint(d, **kwargs)
    earlier = sorted((p for p in latest.parent.glob("checkpoint_*") if p.is_dir() and p.name < latest.name), reverse=True)
    trainer, used, skipped = load_newest_checkpoint([latest, *earlier], **kwargs)
    for why in skipped:
        warnings.warn(f"skipped a damaged checkpoint: {why}; continuing from {used} (epoch {trainer.epoch})",
                      RuntimeWarning, stacklevel=2)
    return trainer


def _log_final_metrics(mlf, reporter: TuneReportCallback) -> None:
    """Log the final model's validation metrics (after the best-model restore) to the trial's run
    as ``final_val_acc`` (regression: ``final_val_r2``) and ``final_val_loss``; the per-epoch
    ``val_acc`` is the last epoch's."""
    m = reporter.final_metrics
    if not m or not getattr(mlf, "run_id", None):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=mlf.tracking_uri)
        for key in ("val_acc", "val_r2"):
            if key in m:
                client.log_metric(mlf.run_id, f"final_{key}", float(m[key]), step=int(m["epoch"]))
        client.log_metric(mlf.run_id, "final_val_loss", float(m["val_loss"]), step=int(m["epoch"]))
    except MlflowException as exc:  # MLflow wraps store and HTTP errors in it
        # the trial trained to its end and its run is closed: a tracking failure now must not turn it
        # into an error (Tune would retry it); report it in the trial's log instead
        warnings.warn(f"final validation metrics not logged to MLflow run {mlf.run_id}: {exc}", RuntimeWarning, stacklevel=2)
