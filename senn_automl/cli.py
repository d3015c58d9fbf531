"""Command line: ``senn-automl fit | tune | compare`` (Typer)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Grow neural networks while they train, and tune how they grow.")


@app.callback()
def _root() -> None:
    """senn-automl: grow neural networks while they train, and tune how they grow."""


def parse_overrides(items: List[str] | None) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings; values are read as YAML scalars (``0.03``, ``true``, ``adam``), and
    ``None`` (what the error messages say, Python's spelling) as YAML's ``null``."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE (e.g. --set tau=0.05)", param_hint="--set")
        key, value = item.split("=", 1)
        parsed = None if value.strip() == "None" else yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads 1e-4 as a string; 1.2 (and people) read a number
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


_DATASET_HELP = (
    "Dataset: bundled classification digits, breast_cancer, wine, iris, mnist (5,000 images); bundled regression "
    "diabetes, linnerud (3 targets), friedman1 (make_friedman1, 2,000 rows, noise 1.0); from --data-root: "
    "mnist_idx, fashion_mnist (IDX files), cifar10 (python batches); or a CSV file (path ending .csv, with --target)."
)
_TARGET_HELP = "CSV dataset: the target column (repeat for several regression targets)."


@app.command()
def fit(
    dataset: str = typer.Option("digits", help=_DATASET_HELP),
    data_root: Optional[Path] = typer.Option(None, help="Folder with the standard files of a folder dataset."),
    target: Optional[List[str]] = typer.Option(None, help=_TARGET_HELP),
    model: Optional[str] = typer.Option(None, help="Network: mlp, cnn (images) or edge; default: the one the policy grows."),
    policy: Optional[str] = typer.Option(None, help="Growth policy: natural, north, secnn, edges or fixed (default natural; secnn with --model cnn)."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs (default 100)."),
    seed: int = typer.Option(0, help="Seed of the split, weights, shuffling and candidate search."),
    out: Path = typer.Option(Path("runs/fit"), help="Output folder (checkpoint, history, plot)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Growth/training setting KEY=VALUE, repeatable (e.g. --set tau=0.05)."),
    quiet: bool = typer.Option(False, help="No progress bar."),
    tracking_uri: Optional[str] = typer.Option(
        None, help="Log the run to MLflow here (params, per-epoch metrics, growth events and plot, models). "
                   "Under `mlflow run` the project's run is used without this option."),
    experiment: str = typer.Option("senn-automl", help="MLflow experiment of the run (with --tracking-uri)."),
    registered_model_name: Optional[str] = typer.Option(None, help="Register logged models as versions of this model (with --tracking-uri)."),
    register: str = typer.Option("final", help="With --registered-model-name: register all growth checkpoints, the final model, or none."),
) -> None:
    """Grow a network on a dataset: prints growth events as they happen, then the final
    architecture, parameter count and test accuracy (regression: test R² and RMSE in the target's
    units), and writes a plot of the run."""
    import os

    import torch

    from senn_automl.data import load_any
    from senn_automl.integrations.plotting import plot_growth
    from senn_automl.training import config as cfgmod
    from senn_automl.training.trainer import PrintGrowth, Trainer, resolve_device

    if registered_model_name and not (tracking_uri or os.environ.get("MLFLOW_RUN_ID")):
        raise typer.BadParameter("--registered-model-name needs --tracking-uri (the MLflow store to log and register in), "
                                 "e.g. --tracking-uri sqlite:///mlflow.db", param_hint="--registered-model-name")
    overrides = {**_model_overrides(model, policy), **parse_overrides(set_)}
    overrides["seed"] = seed
    overrides.setdefault("progress", not quiet)
    if epochs is not None:
        overrides["max_epochs"] = epochs
    try:
        ds = load_any(dataset, root=data_root, target=target, seed=seed, task=overrides.get("task", "auto"))
        conf = cfgmod.resolve({**overrides, "task": ds.task})
        net, grower, train = cfgmod.build(conf, ds.n_features, ds.n_outputs, ds.image_shape)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"{ds.description}")
    typer.echo(
        f"start: {type(net).__name__} {net.hidden}, {net.n_params()} parameters, policy {conf['policy']} on {resolve_device(train.device)}"
    )
    callbacks: list[Any] = [PrintGrowth()]
    mlf = None
    if tracking_uri or os.environ.get("MLFLOW_RUN_ID"):
        mlf = _fit_tracking(tracking_uri, experiment, registered_model_name, register, ds, conf, seed)
        callbacks.append(mlf)
    trainer = Trainer(net, grower, train, callbacks)
    t0 = time.perf_counter()
    if mlf is None:
        trainer.fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
    else:
        with mlf:  # the run ends FAILED (or KILLED on Ctrl-C) if training raises
            trainer.fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
    seconds = time.perf_counter() - t0
    Xt = torch.as_tensor(ds.X_test).to(trainer.device)
    yt = torch.as_tensor(ds.y_test).to(trainer.device)
    test_loss, test_metric = trainer.evaluate(Xt, yt)
    scores = {"test_accuracy": test_metric}
    if ds.is_regression:
        scores = _regression_scores(trainer, ds)
    out.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(out / "checkpoint")
    history = [dict(r) for r in trainer.history]
    log = [e.to_dict() for e in trainer.growth_log]
    plot = plot_growth(history, log, out / "growth.png", title=f"{ds.name}: growth during training (seed {seed})")
    summary = {
        "dataset": ds.name,
        "hidden": trainer.model.hidden,
        "n_params": trainer.model.n_params(),
        "n_growth_events": len(log),
        "events_by_kind": {k: sum(e["kind"] == k for e in log) for k in sorted({e["kind"] for e in log})},
        "epochs": trainer.epoch,
        "stopped_early": trainer.stopped_early,
        **scores,
        "test_loss": test_loss,
        "seconds": seconds,
        "seconds_in_growth_checks": trainer.timings["growth"],
        "config": conf,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    if mlf is not None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(mlf.tracking_uri)
        for key in (*scores, "test_loss", "seconds"):
            client.log_metric(mlf.run_id, key, float(summary[key]))
        client.log_artifact(mlf.run_id, str(out / "summary.json"))
    typer.echo(
        f"\nfinal architecture: {_describe_arch(trainer.model, ds)}"
        f"\nparameters: {summary['n_params']}   growth events: {len(log)}"
        f" ({', '.join(f'{n} {k}' for k, n in summary['events_by_kind'].items()) or 'none'})"
        f"\nepochs: {trainer.epoch}{' (early stop)' if trainer.stopped_early else ''}   time: {seconds:.1f} s"
        f" ({trainer.timings['growth']:.1f} s in growth checks)"
        f"\n{_describe_scores(scores)}   (best-validation model, {len(ds.y_test)} test samples)"
        f"\nwrote {out / 'checkpoint'}, {out / 'summary.json'}, {plot}"
    )
    if mlf is not None:
        final = f"; final model: models:/{registered_model_name}/{mlf.final_version}" if mlf.final_version else ""
        typer.echo(f"MLflow run {mlf.run_id} in {mlf.tracking_uri}{final}")


def _regression_scores(trainer, ds) -> dict[str, float]:
    """Test R² (averaged over targets) and RMSE (each target's, averaged) in the targets' units."""
    import torch
    from sklearn.metrics import r2_score, root_mean_squared_error

    with torch.no_grad():
        out = trainer.model.eval()(torch.as_tensor(ds.X_test).to(trainer.device)).double().cpu().numpy()
    pred = out * ds.target_scale + ds.target_offset
    y = ds.raw_targets("test")
    return {"test_r2": float(r2_score(y, pred)), "test_rmse": float(root_mean_squared_error(y, pred))}


def _describe_scores(scores: dict[str, float]) -> str:
    if "test_r2" in scores:
        return f"test R²: {scores['test_r2']:.4f}   test RMSE: {scores['test_rmse']:.4g} (target units)"
    return f"test accuracy: {scores['test_accuracy']:.4f}"


def _fit_tracking(tracking_uri, experiment, registered_model_name, register, ds, conf, seed):
    """The MLflow callback of ``fit``: a new run in ``experiment``, or the project's run under ``mlflow run``."""
    import os

    from senn_automl.integrations.tracking import (
        MLflowCallback,
        check_names,
        get_or_create_experiment,
        quiet_mlflow,
        resolve_tracking_uri,
    )

    quiet_mlflow()
    try:
        check_names(registered_model_name=registered_model_name, experiment_name=experiment)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--registered-model-name / --experiment") from None
    uri = resolve_tracking_uri(tracking_uri)
    run_id = os.environ.get("MLFLOW_RUN_ID") if not tracking_uri else None
    try:  # the register choice first (no experiment created for a bad one), then the store
        cb = MLflowCallback(
            uri, None, run_id=run_id, run_name=None if run_id else f"fit-{ds.name}-seed{seed}", params=conf,
            registered_model_name=registered_model_name, register=register,
            tags={"dataset": ds.name, "command": "senn-automl fit"}, feature_offset=ds.feature_offset,
            feature_scale=ds.feature_scale, input_example=ds.raw("train", 2),
            target_offset=ds.target_offset, target_scale=ds.target_scale,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--register") from None
    try:
        cb.experiment_id = None if run_id else get_or_create_experiment(uri, experiment)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tracking-uri") from None
    return cb


def _model_overrides(model: str | None, policy: str | None) -> dict[str, Any]:
    """``--model``/``--policy`` as config keys; ``--model cnn`` alone picks the secnn policy."""
    out: dict[str, Any] = {}
    if model is not None:
        out["model"] = model
    if policy is not None:
        out["policy"] = policy
    elif model == "cnn":
        out["policy"] = "secnn"
    elif model == "edge":
        out["policy"] = "edges"
    return out


def _describe_arch(model, ds) -> str:
    """One line: ``784 -> 12 -> 10`` for an MLP, the block channels for a CNN, vertices for edges."""
    kind = type(model).__name__
    if kind == "GrowingMLP":
        return f"{ds.n_features} -> {' -> '.join(map(str, model.hidden)) or '(no hidden layer)'} -> {ds.n_outputs}"
    if kind == "GrowingCNN":
        blocks = "  ".join(f"block {i}: {'-'.join(map(str, b))}" for i, b in enumerate(model.hidden))
        return f"{'x'.join(map(str, ds.image_shape))} image -> {blocks} -> {ds.n_outputs}  (conv layer channels per block)"
    return f"{kind} {model.hidden}"


def _resume_command() -> str:
    """This process's ``senn-automl tune`` command line with ``--resume`` (added once)."""
    import shlex
    import sys

    args = sys.argv[1:]
    return shlex.join(["senn-automl", *args, *([] if "--resume" in args else ["--resume"])])


def _print_table(df, write=typer.echo, floatfmt: str = "{:.4f}") -> None:
    """Plain-text table of a DataFrame (no index)."""
    if df is None or len(df) == 0:
        write("(no rows)")
        return
    cells = [[str(c) for c in df.columns]]
    for _, row in df.iterrows():
        line = []
        for name, v in zip(df.columns, row):
            if isinstance(v, float):
                fmt = "{:.1f}" if "seconds" in str(name) else floatfmt
                if v == v and v.is_integer() and "acc" not in str(name):
                    fmt = "{:.0f}"
                line.append("" if v != v else (f"{v:.0f}" if abs(v) >= 100 else fmt.format(v)))
            else:
                line.append("" if v is None else str(v))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    for k, r in enumerate(cells):
        write("  ".join(c.rjust(w) if k and c.replace(".", "").isdigit() else c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            write("  ".join("-" * w for w in widths))


@app.command()
def tune(
    dataset: str = typer.Option("digits", help=_DATASET_HELP),
    data_root: Optional[Path] = typer.Option(None, help="Folder with the standard files of a folder dataset."),
    target: Optional[List[str]] = typer.Option(None, help=_TARGET_HELP),
    model: Optional[str] = typer.Option(None, help="Fix the network in every trial: mlp, cnn or edge (cnn defaults the search space to 'cnn')."),
    search_space: Optional[str] = typer.Option(None, help="Bundled search space (quick, mlp, policies, cnn) or a YAML file (default quick; cnn with --model cnn)."),
    num_samples: int = typer.Option(20, help="Number of trials."),
    max_concurrent: int = typer.Option(2, help="Trials running at once (each gets cluster CPUs // this)."),
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite:///<out>/optuna.db)."),
    study_name: Optional[str] = typer.Option(None, help="Optuna study / Tune experiment / MLflow parent run name (default senn-<dataset>)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster HOST:PORT or 'auto' (default: start a local Ray instance)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted search of the same study."),
    multi_objective: bool = typer.Option(False, "--multi-objective", help="Optimise (max val_acc, min n_params); report the Pareto front."),
    gpus_per_trial: float = typer.Option(0.0, help="GPUs per trial (fractions allowed); errors if the cluster has none."),
    out: Path = typer.Option(Path("runs/tune"), help="Output folder (Optuna db, Ray results, leaderboard)."),
    seed: int = typer.Option(0, help="Seed of the data split and the TPE sampler."),
    registered_model_name: Optional[str] = typer.Option(None, help="Registered model name (default senn-<dataset>)."),
    experiment: str = typer.Option("senn-automl", help="MLflow experiment name."),
    register: str = typer.Option("all", help="Which logged models become registered versions: all (every growth checkpoint), final, or none."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Fix a setting in every trial, KEY=VALUE, repeatable (e.g. --set max_epochs=6)."),
    verbose: bool = typer.Option(False, "--verbose", help="Plain lines, one per trial event and per epoch, instead of the live view."),
    scheduler: str = typer.Option("asha", help="Trial scheduler: asha (TPE proposes, early stopping on val_acc), fifo (every trial to its end) or pbt (population-based training of growing networks)."),
    grace_period: Optional[int] = typer.Option(None, help="ASHA: epochs before a trial can be stopped (default max_epochs // 4, at least 2)."),
    max_failures: int = typer.Option(2, help="Retries of a failed trial, from its latest checkpoint."),
    cpus_per_trial: Optional[int] = typer.Option(None, help="CPUs per trial (default cluster CPUs // --max-concurrent)."),
    storage_path: Optional[str] = typer.Option(None, help="Ray results folder or URI (s3://..., a shared folder; default <out>/ray_results)."),
    time_budget_s: Optional[float] = typer.Option(None, help="Wall-clock seconds for the trials; running trials are then stopped (pruned)."),
) -> None:
    """Search growth hyperparameters with Ray Tune + Optuna (TPE, ASHA early stopping); every
    growth checkpoint becomes a registered MLflow model version, and the best final model gets
    the alias `champion`."""
    import sys

    import optuna

    from senn_automl.integrations.tracking import quiet_mlflow
    from senn_automl.integrations.tune import run_search
    from senn_automl.integrations.tune.progress import LiveView, ProgressView

    quiet_mlflow()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" / "Trial finished" lines
    overrides = {**({"model": model} if model else {}), **parse_overrides(set_)}
    search_space = search_space or ("cnn" if model == "cnn" else "quick")
    typer.echo(f"senn-automl tune: {num_samples} trials of search space {search_space!r} on {dataset}, {max_concurrent} at a time")
    # a terminal gets the live view; a pipe or log file (or --verbose) plain lines
    live = sys.stdout.isatty() and not verbose
    view = LiveView(num_samples) if live else ProgressView(num_samples, typer.echo, per_epoch=verbose)
    t0 = time.perf_counter()
    try:
        res = run_search(
            dataset=dataset, data_root=data_root, search_space=search_space, num_samples=num_samples, max_concurrent=max_concurrent,
            tracking_uri=tracking_uri, storage=storage, study_name=study_name, address=address, resume=resume,
            multi_objective=multi_objective, gpus_per_trial=gpus_per_trial, seed=seed, out=out,
            registered_model_name=registered_model_name, register=register, experiment_name=experiment, progress=False,
            trial_overrides=overrides or None, callbacks=[view], scheduler=scheduler, grace_period=grace_period,
            max_failures=max_failures, cpus_per_trial=cpus_per_trial, storage_path=storage_path, time_budget_s=time_budget_s,
            target=None if not target else (target[0] if len(target) == 1 else target),
        )
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # a second Ctrl-C: Tune's own handler took the first
        typer.echo(f"\ninterrupted; continue the search with:\n  {_resume_command()}", err=True)
        raise typer.Exit(130) from None
    finally:
        if isinstance(view, LiveView):
            view.close()
    seconds = time.perf_counter() - t0
    typer.echo(f"\nleaderboard ({len(res.leaderboard)} trials{', resumed' if res.resumed else ''}; Optuna: {res.optuna_states}):")
    _print_table(res.leaderboard.drop(columns=["mlflow_run_id"]))
    if res.pareto is not None:
        typer.echo(f"\nPareto front (max {res.metric}, min n_params):")
        _print_table(res.pareto)
    if res.interrupted:
        n = int((res.leaderboard["status"] == "interrupted").sum())
        typer.echo(f"\ninterrupted after {seconds:.1f} s: {n} trial(s) stopped before their end; the champion alias was "
                   f"not moved. Continue the search with:\n  {_resume_command()}")
        raise typer.Exit(130)
    if res.champion_version:
        typer.echo(f"\nchampion: models:/{res.registered_model_name}@champion = version {res.champion_version} (trial {res.champion_trial})")
        if res.champion_test_acc is not None:
            typer.echo(f"champion test accuracy: {res.champion_test_acc:.4f} (the registered model on the test split, which no trial saw)")
        elif res.champion_test_r2 is not None:
            typer.echo(f"champion test R²: {res.champion_test_r2:.4f}   RMSE: {res.champion_test_rmse:.4g} (target units; the "
                       "registered model on the test split, which no trial saw)")
        elif res.champion_test_error:
            typer.echo(f"champion test score: not measured, the registered model did not load back ({res.champion_test_error})")
    else:
        typer.echo("\nno trial trained to its end: no champion set")
    n_errors = int((res.leaderboard["status"] == "error").sum())
    if n_errors:
        typer.echo(f"{n_errors} trial(s) failed (after Tune's retries); their errors: {res.experiment_path}/*/error.txt")
    tracking = res.tracking_uri
    typer.echo(
        f"\ntime: {seconds:.1f} s"
        f"\nleaderboard: {Path(res.out) / 'leaderboard.csv'} (also an artifact of MLflow run {res.parent_run_id})"
        f"\nMLflow:  {'open ' + tracking if tracking.startswith('http') else 'mlflow ui --backend-store-uri ' + tracking}"
        f"\nOptuna:  optuna-dashboard {res.storage}"
        f"\nRay:     {res.experiment_path}"
        f"\ncompare: senn-automl compare --tracking-uri {tracking} --experiment {experiment}"
    )
    if n_errors and n_errors == len(res.leaderboard):
        raise typer.Exit(1)  # every trial failed: a failed search


@app.command()
def compare(
    tracking_uri: Optional[str] = typer.Option(None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)."),
    experiment: str = typer.Option("senn-automl", help="MLflow experiment of the tuning runs."),
    out: Path = typer.Option(Path("runs/compare"), help="Output folder (policies.csv, accuracy_vs_params.png)."),
    parent_run_id: Optional[str] = typer.Option(None, help="Only the trials of this study (parent run)."),
    metric: Optional[str] = typer.Option(None, help="Score to compare: val_acc (classification studies) or val_r2 "
                                         "(regression studies); default: the one the runs logged."),
) -> None:
    """Compare growth policies over the trials in MLflow: best and median final validation score
    (accuracy, or R² for regression studies), median parameters and run time per policy, and a plot
    of the score against parameters."""
    from senn_automl.integrations.compare import compare as run_compare

    try:
        res = run_compare(tracking_uri, experiment=experiment, out=out, parent_run_id=parent_run_id, metric=metric)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    n = len(res.runs)
    typer.echo(f"{n} trial runs in experiment {experiment!r} ({int(res.runs['complete'].sum()) if n else 0} trained to the end)\n")
    _print_table(res.summary)
    typer.echo(f"\nwrote {res.csv}, {res.png}" + (f"\nlogged to MLflow run {res.logged_to}" if res.logged_to else ""))


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    main()
