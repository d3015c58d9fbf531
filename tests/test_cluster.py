"""A search on a real two-node Ray cluster (`ray start --head` + `ray start --address`, both on this
machine) that tracks into a real `mlflow server` (mlflow/start_server.sh); the champion model is
then loaded by alias in a fresh Python process. Every process started here is ended by pid (the
cluster's processes are found by its own temp dirs), never by name and never with a bare
`ray stop`, which would stop every Ray instance of the user. Budget: about 1.5 minutes on 2 cores."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import descendants, free_port, healthy, kill_pids, pids_mentioning, short_tmp, wait_for

pytest.importorskip("ray.tune")
pytest.importorskip("mlflow")

REPO = Path(__file__).resolve().parents[1]
MODEL = "senn-digits-cluster"


def _ray(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    # same RAY_AUTH_MODE (from conftest) on every command of the cluster
    return subprocess.run(["ray", *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


@pytest.fixture(scope="module")
def cluster():
    """Head (1 CPU) and worker (1 CPU) nodes on loopback, each with its own short temp dir and
    explicit ports (so they collide neither with each other nor with other Ray instances here)."""
    head_tmp, worker_tmp = short_tmp("srh"), short_tmp("srw")
    port = free_port()
    try:
        head = _ray(
            "start", "--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0", "--include-dashboard=false",
            "--disable-usage-stats", f"--temp-dir={head_tmp}", "--object-store-memory=100000000",
            f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
        )
        assert head.returncode == 0, head.stdout + head.stderr
        worker = _ray(
            "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--num-gpus=0", f"--temp-dir={worker_tmp}",
            "--object-store-memory=100000000", f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
        )
        assert worker.returncode == 0, worker.stdout + worker.stderr
        yield f"127.0.0.1:{port}"
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        finally:
            # `ray stop` would stop every Ray instance of this user: end this cluster's processes by pid
            kill_pids(descendants(pids_mentioning(head_tmp) + pids_mentioning(worker_tmp)))
            shutil.rmtree(head_tmp, ignore_errors=True)
            shutil.rmtree(worker_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    env = {**os.environ, "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port), "MLFLOW_ROOT": str(root)}
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(["bash", str(REPO / "mlflow" / "start_server.sh")], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(url) or proc.poll() is not None, timeout=90, what="mlflow server /health")
        assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
        yield url
    finally:
        kill_pids(descendants([proc.pid]))  # the script execs the server: proc.pid is the server
        log.close()


@pytest.fixture(scope="module")
def cluster_search(cluster, mlflow_server, tmp_path_factory):
    import ray

    from senn_automl.integrations.tune import run_search

    ray.init(address=cluster, log_to_driver=False, logging_level="ERROR")
    nodes = [n for n in ray.nodes() if n["Alive"]]
    out = tmp_path_factory.mktemp("cluster_search")
    res = run_search(
        "digits", "quick", num_samples=2, max_concurrent=2, address=cluster, tracking_uri=mlflow_server,
        out=out, registered_model_name=MODEL, study_name="cluster-test", progress=False, scheduler="fifo",
        trial_overrides={"max_epochs": 5, "expansion_interval": 2},
    )
    return res, nodes, ray.cluster_resources()


def test_two_node_cluster_runs_both_trials(cluster_search):
    res, nodes, resources = cluster_search
    assert len(nodes) == 2 and resources.get("CPU") == 2
    lb = res.leaderboard
    assert len(lb) == 2
    assert list(lb["status"]) == ["complete", "complete"]  # FIFO: both trained to max_epochs, no error
    assert (lb["epochs"] == 5).all()


def test_mlflow_server_champion_loads_in_fresh_process(cluster_search, mlflow_server):
    res, _, _ = cluster_search
    assert res.tracking_uri == mlflow_server and res.champion_version is not None
    code = textwrap.dedent(f"""
        import mlflow, numpy as np
        from senn_automl.data import load_dataset
        mlflow.set_tracking_uri({mlflow_server!r})
        model = mlflow.pyfunc.load_model("models:/{MODEL}@champion")
        ds = load_dataset("digits", seed=0)
        proba = np.asarray(model.predict(ds.raw("test")))  # raw grey levels 0..16: the scaling is inside the model
        print(proba.shape, float((proba.argmax(1) == ds.y_test).mean()))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    shape, acc = done.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert shape == "(360, 10)"
    assert float(acc) > 0.7
