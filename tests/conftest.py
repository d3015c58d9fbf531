"""Shared test setup: quiet, auth-free loopback Ray, short temp dirs, process helpers.

Environment variables are set before Ray is imported anywhere (they are also inherited by the
Ray workers and the `senn-automl` subprocesses the tests start).
"""

from __future__ import annotations

import os
import signal
import socket
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback test clusters; same value on every ray command
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_INIT", "1")  # a forgotten ray.init fails instead of starting a cluster
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str, timeout: float = 2.0) -> bool:
    """True if ``GET <url>/health`` answers 200 (an MLflow tracking server is up)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def short_tmp(prefix: str) -> str:
    """A short, unique directory under /tmp (Ray's AF_UNIX socket paths must stay < 107 bytes)."""
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_mentioning(marker: str) -> list[int]:
    """Pids of this user's processes whose command line contains ``marker`` (a unique temp dir)."""
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me and marker in _cmdline(int(name)):
            out.append(int(name))
    return out


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # zombies are dead
    except (OSError, IndexError):
        return False


def descendants(pids: list[int]) -> list[int]:
    """``pids`` and all their descendants (read from /proc; no psutil needed)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            pp = _ppid(int(name))
            if pp is not None:
                children.setdefault(pp, []).append(int(name))
    seen: set[int] = set()
    todo = [p for p in pids if _alive(p)]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return sorted(seen)


def kill_pids(pids: list[int], timeout: float = 5.0) -> None:
    """SIGTERM each pid, wait up to ``timeout`` s, then SIGKILL the survivors (by pid only)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def ray_tmp():
    """A unique short Ray temp dir; every process that still mentions it is ended by pid afterwards."""
    import shutil

    d = short_tmp("sr")
    yield d
    kill_pids(descendants(pids_mentioning(d)))
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    """Tiny tensors: intra-op threading only adds overhead (and thrashes a shared 2-core box)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def import_bench(name: str):
    """``bench/<name>.py`` imported as a module (with ``bench/`` on ``sys.path`` for its own imports,
    until the caller's generator is closed); a generator for a fixture to ``yield from``. Restores
    torch's thread count, which the benchmarks' ``main()`` sets process-wide."""
    import importlib.util
    import sys
    from pathlib import Path

    import torch

    script = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    n = torch.get_num_threads()
    sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        sys.path.remove(str(script.parent))
        torch.set_num_threads(n)


def eval_outputs(model, X):
    """Outputs of ``model`` on ``X`` in eval mode without gradient; the model's mode is restored."""
    import torch

    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(X)
    model.train(was)
    return out


#: test modules whose every test starts a Ray cluster or an mlflow server, builds a wheel or runs
#: a bench/ command; `pytest -m "not slow"` leaves them out
SLOW_MODULES = {
    "test_tune", "test_cluster", "test_tracking", "test_packaging", "test_bench_commands", "test_bench_estimator",
    "test_bench_growth_vs_fixed", "test_bench_growth_vs_rows", "test_bench_policies", "test_bench_growth_timing",
    "test_bench_regressor",
}


def pytest_ignore_collect(collection_path, config):
    """Under ``-m "not slow"`` the slow modules are not even imported (Ray, MLflow: seconds of imports)."""
    if config.getoption("markexpr", "").replace(" ", "") == "notslow" and collection_path.stem in SLOW_MODULES:
        return True
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        # scikit-learn's estimator checks run twice, with warm_start off and on: the second pass is slow too
        estimator = getattr(getattr(item, "callspec", None), "params", {}).get("estimator")
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or getattr(estimator, "warm_start", False) is True:
            item.add_marker(pytest.mark.slow)
