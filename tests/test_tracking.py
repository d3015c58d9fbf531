"""MLflow tracking/registry integration, against a real `mlflow server` (mlflow/start_server.sh)
and a real sqlite store. No mocks.

The server is started once per session (bash mlflow/start_server.sh on a free loopback port with
a tmp root) and stopped by pid at the end. It boots in the background (5-15 s) while the tests
that do not need it run first.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

import torch  # noqa: E402
from conftest import free_port, healthy  # noqa: E402

from senn_automl.integrations.tracking import (  # noqa: E402
    MLflowCallback,
    check_tracking_uri,
    end_parent_run,
    load_model,
    resolve_tracking_uri,
    set_champion,
    start_parent_run,
)
from senn_automl.training import config as cfgmod  # noqa: E402
from senn_automl.training.trainer import Callback, Trainer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


# ---------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def server_process(tmp_path_factory):
    """`bash mlflow/start_server.sh` as a subprocess (started, not yet waited for)."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    log = open(root / "server.log", "w")
    env = {
        **os.environ,
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_ROOT": str(root),
        "MLFLOW_PYTHON": sys.executable,
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        ["bash", str(REPO / "mlflow" / "start_server.sh")],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    yield proc, f"http://127.0.0.1:{port}", root / "server.log"
    proc.terminate()  # the script exec'd the server: this is its pid
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    try:  # the uvicorn worker is in the session/process group we created (pgid == proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    log.close()


@pytest.fixture(scope="session")
def server_uri(server_process):
    proc, uri, log = server_process
    deadline = time.monotonic() + 60
    while not healthy(uri, timeout=1):
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"mlflow server not healthy after 60 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)
    return uri


@pytest.fixture(scope="session")
def digits():
    X, y = sklearn_datasets.load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    tr, va, te = idx[:1200], idx[1200:1500], idx[1500:]
    return X[tr], y[tr], X[va], y[va], X[te], y[te]


def _growing_config(**kw):
    base = dict(max_epochs=12, expansion_interval=3, n_candidates=16, candidate_steps=10, patience=None, device="cpu")
    return cfgmod.resolve(**{**base, **kw})


def _checks_with_growth(trainer) -> list[int]:
    """Epochs whose growth check accepted at least one edit (one on_growth call each)."""
    return sorted({e.epoch for e in trainer.growth_log})


@pytest.fixture(scope="module")
def grown_run(server_uri, digits):
    """A growing GrowingMLP trained on digits with MLflowCallback, against the real server."""
    Xtr, ytr, Xva, yva, _, _ = digits
    name = f"senn-digits-{uuid.uuid4().hex[:8]}"
    exp_id, parent = start_parent_run(server_uri, "senn-tests", "study-test", {"purpose": "test"})
    conf = _growing_config()
    model, policy, train = cfgmod.build(conf, 64, 10)
    # the network trains on grey levels / 16; logged models take the raw levels 0..16
    cb = MLflowCallback(server_uri, exp_id, parent_run_id=parent, run_name="trial-0",
                        params=conf, registered_model_name=name, tags={"study": "study-test"},
                        feature_scale=16.0, input_example=Xtr[:3] * 16)
    trainer = Trainer(model, policy, train, [cb])
    t0 = time.perf_counter()
    try:
        trainer.fit(Xtr, ytr, Xva, yva)
    except SystemExit:
        cb.close("FINISHED")
        raise
    except BaseException:
        cb.close("FAILED")
        raise
    seconds = time.perf_counter() - t0
    end_parent_run(parent, "FINISHED")
    client = mlflow.MlflowClient(server_uri)
    return dict(cb=cb, trainer=trainer, name=name, exp_id=exp_id, parent=parent, client=client, uri=server_uri,
                seconds=seconds)


# ---------------------------------------------------------------------------------- no server needed
def test_sqlite_store_works_without_server(tmp_path, monkeypatch, digits, server_process):
    # (requests server_process only so that the server boots while this test runs)
    monkeypatch.chdir(tmp_path)  # MLflow's own default for sqlite artifacts is ./mlruns
    Xtr, ytr, Xva, yva, Xte, _ = digits
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    exp_id, parent = start_parent_run(uri, "senn-sqlite", "study-sqlite", {})
    assert (tmp_path / "store").is_dir()
    name = "senn-sqlite"
    model, policy, train = cfgmod.build(_growing_config(max_epochs=2, expansion_interval=100, check_at_start=False), 64, 10)  # no growth
    # as under `mlflow run`: MLFLOW_RUN_ID must not make start_run() resume that run; it becomes the parent
    monkeypatch.setenv("MLFLOW_RUN_ID", parent)
    cb = MLflowCallback(uri, exp_id, run_name="sqlite-trial", registered_model_name=name)
    trainer = Trainer(model, policy, train, [cb])
    with cb:
        trainer.fit(Xtr, ytr, Xva, yva)
    assert "MLFLOW_RUN_ID" not in os.environ
    end_parent_run(parent, "FINISHED")
    client = mlflow.MlflowClient(uri)
    run = client.get_run(cb.run_id)
    assert cb.run_id != parent
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert client.get_run(parent).info.status == "FINISHED"
    assert "max_epochs" in run.data.params  # default params: policy + train config
    assert len(client.get_metric_history(cb.run_id, "val_acc")) == 2
    assert len(cb.versions) == 1 and cb.versions[0][1]["final"] == "true"
    assert cb.final_version == cb.versions[-1][0]
    # start_parent_run keeps a sqlite store's artifacts next to the database, not in ./mlruns
    assert (tmp_path / "store" / "mlartifacts" / "senn-sqlite").is_dir()
    assert not (tmp_path / "mlruns").exists()
    loaded = mlflow.pyfunc.load_model(f"models:/{name}/{cb.final_version}")
    P = loaded.predict(Xte[:7])
    assert P.shape == (7, 10)
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-6)


def test_final_version_is_tagged_with_the_epoch_whose_model_it_is(tmp_path, digits):
    """The final model is the best-validation epoch's (restore_best): its version's epoch, val_acc,
    n_params and growth_step tags are that epoch's, and its logged model links to that step's
    metrics, not the last epoch's."""
    Xtr, ytr, Xva, yva, _, _ = digits
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id, parent = start_parent_run(uri, "senn-best", "study-best", {})
    # 150 training rows and a high learning rate: the net over-fits, its best epoch comes before the last
    model, policy, train = cfgmod.build(_growing_config(max_epochs=30, lr=0.1), 64, 10)
    cb = MLflowCallback(uri, exp_id, parent_run_id=parent, run_name="best", registered_model_name="senn-best")
    trainer = Trainer(model, policy, train, [cb])
    with cb:
        trainer.fit(Xtr[:150], ytr[:150], Xva, yva)
    end_parent_run(parent, "FINISHED")
    last = trainer.history[-1]["epoch"]
    assert trainer.restored_epoch is not None and trainer.restored_epoch < last  # the case under test
    best = trainer.history[trainer.restored_epoch]
    final = mlflow.MlflowClient(uri).get_model_version("senn-best", cb.final_version)
    assert final.tags["epoch"] == str(trainer.restored_epoch) and final.tags["last_epoch"] == str(last)
    assert float(final.tags["val_acc"]) == pytest.approx(best["val_acc"])
    assert int(final.tags["n_params"]) == best["n_params"] == trainer.model.n_params()
    assert final.tags["growth_step"] == (str(best["n_growth_events"] - 1) if best["n_growth_events"] else "")
    (logged,) = [m for m in mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list") if m.name == "final"]
    assert {m.key: m.step for m in logged.metrics if m.key == "val_acc"} == {"val_acc": trainer.restored_epoch}


def test_resolve_and_check_tracking_uri(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert resolve_tracking_uri(None).startswith("sqlite:////")  # absolute path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:1"
    assert resolve_tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"

    port = free_port()  # bound then released: nothing listens there
    with pytest.raises(ValueError, match=rf"tracking server http://127.0.0.1:{port} is unreachable: .*start_server.sh"):
        check_tracking_uri(f"http://127.0.0.1:{port}")
    with pytest.raises(ValueError, match="unreachable"):
        start_parent_run(f"http://127.0.0.1:{port}", "x", "y", {})

    check_tracking_uri(f"sqlite:///{tmp_path}/a/b/mlflow.db")
    assert (tmp_path / "a" / "b").is_dir()


def test_check_tracking_uri_sqlite_files_databricks_and_model_names(tmp_path):
    """A file that is not a database is refused; a '#' in the folder opens that database (no stray
    file where the unquoted URI would end); 'databricks' is not a folder; MLflow's '.'/'..x' names."""
    import sqlite3

    from senn_automl.integrations.tracking import check_names

    (tmp_path / "text.db").write_text("not a database")
    with pytest.raises(ValueError, match=r"text\.db cannot be opened \(file is not a database\)"):
        check_tracking_uri(f"sqlite:///{tmp_path / 'text.db'}")
    (tmp_path / "a#b").mkdir()
    con = sqlite3.connect(tmp_path / "a#b" / "mlflow.db")
    con.execute("create table t (x)")
    con.close()
    check_tracking_uri(f"sqlite:///{tmp_path / 'a#b' / 'mlflow.db'}", must_exist=True)
    assert not (tmp_path / "a").exists()
    check_tracking_uri("databricks")
    for name in (".", "..", "..x"):
        with pytest.raises(ValueError, match=r"registered model name .* is invalid"):
            check_names(registered_model_name=name)
    check_names(registered_model_name="senn.v1..2")


# ---------------------------------------------------------------------------------- real server
def test_run_metrics_growth_models_and_registry(grown_run):
    cb, trainer, client, name = grown_run["cb"], grown_run["trainer"], grown_run["client"], grown_run["name"]
    run = client.get_run(cb.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == grown_run["parent"]
    assert run.data.tags["mlflow.runName"] == "trial-0"
    assert client.get_run(grown_run["parent"]).info.status == "FINISHED"
    assert run.data.params["expansion_interval"] == "3"

    # per-epoch metrics
    start = [e for e in trainer.growth_log if e.epoch == -1]
    assert start  # the defaults check the untrained network: its size is logged at step -1
    for key in ("val_acc", "val_loss", "train_loss", "n_params", "n_growth_events"):
        hist = client.get_metric_history(cb.run_id, key)
        assert sorted(m.step for m in hist) == [-1] * (key == "n_params") + list(range(12)), key
    n_params = {m.step: m.value for m in client.get_metric_history(cb.run_id, "n_params")}
    assert n_params[-1] == start[-1].params_after and n_params[11] > n_params[0]  # it grew

    # growth log artifact
    checks = _checks_with_growth(trainer)
    assert checks, "the config must make the network grow"
    events = mlflow.artifacts.load_dict(f"runs:/{cb.run_id}/growth/events.json")
    assert events == [e.to_dict() for e in trainer.growth_log]

    # one LoggedModel per growth check + the final one
    logged = mlflow.search_logged_models(experiment_ids=[grown_run["exp_id"]], output_format="list",
                                         filter_string=f"source_run_id = '{cb.run_id}'")
    names = sorted(m.name for m in logged)
    assert names == sorted(["final"] + [f"growth-{max(e.step for e in trainer.growth_log if e.epoch == ep):03d}"
                                         for ep in checks])

    # one registered version per growth check + the final one, with tags
    versions = client.search_model_versions(f"name='{name}'")
    assert len(versions) == len(checks) + 1 == len(cb.versions)
    by_version = {v.version: v for v in versions}
    history = {r["epoch"]: r for r in trainer.history}
    for (version, tags), epoch in zip(cb.versions[:-1], checks):
        mv = by_version[version]
        for key in ("trial", "policy", "epoch", "growth_step", "n_params", "val_acc"):
            assert key in mv.tags, key
        assert mv.tags["trial"] == "trial-0"
        assert mv.tags["policy"] == "natural"
        assert mv.tags["epoch"] == str(epoch)
        if epoch == -1:  # the check at the start: before any validation score
            assert mv.tags["val_acc"] == ""
            assert int(mv.tags["n_params"]) == [e for e in trainer.growth_log if e.epoch == -1][-1].params_after
        else:
            assert float(mv.tags["val_acc"]) == pytest.approx(history[epoch]["val_acc"])
            assert int(mv.tags["n_params"]) == history[epoch]["n_params"]
        assert "final" not in mv.tags
        assert mv.tags == tags
    final = by_version[cb.final_version]
    assert final.tags["final"] == "true"
    assert int(final.tags["n_params"]) == trainer.model.n_params()
    assert [int(v) for v, _ in cb.versions] == sorted(int(v) for v in by_version)


def test_growth_checkpoints_logged_without_mlflow_validation_load_and_predict(grown_run, digits):
    """Growth checkpoints skip MLflow's serving-input check (log_growth_model(validate=False)); each
    registered growth version still loads as a pyfunc model and predicts raw rows as the checkpoint
    it was exported from does."""
    cb, name = grown_run["cb"], grown_run["name"]
    _, _, _, _, Xte, _ = digits
    X_raw = (Xte[:50] * 16).astype(np.float32)
    growth_versions = [v for v, tags in cb.versions if "final" not in tags]
    assert growth_versions, "the config must make the network grow"
    widths = set()
    for version in growth_versions:
        uri = f"models:/{name}/{version}"
        served = mlflow.pyfunc.load_model(uri).predict(X_raw)
        grown = load_model(uri)
        widths.add(tuple(grown.spec["hidden"]))
        np.testing.assert_allclose(served, grown.predict_proba(X_raw), atol=1e-5)
        np.testing.assert_allclose(served.sum(1), 1.0, atol=1e-5)
    assert len(widths) == len(growth_versions)  # each check that grew logged a different network


def test_champion_loads_in_fresh_process_three_ways(grown_run, digits, tmp_path):
    """The champion takes raw features and loads as a pyfunc, as a torch module (mlflow.pytorch) and as
    a growable module (senn_automl.integrations.tracking.load_model), in a process that never trained."""
    cb, trainer, client, name = grown_run["cb"], grown_run["trainer"], grown_run["client"], grown_run["name"]
    set_champion(name, cb.final_version, client=client)
    assert client.get_model_version_by_alias(name, "champion").version == cb.final_version

    Xte = digits[4][:50]
    np.save(tmp_path / "X.npy", Xte * 16)  # raw grey levels, as a user of the model has them
    script = textwrap.dedent(
        f"""
        import json, numpy as np, pandas as pd, torch, mlflow.pyfunc, mlflow.pytorch
        from senn_automl.integrations.tracking import load_model
        X = np.load({str(tmp_path / 'X.npy')!r})
        uri = "models:/{name}@champion"
        m = mlflow.pyfunc.load_model(uri)
        P = m.predict(X)
        Q = m.predict(pd.DataFrame(X))
        module = mlflow.pytorch.load_model(uri)
        with torch.no_grad():
            T = module(torch.from_numpy(X)).numpy()
        grown = load_model(uri)
        G = grown.predict_proba(X)
        np.save({str(tmp_path / 'P.npy')!r}, np.stack([P, np.asarray(Q), T, G]))
        schema = m.metadata.get_input_schema().to_dict()
        print(json.dumps([type(grown.model).__name__, list(grown.spec["hidden"]), schema,
                          m.metadata.saved_input_example_info is not None]))
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": grown_run["uri"], "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    kind, hidden, schema, has_example = json.loads(res.stdout.strip().splitlines()[-1])
    assert kind == "GrowingMLP" and hidden == list(trainer.model.hidden)
    assert schema == [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 64]}}] and has_example
    P, Q, T, G = np.load(tmp_path / "P.npy")
    trainer.model.eval()
    with torch.no_grad():  # the trained network on the features it was trained on (raw / 16)
        expected = torch.softmax(trainer.model(torch.as_tensor(Xte)), 1).numpy()
    for got in (P, Q, T, G):
        assert got.shape == (50, 10)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_logged_models_api_lists_every_checkpoint_with_metrics(grown_run):
    """MLflow's REST API (logged-models/search) lists each growth checkpoint of the run with its metrics."""
    import json as _json
    import urllib.request

    cb, trainer = grown_run["cb"], grown_run["trainer"]
    body = _json.dumps({"experiment_ids": [grown_run["exp_id"]], "max_results": 100}).encode()
    req = urllib.request.Request(f"{grown_run['uri']}/api/2.0/mlflow/logged-models/search", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        models = [m for m in _json.loads(resp.read())["models"] if m["info"]["source_run_id"] == cb.run_id]
    names = sorted(m["info"]["name"] for m in models)
    assert len(names) == len(_checks_with_growth(trainer)) + 1 and "final" in names
    for m in models:
        keys = {x["key"] for x in m["data"].get("metrics", [])}
        tags = {t["key"]: t["value"] for t in m["info"].get("tags", [])}
        # the check at the start comes before any validation score: its size only
        expected = {"n_params"} if tags.get("epoch") == "-1" else {"val_acc", "n_params"}
        assert expected <= keys, (m["info"]["name"], keys)
    # and the run carries its growth plot
    files = {f.path for f in grown_run["client"].list_artifacts(cb.run_id, "growth")}
    assert files == {"growth/events.json", "growth/growth.png"}


@pytest.mark.parametrize("register, expected", [("final", 1), ("none", 0)])
def test_register_choice_limits_versions_not_logged_models(tmp_path, digits, register, expected):
    Xtr, ytr, Xva, yva, _, _ = digits
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id, parent = start_parent_run(uri, "senn-register", "study-register", {})
    name = f"senn-register-{register}"
    model, policy, train = cfgmod.build(_growing_config(max_epochs=6), 64, 10)
    cb = MLflowCallback(uri, exp_id, parent_run_id=parent, registered_model_name=name, register=register, plot=False)
    with cb:
        Trainer(model, policy, train, [cb]).fit(Xtr, ytr, Xva, yva)
    end_parent_run(parent, "FINISHED", tracking_uri=uri)
    client = mlflow.MlflowClient(uri)
    logged = mlflow.search_logged_models(experiment_ids=[exp_id], output_format="list")
    assert len(logged) >= 2  # at least one growth checkpoint and the final model, whatever is registered
    versions = client.search_model_versions(f"name='{name}'") if expected else []
    assert len(versions) == expected == len(cb.versions)
    if expected:
        assert versions[0].tags["final"] == "true"
    with pytest.raises(ValueError, match="register='some' is invalid: use one of: 'all', 'final', 'none'"):
        MLflowCallback(uri, exp_id, register="some")


class _StopAt(Callback):
    """Stands in for Ray Tune, which stops a trial by raising SystemExit inside a callback."""

    def __init__(self, epoch, exc):
        self.epoch, self.exc = epoch, exc

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == self.epoch:
            raise self.exc


def test_systemexit_ends_run_finished_and_errors_failed(server_uri, digits):
    Xtr, ytr, Xva, yva, _, _ = digits
    conf = _growing_config(max_epochs=6, expansion_interval=100, check_at_start=False)  # no growth check: fast
    client = mlflow.MlflowClient(server_uri)
    exp_id = client.get_experiment_by_name("senn-tests")
    exp_id = exp_id.experiment_id if exp_id else client.create_experiment("senn-tests")

    model, policy, train = cfgmod.build(conf, 64, 10)
    cb = MLflowCallback(server_uri, exp_id, run_name="stopped", registered_model_name=f"senn-stop-{uuid.uuid4().hex[:6]}")
    trainer = Trainer(model, policy, train, [cb, _StopAt(2, SystemExit(0))])
    with pytest.raises(SystemExit, match="^0$"):
        try:
            trainer.fit(Xtr, ytr, Xva, yva)
        except SystemExit:
            cb.close()
            raise
    run = client.get_run(cb.run_id)
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(cb.run_id, "val_acc")) == [0, 1, 2]
    assert cb.final_version is None and cb.versions == []
    cb.close()  # idempotent
    assert mlflow.active_run() is None

    # other exceptions: FAILED (context-manager form)
    model, policy, train = cfgmod.build(conf, 64, 10)
    cb2 = MLflowCallback(server_uri, exp_id, run_name="crashed")
    trainer = Trainer(model, policy, train, [cb2, _StopAt(1, RuntimeError("boom"))])
    with pytest.raises(RuntimeError, match="boom"):
        with cb2:
            trainer.fit(Xtr, ytr, Xva, yva)
    assert client.get_run(cb2.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


def test_cli_fit_logs_a_complete_run(tmp_path):
    """`senn-automl fit --tracking-uri` logs params, per-epoch metrics, the growth plot, the test
    accuracy and the final model, registered on request; stdout has no MLflow lines or bars."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    res = subprocess.run([sys.executable, "-m", "senn_automl.cli", "fit", "--epochs", "4", "--quiet", "--out", str(tmp_path / "fit"),
                          "--tracking-uri", uri, "--registered-model-name", "senn-cli-fit"],
                         capture_output=True, text=True, cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "Downloading artifacts" not in out and "Created version" not in out and "INFO" not in out, out[-2000:]
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("senn-automl").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["max_epochs"] == "4"
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 4
    assert 0 < run.data.metrics["test_accuracy"] <= 1
    assert {f.path for f in client.list_artifacts(run.info.run_id, "growth")} >= {"growth/growth.png"}
    (mv,) = client.search_model_versions("name='senn-cli-fit'")
    assert mv.tags["final"] == "true" and f"models:/senn-cli-fit/{mv.version}" in res.stdout


@pytest.mark.slow
def test_mlproject_fit_entry_point_produces_a_complete_run(tmp_path):
    """`mlflow run mlflow -e fit` (the MLproject, local environment): the project's own run gets the
    params, per-epoch metrics, growth plot, test accuracy and final logged model."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1")
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    res = subprocess.run([str(mlflow_cli), "run", str(REPO / "mlflow"), "-e", "fit", "-P", "epochs=3", "-P", "seed=1",
                          "-P", f"out={tmp_path / 'fit'}", "--env-manager", "local"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    assert run.data.tags["mlflow.project.entryPoint"] == "fit" and run.info.status == "FINISHED"
    assert run.data.params["max_epochs"] == "3" and run.data.params["seed"] == "1"
    assert run.data.params["weight_decay"] == "0.001"  # the value trained with, not the config's "auto"
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 3
    assert 0 < run.data.metrics["test_accuracy"] <= 1
    assert {f.path for f in client.list_artifacts(run.info.run_id, "growth")} >= {"growth/growth.png"}
    mlflow.set_tracking_uri(uri)
    models = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list")
    # the final model and one per growth check that changed the network (the defaults check at the start)
    (final,) = [m for m in models if m.tags.get("final") == "true"]
    assert all(m.source_run_id == run.info.run_id for m in models) and final.name == "final"
    assert all(re.fullmatch(r"growth-\d{3}", m.name) for m in models if m is not final)
    assert (tmp_path / "fit" / "summary.json").is_file()


def test_cluster_server_allows_its_own_names_and_authenticates(tmp_path):
    """The README's cluster recipe: `MLFLOW_HOST=0.0.0.0 bash mlflow/start_server.sh --app-name basic-auth`
    answers requests addressed to this machine's name and address (not 403 "Invalid Host header"),
    refuses other Host headers, and refuses clients without credentials."""
    pytest.importorskip("flask_wtf")  # mlflow[auth]
    import socket

    port = free_port()
    env = {**os.environ, "MLFLOW_HOST": "0.0.0.0", "MLFLOW_PORT": str(port), "MLFLOW_ROOT": str(tmp_path / "root"),
           "MLFLOW_PYTHON": sys.executable, "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
           "MLFLOW_AUTH_ADMIN_PASSWORD": "test-" + uuid.uuid4().hex}
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_TRACKING")}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(["bash", str(REPO / "mlflow" / "start_server.sh"), "--app-name", "basic-auth"], cwd=tmp_path,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        local = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not healthy(local, timeout=1):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.25)
        import urllib.error
        import urllib.request

        def status(host: str, auth: bool) -> int:
            req = urllib.request.Request(f"{local}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host})
            if auth:
                import base64

                token = base64.b64encode(f"admin:{env['MLFLOW_AUTH_ADMIN_PASSWORD']}".encode()).decode()
                req.add_header("Authorization", f"Basic {token}")
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status
            except urllib.error.HTTPError as exc:
                return exc.code

        name = socket.gethostname()
        assert status(f"{name}:{port}", auth=True) == 200
        assert status(f"{name}:{port}", auth=False) == 401
        assert status(f"not-this-machine.example:{port}", auth=True) == 403
        # a real client with the credentials in the environment variables MLflow reads
        client_env = {**os.environ, "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": env["MLFLOW_AUTH_ADMIN_PASSWORD"]}
        code = f"import mlflow; print(mlflow.MlflowClient('http://{name}:{port}').create_experiment('cluster'))"
        out = subprocess.run([sys.executable, "-c", code], env=client_env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip(), out.stderr[-2000:]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


def test_compare_reads_each_task_score_and_refuses_to_mix_them(tmp_path):
    """An experiment with a classification and a regression study: `compare` names the clash and
    asks for --metric; with it, only that task's runs are summarised, by their final score."""
    from mlflow.tracking import MlflowClient

    import mlflow
    from senn_automl.integrations.compare import compare

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("senn-automl")
    parent = client.create_run(exp, run_name="study").info.run_id
    for task, metric, value in (("classification", "val_acc", 0.91), ("regression", "val_r2", 0.77)):
        run = client.create_run(exp, run_name=task, tags={"mlflow.parentRunId": parent}).info.run_id
        client.log_param(run, "task", task)
        client.log_param(run, "policy", "natural")
        client.log_metric(run, metric, value - 0.1, step=0)
        client.log_metric(run, f"final_{metric}", value, step=1)
        client.log_metric(run, "final_n_params", 123.0, step=1)
        client.set_terminated(run, "FINISHED")
    try:
        with pytest.raises(ValueError, match=r"classification \(val_acc\) and regression \(val_r2\) studies alike; choose one"):
            compare(uri, out=tmp_path / "c0", log=False)
        for metric, value in (("val_r2", 0.77), ("val_acc", 0.91)):
            res = compare(uri, out=tmp_path / metric, log=False, metric=metric)
            assert res.metric == metric and len(res.runs) == 1
            assert res.summary[f"best_{metric}"].tolist() == [pytest.approx(value)]  # the final model's, not the last epoch's
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize("metrics_every", [1, 4, 50])
def test_batched_epoch_metrics_lose_no_epoch(tmp_path, digits, metrics_every, monkeypatch):
    """Epoch metrics sent in batches (every `metrics_every` epochs, at growth checks, at the end)
    reach the run once for every epoch, whatever the batch size, in fewer requests than epochs."""
    Xtr, ytr, Xva, yva, _, _ = digits
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id, parent = start_parent_run(uri, "senn-batch", "study-batch", {})
    epoch_batches = []  # the epochs of each batch the callback sends
    flush = MLflowCallback._flush_metrics

    def counted(self):
        epochs = sorted({m.step for m in self._unsent if m.key == "val_acc"})  # growth and final metrics aside
        if epochs:
            epoch_batches.append(epochs)
        flush(self)

    monkeypatch.setattr(MLflowCallback, "_flush_metrics", counted)
    model, policy, train = cfgmod.build(_growing_config(max_epochs=7), 64, 10)
    cb = MLflowCallback(uri, exp_id, parent_run_id=parent, plot=False, metrics_every=metrics_every)
    with cb:
        trainer = Trainer(model, policy, train, [cb])
        trainer.fit(Xtr, ytr, Xva, yva)
    end_parent_run(parent, "FINISHED", tracking_uri=uri)
    history = mlflow.MlflowClient(uri).get_metric_history(cb.run_id, "val_acc")
    assert sorted(m.step for m in history) == list(range(7))  # every epoch, none twice
    assert [m.value for m in sorted(history, key=lambda m: m.step)][-1] == pytest.approx(trainer.history[-1]["val_acc"])
    assert sorted(step for batch in epoch_batches for step in batch) == list(range(7))
    checks = len({e.epoch for e in trainer.growth_log if e.epoch >= 0})
    if metrics_every == 1:
        assert len(epoch_batches) == 7
    else:  # a batch per metrics_every epochs, per growth check that grew, and one at the end
        assert len(epoch_batches) <= 7 // metrics_every + checks + 1 < 7


def test_metrics_every_must_be_a_whole_number_of_epochs(tmp_path):
    with pytest.raises(ValueError, match=r"metrics_every=0 is invalid: use a whole number of epochs >= 1"):
        MLflowCallback(f"sqlite:///{tmp_path}/mlflow.db", "0", metrics_every=0)


def test_only_the_final_model_goes_through_mlflows_serving_input_check(tmp_path, digits, monkeypatch):
    """Growth checkpoints skip MLflow's serving-input check (the undocumented validate_serving_input
    keyword of mlflow.models.Model.log, see tracking._log_pt2_model); the final model keeps it. Fails
    when an MLflow release stops honouring the keyword."""
    import mlflow.models.utils

    Xtr, ytr, Xva, yva, _, _ = digits
    checked = []
    check = mlflow.models.utils._validate_serving_input
    monkeypatch.setattr(mlflow.models.utils, "_validate_serving_input",
                        lambda model_uri, serving_input: checked.append(model_uri) or check(model_uri, serving_input))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id, parent = start_parent_run(uri, "senn-check", "study-check", {})
    model, policy, train = cfgmod.build(_growing_config(max_epochs=4), 64, 10)
    cb = MLflowCallback(uri, exp_id, parent_run_id=parent, plot=False, input_example=Xtr[:2] * 16, feature_scale=16.0)
    with cb:
        Trainer(model, policy, train, [cb]).fit(Xtr, ytr, Xva, yva)
    end_parent_run(parent, "FINISHED", tracking_uri=uri)
    assert len(cb.logged_models) >= 2  # growth checkpoints and the final model
    assert len(checked) == 1


def test_close_ends_the_run_even_when_the_last_metrics_are_refused(tmp_path, digits):
    """A store that refuses the buffered metrics at close() raises, and the run still ends (not RUNNING)."""
    from mlflow.exceptions import MlflowException

    Xtr, ytr, Xva, yva, _, _ = digits
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    exp_id, parent = start_parent_run(uri, "senn-close", "study-close", {})
    model, policy, train = cfgmod.build(_growing_config(max_epochs=2, check_at_start=False), 64, 10)
    cb = MLflowCallback(uri, exp_id, parent_run_id=parent, plot=False, metrics_every=50)
    trainer = Trainer(model, policy, train, [cb])
    cb.on_fit_start(trainer)
    cb._unsent.append(mlflow.entities.Metric("bad key?!", 1.0, 0, 0))  # a name the store rejects
    with pytest.raises(MlflowException, match=r"Invalid value \"bad key\?!\" for parameter .metrics\[0\].name"):
        cb.close("FAILED")
    assert mlflow.MlflowClient(uri).get_run(cb.run_id).info.status == "FAILED"
    assert mlflow.active_run() is None
    end_parent_run(parent, "FINISHED", tracking_uri=uri)


def test_deferred_models_are_logged_by_the_flush_once_each_and_kept_when_they_fail(tmp_path, digits):
    """MLflowCallback(defer_models=...) logs no model itself; flush_relay logs each job found in a
    (Tune-shaped) experiment folder into the run that made it, with the tags the synchronous path gives;
    a second flush adds nothing (the ledger), and a job that cannot be logged stays in the spool with
    a warning until a later flush logs it."""
    import shutil

    from senn_automl.integrations.tune.relay import LEDGER, MODELS_DIR, flush_relay

    Xtr, ytr, Xva, yva, _, _ = digits
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id, parent = start_parent_run(uri, "senn-tests", "deferred", {})
    conf = _growing_config()
    model, policy, train = cfgmod.build(conf, 64, 10)
    handed: list[Path] = []
    cb = MLflowCallback(uri, exp_id, parent_run_id=parent, run_name="trial-d", params=conf, registered_model_name="deferred",
                        feature_scale=16.0, input_example=Xtr[:3] * 16, defer_models=handed.append)
    with cb:
        trainer = Trainer(model, policy, train, [cb]).fit(Xtr, ytr, Xva, yva)
    client = mlflow.MlflowClient(uri)
    checks = _checks_with_growth(trainer)
    assert checks and len(handed) == len(checks) + 1  # one per growth check, and the final model
    assert client.search_model_versions("name='deferred'") == [] and cb.versions == []  # nothing logged yet
    assert {f.path for f in client.list_artifacts(cb.run_id, "growth")} == {"growth/events.json"}  # the plot comes with the final job

    # the jobs as Tune stores them: <experiment>/<trial>/checkpoint_NNNNNN/mlflow_models/<job>
    exp = tmp_path / "ray_results" / "study"
    for i, folder in enumerate(handed):
        dest = exp / "train_senn_0" / f"checkpoint_{i:06d}" / MODELS_DIR / folder.name
        dest.parent.mkdir(parents=True)
        shutil.move(str(folder), str(dest))
    spool = tmp_path / "out" / "model_jobs"
    # a damaged job first: its state.pt truncated
    state = next((exp / "train_senn_0" / "checkpoint_000000" / MODELS_DIR).iterdir()) / "state.pt"
    good = state.read_bytes()
    state.write_bytes(good[:50])
    # a job whose registration fails after its LoggedModel is made (a name MLflow refuses): retried without a second model
    last = next((exp / "train_senn_0" / f"checkpoint_{len(handed) - 1:06d}" / MODELS_DIR).iterdir()) / "model_job.json"
    job = json.loads(last.read_text())
    last.write_text(json.dumps({**job, "registered_model_name": "bad/name"}))
    # and a checkpoint whose job folder was cut off before its model_job.json: warned about, the others go on
    broken = exp / "train_senn_0" / "checkpoint_000099" / MODELS_DIR / "senn-model-cut"
    broken.mkdir(parents=True)
    (broken / "state.pt").write_bytes(b"")
    with pytest.warns(RuntimeWarning, match=r"deferred model \w+ not logged to MLflow: .*it stays in .*model_jobs"):
        with pytest.warns(RuntimeWarning, match=r"deferred models in .*checkpoint_000099 not copied: FileNotFoundError"):
            counts = flush_relay(uri, spool, exp)
    assert counts == {"logged": len(handed) - 2, "failed": 2}
    shutil.rmtree(broken.parent.parent)
    left = sorted((p for p in spool.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: (p / "logged.json").is_file())
    assert len(left) == 2 and json.loads((left[1] / "logged.json").read_text()).keys() == {"model_id"}
    (left[0] / "state.pt").write_bytes(good)  # repaired: the next flush logs them
    (left[1] / "model_job.json").write_text(json.dumps(job))
    assert flush_relay(uri, spool, exp) == {"logged": 2, "failed": 0}
    assert flush_relay(uri, spool, exp) == {"logged": 0, "failed": 0}  # each job once
    assert len((spool / LEDGER).read_text().split()) == len(handed)

    assert {f.path for f in client.list_artifacts(cb.run_id, "growth")} == {"growth/events.json", "growth/growth.png"}
    versions = client.search_model_versions("name='deferred'")
    assert len(versions) == len(checks) + 1
    assert {v.run_id for v in versions} == {cb.run_id}
    # in the run's experiment (a thread without an active run would put them in MLflow's default one)
    logged = client.search_logged_models(experiment_ids=[exp_id], max_results=1000)
    assert sorted(m.source_run_id for m in logged) == [cb.run_id] * len(handed)
    finals = [v for v in versions if v.tags.get("final") == "true"]
    assert len(finals) == 1 and int(finals[0].tags["n_params"]) == trainer.model.n_params()
    growth = sorted((int(v.tags["epoch"]) for v in versions if v.tags.get("final") != "true"))
    assert growth == checks
    # a deferred model predicts raw features like a synchronously logged one
    proba = mlflow.pyfunc.load_model(f"models:/deferred/{finals[0].version}").predict(Xva[:5] * 16)
    with torch.no_grad():
        expected = torch.softmax(trainer.model(torch.as_tensor(Xva[:5])), dim=1).numpy()
    np.testing.assert_allclose(proba, expected, atol=1e-5)
