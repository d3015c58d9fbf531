"""End-to-end tests of `senn_automl.integrations.tune` on a real local Ray instance, a real sqlite MLflow store
and a real Optuna RDB study (no mocks). Budget: about 2.5 minutes on 2 cores."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import descendants, free_port, kill_pids, pids_mentioning, wait_for

optuna = pytest.importorskip("optuna")
pytest.importorskip("ray.tune")
mlflow = pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient  # noqa: E402

from senn_automl.integrations.tune import SearchSetupError, run_search  # noqa: E402

MAX_EPOCHS = 6


def _versions(client, name, run_ids=None):
    vs = client.search_model_versions(f"name='{name}'", max_results=10000)
    return [v for v in vs if run_ids is None or v.run_id in run_ids]


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """One small search (3 trials of the quick space, 6 epochs) shared by the assertions below."""
    import shutil

    from conftest import short_tmp

    tmp = tmp_path_factory.mktemp("search")
    ray_dir = short_tmp("srt")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    lines: list[str] = []
    import io

    from rich.console import Console

    from senn_automl.integrations.tune.progress import LiveView

    screen = io.StringIO()
    live = LiveView(3, console=Console(file=screen, force_terminal=True, width=120, color_system=None))
    try:
        res = run_search(
            "digits", "quick", num_samples=3, max_concurrent=2, tracking_uri=uri, out=tmp / "out",
            ray_temp_dir=ray_dir, trial_overrides={"max_epochs": MAX_EPOCHS}, progress=lines.append, seed=0,
            callbacks=[live],
        )
        res.ray_leftovers = sorted(p.name for p in Path(ray_dir).iterdir())
    finally:
        kill_pids(descendants(pids_mentioning(ray_dir)))
        shutil.rmtree(ray_dir, ignore_errors=True)
    res.live_screen = screen.getvalue()
    return res, uri, lines


def test_live_view_shows_progress_best_value_and_running_trials(search):
    res, _, _ = search
    screen = res.live_screen
    lb = res.leaderboard
    best = lb.loc[lb["status"] == "complete", "val_acc"].max()
    assert "3/3" in screen and f"best val_acc: {best:.4f}" in screen
    assert "settings" in screen and "policy=" in screen  # a running trial's row was drawn
    assert screen.rstrip().endswith("(no trial running)") or "(no trial running)" in screen[-400:]


def test_search_removes_its_ray_session_folder(search):
    res, _, _ = search
    assert res.ray_leftovers == []  # no session_* folder (logs, sockets) left in the Ray temp folder


def test_search_leaderboard_and_progress(search):
    res, _, lines = search
    lb = res.leaderboard
    assert len(lb) == 3
    assert set(lb.columns) >= {"trial", "policy", "val_acc", "n_params", "growth_events", "seconds", "status"}
    assert set(lb["status"]) <= {"complete", "pruned"}
    assert (lb["status"] == "complete").any()
    assert lb["val_acc"].between(0, 1).all() and (lb["n_params"] > 0).all()
    # pruned trials stopped before max_epochs, complete ones reached it
    assert (lb.loc[lb["status"] == "pruned", "epochs"] < MAX_EPOCHS).all()
    assert (lb.loc[lb["status"] == "complete", "epochs"] == MAX_EPOCHS).all()
    assert any("started" in line for line in lines) and any("val_acc" in line for line in lines)
    assert Path(res.out, "leaderboard.csv").is_file()


def test_search_mlflow_runs_versions_and_champion(search):
    res, uri, _ = search
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([res.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert len(runs) == 3
    assert {r.info.status for r in runs} == {"FINISHED"}
    parent = client.get_run(res.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert "leaderboard.csv" in [a.path for a in client.list_artifacts(res.parent_run_id)]

    versions = _versions(client, res.registered_model_name, {r.info.run_id for r in runs})
    by_trial = collections.defaultdict(list)
    for v in versions:
        by_trial[v.tags["ray.trial_id"]].append(v)
    for _, row in res.leaderboard.iterrows():
        vs = by_trial.get(row["trial"], [])
        growth = [v for v in vs if v.tags.get("final") != "true"]
        finals = [v for v in vs if v.tags.get("final") == "true"]
        # one version per growth check, each tagged with the number of growth events it added
        assert sum(int(v.tags["n_events"]) for v in growth) == row["growth_events"], row["trial"]
        assert len({v.tags["growth_step"] for v in growth}) == len(growth)
        for v in growth:
            assert {"trial", "policy", "epoch", "growth_step", "n_params", "val_acc"} <= set(v.tags)
        assert len(finals) == (1 if row["status"] == "complete" else 0), row["trial"]
        # the driver logged each reported epoch's metrics once (relayed with the reports), and each growth check's
        steps = sorted(m.step for m in client.get_metric_history(row["mlflow_run_id"], "val_acc"))
        assert steps == list(range(int(row["epochs"]))), (row["trial"], steps)
        checks = sorted(m.step for m in client.get_metric_history(row["mlflow_run_id"], "growth_events_in_check"))
        assert checks == sorted(int(v.tags["epoch"]) for v in growth), row["trial"]
        if row["status"] == "complete":  # the growth plot, drawn by the driver with the final model's job
            assert "growth/growth.png" in {f.path for f in client.list_artifacts(row["mlflow_run_id"], "growth")}
    # the trials hand their models to the driver (relay), which logged each of them once, none left over
    spool = Path(res.out) / "model_jobs"
    assert not [p for p in spool.iterdir() if p.is_dir()]
    logged = client.search_logged_models(experiment_ids=[res.experiment_id], max_results=1000)
    ours = [m for m in logged if m.source_run_id in {r.info.run_id for r in runs}]
    assert len(ours) == len(versions) == len((spool / "logged.txt").read_text().split())

    champ = client.get_model_version_by_alias(res.registered_model_name, "champion")
    assert str(champ.version) == res.champion_version
    assert champ.tags["final"] == "true"
    best = res.leaderboard[res.leaderboard["status"] == "complete"].iloc[0]
    assert champ.tags["ray.trial_id"] == best["trial"]
    # the champion, loaded back from the registry, scored on the test split and logged on the parent run
    assert 0.5 < res.champion_test_acc <= 1  # 10 digits classes: chance is 0.1
    assert client.get_run(res.parent_run_id).data.metrics["champion_test_acc"] == pytest.approx(res.champion_test_acc)
    # loading it left MLflow's global URIs alone: they become environment variables that later Ray workers inherit
    assert os.environ.get("MLFLOW_REGISTRY_URI") != uri


def test_search_optuna_study_prunes_asha_stops(search):
    res, _, _ = search
    study = optuna.load_study(study_name=res.study_name, storage=res.storage)
    states = collections.Counter(t.state.name for t in study.trials)
    assert sum(states.values()) == 3
    lb = res.leaderboard
    assert states["COMPLETE"] == (lb["status"] == "complete").sum()
    assert states["PRUNED"] == (lb["status"] == "pruned").sum()
    assert states["RUNNING"] == 0
    # the dashboard names the objective, and each Optuna trial links to its trial's MLflow run
    assert study.metric_names == ["val_acc"]
    assert sorted(t.user_attrs.get("mlflow_run_id") for t in study.trials) == sorted(lb["mlflow_run_id"])
    # and records the value the leaderboard shows, for complete and pruned trials alike
    by_run = {t.user_attrs["mlflow_run_id"]: t.value for t in study.trials}
    assert all(by_run[row.mlflow_run_id] == pytest.approx(row.val_acc) for row in lb.itertuples()), (by_run, lb)


def test_compare_policies_from_mlflow(search, tmp_path):
    """`senn-automl compare` reads the child runs back from MLflow, summarises per policy, writes
    the accuracy-vs-parameters PNG and logs it to the study's parent run."""
    from typer.testing import CliRunner

    from senn_automl.cli import app

    res, uri, _ = search
    out = tmp_path / "compare"
    r = CliRunner().invoke(app, ["compare", "--tracking-uri", uri, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "3 trial runs" in r.output and "best_val_acc" in r.output
    import pandas as pd

    summary = pd.read_csv(out / "policies.csv")
    assert summary["runs"].sum() == 3
    assert set(summary["policy"]) == set(res.leaderboard["policy"])
    lb = res.leaderboard[res.leaderboard["status"] == "complete"]
    # complete runs: compare's accuracy is the final model's, the same as the leaderboard's
    assert abs(summary["best_val_acc"].max() - lb["val_acc"].max()) < 1e-9
    png = out / "accuracy_vs_params.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    client = MlflowClient(tracking_uri=uri)
    assert {"compare/accuracy_vs_params.png", "compare/policies.csv"} <= {
        a.path for a in client.list_artifacts(res.parent_run_id, "compare")}

    bad = CliRunner().invoke(app, ["compare", "--tracking-uri", uri, "--experiment", "nope"])
    assert bad.exit_code == 2 and "not found" in bad.output
    # a filter-string injection is an error naming the run id form, not a traceback
    bad = CliRunner().invoke(app, ["compare", "--tracking-uri", uri, "--parent-run-id", "x' or '1'='1"])
    assert bad.exit_code == 2 and "is not an MLflow run id (32 hex digits)" in bad.output, bad.output
    # a read-only command on a store that does not exist creates nothing there
    missing = tmp_path / "nothere" / "sub" / "mlflow.db"
    bad = CliRunner().invoke(app, ["compare", "--tracking-uri", f"sqlite:///{missing}"])
    assert bad.exit_code == 2 and f"no MLflow database at {missing}" in bad.output, bad.output
    assert not (tmp_path / "nothere").exists()


# --------------------------------------------------------------------------- validation
def _no_trial_started(tmp_path: Path, uri: str) -> None:
    assert not (tmp_path / "out" / "ray_results").exists()
    db = tmp_path / "out" / "optuna.db"
    if db.exists():
        assert optuna.get_all_study_names(f"sqlite:///{db}") == [] or all(
            not s.trials for s in (optuna.load_study(study_name=n, storage=f"sqlite:///{db}")
                                   for n in optuna.get_all_study_names(f"sqlite:///{db}")))
    if uri.startswith("sqlite") and (tmp_path / "mlflow.db").exists():
        client = MlflowClient(tracking_uri=uri)
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def _bad_space(tmp_path: Path) -> str:
    p = tmp_path / "bad.yaml"
    p.write_text("params:\n  taus: {type: float, low: 0.01, high: 0.1}\n")
    return str(p)


@pytest.mark.parametrize(
    "case",
    ["unknown dataset", "bad search space", "unreachable tracking server", "unreachable ray address", "gpu on cpu cluster",
     "resume with nothing to continue", "a --set value only one branch reads", "nan gpus", "bad registered model name",
     "blank experiment", "study name with a quote", "study name leaving the output folder", "unsupported tracking scheme",
     "tracking uri is a folder", "sqlite under a file", "unwritable sqlite", "out is a file", "a search holds the output folder",
     "negative max_failures", "zero time budget", "zero grace period", "pbt with nothing to explore"],
)
def test_bad_input_fails_before_any_trial(case, tmp_path, ray_tmp):
    from senn_automl.integrations.tune.search_space import SearchSpaceError

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    kw = dict(num_samples=2, max_concurrent=1, tracking_uri=uri, out=tmp_path / "out", ray_temp_dir=ray_tmp, progress=False)
    error = SearchSetupError
    if case == "unknown dataset":
        kw["dataset"] = "no-such-set"
        match = r"^dataset: dataset='no-such-set' is unknown; choose one of: digits, "
    elif case == "bad search space":
        kw["search_space"] = space = _bad_space(tmp_path)
        error, match = SearchSpaceError, (
            f"^{re.escape(str(Path(space).resolve()))}: params\\.taus: unknown configuration key 'taus' "
            r"\(not in senn_automl\.training\.config\.DEFAULTS\); did you mean 'tau' or 'task'\?$"
        )
    elif case == "unreachable tracking server":
        port = free_port()
        kw["tracking_uri"] = uri = f"http://127.0.0.1:{port}"
        match = (
            rf"^tracking URI: tracking server http://127\.0\.0\.1:{port} is unreachable: .+; "
            r"start one with mlflow/start_server\.sh or pass --tracking-uri sqlite:///\.\.\.$"
        )
    elif case == "unreachable ray address":
        port = free_port()
        kw["address"] = f"127.0.0.1:{port}"
        match = rf"^Ray cluster at 127\.0\.0\.1:{port} is unreachable \(.+\); start it with `ray start --head --port={port}` or fix --address$"
    elif case == "a --set value only one branch reads":  # the seed-0 dry sample is a fixed-policy trial
        kw["trial_overrides"] = {"tau": -1}
        match = (r"^search space 'quick' gives an invalid trial config \(with policy='natural'\): tau=-1 is invalid: "
                 r"the relative threshold must be a positive number")
    elif case == "nan gpus":
        kw["gpus_per_trial"] = float("nan")
        match = r"^gpus_per_trial=nan is invalid: use a number >= 0$"
    elif case == "bad registered model name":
        kw["registered_model_name"] = "bad/name:1"
        match = r"^registered model name 'bad/name:1' is invalid: it contains '/' ':'; use letters, digits"
    elif case == "blank experiment":
        kw["experiment_name"] = ""
        match = r"^experiment name '' is blank; pass a name, e\.g\. --experiment senn-automl$"
    elif case in ("study name with a quote", "study name leaving the output folder"):
        kw["study_name"] = name = "it's" if "quote" in case else "../../escape"
        match = rf"^study_name={re.escape(repr(name))} is invalid: it names the Tune experiment folder"
    elif case == "unsupported tracking scheme":
        kw["tracking_uri"] = uri = "foo://bar"
        match = r"^tracking URI: 'foo://bar' has the unsupported scheme 'foo': use sqlite:////abs/path/mlflow\.db"
    elif case == "tracking uri is a folder":
        kw["tracking_uri"] = uri = "./mlruns"
        match = r"^tracking URI: './mlruns' is a folder \(an MLflow file store, which MLflow 3 refuses\)"
    elif case == "sqlite under a file":
        (tmp_path / "afile").write_text("")
        kw["tracking_uri"] = uri = f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}"
        match = rf"^tracking URI: sqlite:///.+: {re.escape(str(tmp_path / 'afile'))} is a file, not a folder"
    elif case == "unwritable sqlite":
        kw["tracking_uri"] = uri = "sqlite:////proc/mlflow.db"
        match = r"^tracking URI: sqlite:////proc/mlflow\.db: the sqlite database /proc/mlflow\.db cannot be created in /proc \("
    elif case == "out is a file":
        kw["out"] = tmp_path / "out"
        (tmp_path / "out").write_text("")
        match = r"^out='.+/out' is invalid: .+/out is a file; pass a folder for the search's output$"
    elif case == "a search holds the output folder":
        import filelock

        (tmp_path / "out").mkdir()
        holder = filelock.FileLock(str(tmp_path / "out" / ".search.lock"))
        holder.acquire()  # as a running search does (filelock locks per FileLock object)
        match = r"^another search is running with out='.+/out' \(it holds .+\.search\.lock\): wait for it to end, or pass another --out"
    elif case == "negative max_failures":
        kw["max_failures"] = -1
        match = r"^max_failures=-1 is invalid: use a whole number >= 0 \(retries of a failed trial\)$"
    elif case == "zero time budget":
        kw["time_budget_s"] = 0.0
        match = r"^time_budget_s=0\.0 is invalid: use a number of seconds > 0, or leave it out$"
    elif case == "zero grace period":
        kw["grace_period"] = 0
        match = r"^grace_period=0 is invalid: use a whole number of epochs >= 1$"
    elif case == "pbt with nothing to explore":  # every parameter PBT perturbs is fixed by --set
        kw.update(scheduler="pbt", trial_overrides={"tau": 0.05, "alpha": 1e-3, "expansion_interval": 2, "lr": 1e-3})
        match = r"^scheduler='pbt': the search space has none of tau, alpha, expansion_interval, lr as a searched parameter"
    elif case == "resume with nothing to continue":
        kw.update(resume=True, study_name="never-run")
        match = (r"^--resume: nothing to continue: no Optuna study 'never-run' in sqlite:///.+/out/optuna\.db and no Tune "
                 r"experiment in .+/out/ray_results/never-run; run without --resume to start this search")
    else:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        kw["gpus_per_trial"] = 1
        match = r"^gpus_per_trial=1 but the Ray cluster has 0 GPU\(s\): trials would stay PENDING forever; use --gpus-per-trial 0$"
    t0 = time.time()
    with pytest.raises(error, match=match):
        run_search(**kw)
    assert time.time() - t0 < 60
    if case == "out is a file":
        assert (tmp_path / "out").is_file()
    else:
        _no_trial_started(tmp_path, uri)
    if case not in ("gpu on cpu cluster", "out is a file", "a search holds the output folder"):
        # refused before Ray: no output folder and no tracking database are left behind
        assert not (tmp_path / "out").exists() and not (tmp_path / "mlflow.db").exists(), sorted(p.name for p in tmp_path.iterdir())


def test_resume_of_a_finished_search_says_there_is_nothing_to_continue(search, ray_tmp):
    res, uri, _ = search
    study = optuna.load_study(study_name=res.study_name, storage=res.storage)
    before = len(study.trials)
    with pytest.raises(SearchSetupError, match=(
            rf"^--resume: search '{res.study_name}' has finished \(3 trials, none interrupted\): nothing to continue; "
            r"--num-samples 5 does not add trials to it \(a restored search keeps its 3\); to search further, start a new "
            r"search with another --study-name$")):
        run_search("digits", "quick", num_samples=5, tracking_uri=uri, out=res.out, resume=True, ray_temp_dir=ray_tmp,
                   progress=False, trial_overrides={"max_epochs": MAX_EPOCHS})
    assert len(optuna.load_study(study_name=res.study_name, storage=res.storage).trials) == before


def test_resume_of_a_finished_study_without_its_tune_experiment_is_refused_before_ray(tmp_path, ray_tmp):
    """--resume when the Tune experiment cannot be restored and the study already has --num-samples
    finished trials: refused before Ray starts, and the previous parent run keeps its status."""
    from senn_automl.integrations.tracking import end_parent_run, start_parent_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    out.mkdir()
    storage = f"sqlite:///{out / 'optuna.db'}"
    study = optuna.create_study(study_name="done", storage=storage, direction="maximize")
    dist = optuna.distributions.FloatDistribution(0.01, 0.1)
    for v in (0.8, 0.9):
        study.add_trial(optuna.trial.create_trial(params={"tau": 0.05}, distributions={"tau": dist}, value=v))
    _, parent = start_parent_run(uri, "senn-automl", "done",
                                 {"ray.experiment_path": str(out.resolve() / "ray_results" / "done")})
    end_parent_run(parent, "FINISHED", tracking_uri=uri)
    t0 = time.time()
    with pytest.raises(SearchSetupError, match=r"^--resume: study 'done' already has 2 finished trials \(>= --num-samples 2\)"):
        run_search("digits", "quick", num_samples=2, tracking_uri=uri, out=out, study_name="done", resume=True,
                   ray_temp_dir=ray_tmp, progress=False)
    assert time.time() - t0 < 30 and not (out / "ray_results").exists()
    assert client_status(uri, parent) == "FINISHED"  # not reopened and ended FAILED


def test_storage_path_keeps_uris_and_resolves_folders(tmp_path, monkeypatch):
    from senn_automl.integrations.tune.run import _storage_path

    monkeypatch.chdir(tmp_path)
    assert _storage_path("s3://bucket/senn/ray", tmp_path) == "s3://bucket/senn/ray"  # not tmp_path/'s3:/bucket'
    assert _storage_path("shared/ray", tmp_path) == str(tmp_path / "shared" / "ray")
    assert _storage_path(None, tmp_path / "out") == str(tmp_path / "out" / "ray_results")


def test_time_budget_stops_the_search_and_prunes_the_running_trials(tmp_path, ray_tmp):
    """--time-budget-s: Tune stops when the budget is spent; the trials still running are PRUNED in
    Optuna (not left RUNNING, not 'interrupted'), and the search ends normally."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # 15 s: trial actors take a few seconds to start on a loaded 2-core machine; 40 trials take far longer
    res = run_search("digits", "quick", num_samples=40, max_concurrent=2, tracking_uri=uri, out=tmp_path / "out",
                     ray_temp_dir=ray_tmp, progress=False, scheduler="fifo", time_budget_s=15.0, seed=3)
    assert not res.interrupted and 0 < len(res.leaderboard) < 40
    assert res.leaderboard["val_acc"].notna().any()  # at least one trial reported within the budget
    assert set(res.leaderboard["status"]) <= {"complete", "pruned"}
    trials = optuna.load_study(study_name=res.study_name, storage=res.storage).trials
    _agree_with_optuna(res.leaderboard.dropna(subset=["val_acc"]), trials)
    assert client_status(uri, res.parent_run_id) == "FINISHED"


def client_status(uri: str, run_id: str) -> str:
    return MlflowClient(tracking_uri=uri).get_run(run_id).info.status


def test_search_setup_error_is_value_error():
    assert issubclass(SearchSetupError, ValueError)


def test_restored_progress_view_writes_to_the_resuming_calls_writer():
    """A ProgressView's writer does not pickle into Tune's experiment state; one unpickled inside
    restored_views_write_to (as Tuner.restore does in run_search) writes to that writer."""
    import pickle

    from senn_automl.integrations.tune.progress import ProgressView, restored_views_write_to

    first: list[str] = []
    blob = pickle.dumps(ProgressView(3, first.append))
    assert pickle.loads(blob).write is None  # outside the block: prints
    resumed: list[str] = []
    with restored_views_write_to(resumed.append):
        view = pickle.loads(blob)
    view._w("hello")
    assert first == [] and len(resumed) == 1 and "hello  (running 0, done 0/3)" in resumed[0]


def _agree_with_optuna(lb, trials) -> dict:
    """The newest Optuna trial of each Tune trial (user attribute ray.trial_id) has the leaderboard
    row's state and value, and no Optuna trial is RUNNING."""
    assert all(t.state.name != "RUNNING" for t in trials), [(t.number, t.state.name) for t in trials]
    newest = {}
    for t in trials:  # in number order: later records replace earlier ones
        if "ray.trial_id" in t.user_attrs:
            newest[t.user_attrs["ray.trial_id"]] = t
    state = {"complete": "COMPLETE", "pruned": "PRUNED"}
    for row in lb.itertuples():
        t = newest[row.trial]
        assert (t.state.name, t.value) == (state[row.status], pytest.approx(row.val_acc)), (row, t.number, t.state, t.value)
    return {tid: newest[tid] for tid in lb["trial"]}


# --------------------------------------------------------------------------- Ctrl-C, then --resume
def test_ctrl_c_stops_cleanly_and_resume_agrees_with_optuna(tmp_path, ray_tmp):
    """SIGINT to the driver (Ctrl-C): exit 130 with the resume command, parent and interrupted trial
    runs KILLED, no Optuna trial RUNNING, no champion moved; then --resume finishes, and every
    leaderboard row has exactly one Optuna trial (not the interrupted records) with its state and value."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "senn_automl.cli", "tune", "--num-samples", "3", "--max-concurrent", "2",
        "--tracking-uri", uri, "--out", str(out), "--study-name", "ctrl-c", "--set", "max_epochs=30", "--verbose",
    ]
    env = {**os.environ, "SENN_RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for(lambda: re.search(r"epoch +2 ", log.read_text()) or proc.poll() is not None, timeout=150,
                 what="the second epoch of a trial")
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_pids(descendants(pids_mentioning(ray_tmp)))
    text = log.read_text()
    assert rc == 130, text[-3000:]
    assert "Traceback" not in text and "interrupted" in text
    assert " ".join(cmd[3:]) + " --resume" in text  # the command to continue
    storage = f"sqlite:///{out / 'optuna.db'}"
    first = optuna.load_study(study_name="ctrl-c", storage=storage).trials
    assert first and all(t.state.name != "RUNNING" for t in first), [t.state.name for t in first]
    stopped = {t.user_attrs["ray.trial_id"] for t in first if t.user_attrs.get("interrupted")}
    assert stopped  # the trial(s) running at the interrupt
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("senn-automl")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.study = 'ctrl-c'")
    assert parent.info.status == "KILLED"
    kids = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert all(r.info.status != "RUNNING" for r in kids), [(r.data.tags["ray.trial_id"], r.info.status) for r in kids]
    killed = {r.data.tags["ray.trial_id"]: r.info.status for r in kids if r.data.tags["ray.trial_id"] in stopped}
    assert set(killed.values()) <= {"KILLED"}, killed
    # a stopped trial that reported an epoch had made its run (one interrupted before its first report has none)
    assert all(tid in killed for tid in stopped if re.search(rf"trial {tid} epoch", text)), (killed, stopped)
    with pytest.raises(mlflow.exceptions.MlflowException, match="champion|senn-digits not found"):  # no alias set
        client.get_model_version_by_alias("senn-digits", "champion")

    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    import pandas as pd

    lb = pd.read_csv(out / "leaderboard.csv")
    trials = optuna.load_study(study_name="ctrl-c", storage=storage).trials
    newest = _agree_with_optuna(lb, trials)
    assert len(lb) == 3 and set(newest) == set(lb["trial"])
    assert all(newest[tid].user_attrs["continues"] >= 0 for tid in stopped)  # recorded anew, pointing back
    assert f"'superseded': {len(stopped)}" in done.stdout  # the leaderboard header counts the old records apart
    assert "is already reported" not in done.stdout + done.stderr  # restarted trials' repeated epochs are not warned about
    assert client.get_model_version_by_alias("senn-digits", "champion").tags["final"] == "true"


# --------------------------------------------------------------------------- resume after SIGKILL
def test_resume_after_driver_killed(tmp_path, ray_tmp):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "senn_automl.cli", "tune", "--dataset", "digits", "--search-space", "quick",
        "--num-samples", "4", "--max-concurrent", "2", "--tracking-uri", uri, "--out", str(out),
        "--study-name", "resume-test", "--set", "max_epochs=8", "--seed", "1", "--verbose",  # a line per epoch: kill at the first
    ]
    # TMPDIR: temporary checkpoint dirs of processes killed below land in tmp_path, not /tmp
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "SENN_RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1", "TMPDIR": str(scratch)}
    log1 = tmp_path / "first.log"
    with open(log1, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for(lambda: "epoch" in log1.read_text() or proc.poll() is not None, timeout=150, what="the first trial report")
        assert proc.poll() is None, log1.read_text()[-3000:]
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its session
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        # Ray daemons that left the session (orphans of the killed driver): end them by pid
        kill_pids(descendants(pids_mentioning(ray_tmp)))

    storage = f"sqlite:///{out / 'optuna.db'}"
    before = optuna.load_study(study_name="resume-test", storage=storage)
    assert len(before.trials) >= 1

    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "resumed" in done.stdout
    # the champion is loaded back from this search's registry (not from ./mlflow.db of the working directory)
    assert re.search(r"champion test accuracy: \d\.\d{4} ", done.stdout), done.stdout[-2000:]

    import pandas as pd

    study = optuna.load_study(study_name="resume-test", storage=storage)
    newest = _agree_with_optuna(pd.read_csv(out / "leaderboard.csv"), study.trials)
    assert len(newest) == 4, [(t.number, t.state.name, t.user_attrs) for t in study.trials]
    # no configuration was sampled twice (the restored sampler does not replay its RNG)
    assert len({tuple(sorted(t.params.items())) for t in newest.values()}) == 4

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = _versions(client, "senn-digits")
    growth = [(v.tags["trial"], v.tags["growth_step"]) for v in versions if v.tags.get("final") != "true"]
    assert len(growth) == len(set(growth)), sorted(growth)
    finals = [v.tags["trial"] for v in versions if v.tags.get("final") == "true"]
    assert len(finals) == len(set(finals))
    assert client.get_model_version_by_alias("senn-digits", "champion").tags["final"] == "true"
    exp = client.get_experiment_by_name("senn-automl")
    running = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'")
    assert running == []
    parents = client.search_runs([exp.experiment_id], filter_string="tags.study = 'resume-test'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the resumed search reopened its parent run
    kids = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    trials = set(pd.read_csv(out / "leaderboard.csv")["trial"])
    assert len(trials) == 4
    assert {r.data.tags["ray.trial_id"] for r in kids} >= trials  # every trial has its run(s) under it
    # runs of trials the killed driver started after its last snapshot: no longer running (KILLED, or
    # FINISHED when the trial ended before the kill), tagged as discarded, not in the registry
    orphans = [client.get_run(r.info.run_id) for r in kids if r.data.tags["ray.trial_id"] not in trials]
    assert all(r.info.status in ("KILLED", "FINISHED", "FAILED") for r in orphans), [r.info.status for r in orphans]
    assert all(r.data.tags.get("discarded_by_resume") == "true" for r in orphans)
    assert {v.tags["ray.trial_id"] for v in versions} <= trials
    assert "leaderboard.csv" in [a.path for a in client.list_artifacts(parents[0].info.run_id)]


# --------------------------------------------------------------------------- multi-objective + study continuation
def test_multi_objective_pareto_and_study_continuation(tmp_path, ray_tmp):
    """Multi-objective search reports the Optuna Pareto front; a --resume without a restorable Tune
    experiment starts a new Tuner that continues the same Optuna study up to num_samples."""
    import shutil

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    kw = dict(num_samples=2, max_concurrent=2, tracking_uri=uri, out=tmp_path / "out", ray_temp_dir=ray_tmp,
              progress=False, multi_objective=True, study_name="mo-test", trial_overrides={"max_epochs": 4})
    res = run_search("digits", "quick", **kw)
    assert res.pareto is not None and len(res.pareto) >= 1
    assert {"optuna_trial", "val_acc", "n_params"} <= set(res.pareto.columns)
    front = list(zip(res.pareto["n_params"], res.pareto["val_acc"]))
    for p in front:  # no point of the front dominates another
        assert not any(q != p and q[0] <= p[0] and q[1] >= p[1] for q in front)
    study = optuna.load_study(study_name="mo-test", storage=res.storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_acc", "n_params"]
    assert len(study.trials) == 2

    shutil.rmtree(res.experiment_path)  # nothing for Tuner.restore: --resume continues the Optuna study
    res2 = run_search("digits", "quick", **{**kw, "num_samples": 3}, resume=True)
    assert not res2.resumed and len(res2.leaderboard) == 1
    study = optuna.load_study(study_name="mo-test", storage=res.storage)
    assert len(study.trials) == 3 and all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    assert res2.parent_run_id == res.parent_run_id  # the study keeps one parent run

    with pytest.raises(SearchSetupError, match=(  # same study name, other objective count
        rf"^Optuna study 'mo-test' in {re.escape(res.storage)} optimises \['maximize', 'minimize'\], not \['maximize'\]: "
        r"use another --study-name or add --multi-objective$"
    )):
        run_search("digits", "quick", **{**kw, "multi_objective": False})


# --------------------------------------------------------------------------- trial retry from a growth checkpoint
class KillTrialWorkerAfterFirstGrowthCheckpoint(__import__("ray").tune.Callback):
    """Driver-side Tune callback: SIGKILL the worker process of the first trial that registers a
    growth checkpoint before its end (a real crash; Tune then retries it from that checkpoint)."""

    def __init__(self):
        self.killed: dict = {}

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        r = trial.last_result or {}
        if self.killed or r.get("final") or not r.get("n_growth_events"):
            return
        self.killed = {"trial_id": trial.trial_id, "pid": int(r["pid"]), "epoch": int(r["epoch"])}
        os.kill(int(r["pid"]), signal.SIGKILL)


class DamageSecondCheckpointThenKill(__import__("ray").tune.Callback):
    """Driver-side Tune callback: at a trial's second checkpoint, truncate that checkpoint's state.pt
    (a disk or copy failure) and SIGKILL the trial's worker; the retry must use the first one."""

    def __init__(self):
        self.seen: dict = {}
        self.killed: dict = {}

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        r = trial.last_result or {}
        if self.killed or r.get("final"):
            return
        self.seen.setdefault(trial.trial_id, []).append(int(r["epoch"]))
        if len(self.seen[trial.trial_id]) == 2:
            state = Path(checkpoint.path) / "state.pt"
            state.write_bytes(state.read_bytes()[:100])
            self.killed = {"trial_id": trial.trial_id, "epochs": list(self.seen[trial.trial_id])}
            os.kill(int(r["pid"]), signal.SIGKILL)


def _search_with_a_crash(tmp_path, ray_tmp, monkeypatch, callback, num_samples: int, **overrides):
    """A FIFO search of natural-policy trials (10 epochs, a growth check every 2) with ``callback``
    crashing a trial; returns (the result, the tracking URI)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # the Ray workers inherit TMPDIR: the killed worker's temporary checkpoint dir stays in tmp_path
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    res = run_search(
        "digits", "quick", num_samples=num_samples, max_concurrent=num_samples, tracking_uri=uri, out=tmp_path / "out",
        ray_temp_dir=ray_tmp, progress=False, scheduler="fifo", callbacks=[callback],
        trial_overrides={"policy": "natural", "expansion_interval": 2, "max_epochs": 10, **overrides},
    )
    return res, uri


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, ray_tmp, monkeypatch):
    damage = DamageSecondCheckpointThenKill()
    # low thresholds, one neuron per check: a growth checkpoint at each check
    res, uri = _search_with_a_crash(tmp_path, ray_tmp, monkeypatch, damage, 1, tau=0.001, alpha=1e-4, max_additions=1)
    assert damage.killed, damage.seen
    assert list(res.leaderboard["status"]) == ["complete"], res.leaderboard  # not failed 3 times on the damaged one
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([res.experiment_id], filter_string=f"tags.`ray.trial_id` = '{damage.killed['trial_id']}'")
    retry = next(r for r in runs if r.info.status == "FINISHED")
    steps = [m.step for m in client.get_metric_history(retry.info.run_id, "val_acc")]
    first, second = damage.killed["epochs"]
    assert min(steps) == first + 1 and max(steps) == 9, steps  # from the first checkpoint, not epoch 0 nor the damaged one


def test_crashed_trial_resumes_from_growth_checkpoint(tmp_path, ray_tmp, monkeypatch):
    killer = KillTrialWorkerAfterFirstGrowthCheckpoint()
    # low thresholds: both trials grow early
    res, uri = _search_with_a_crash(tmp_path, ray_tmp, monkeypatch, killer, 2, tau=0.01, alpha=5e-4)
    assert killer.killed, "no growth checkpoint was registered"
    lb = res.leaderboard
    assert list(lb["status"]) == ["complete", "complete"], lb
    tid = killer.killed["trial_id"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    runs = client.search_runs([res.experiment_id], filter_string=f"tags.`ray.trial_id` = '{tid}'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]  # the crashed attempt, then the retry
    retry = next(r for r in runs if r.info.status == "FINISHED")
    steps = [m.step for m in client.get_metric_history(retry.info.run_id, "val_acc")]
    assert min(steps) > 0 and max(steps) == 9  # continued from the checkpoint, not from epoch 0
    row = lb[lb["trial"] == tid].iloc[0]
    vs = [v for v in _versions(client, res.registered_model_name) if v.tags.get("ray.trial_id") == tid]
    growth = [v for v in vs if v.tags.get("final") != "true"]
    assert len({v.tags["growth_step"] for v in growth}) == len(growth)
    assert sum(int(v.tags["n_events"]) for v in growth) == row["growth_events"]
    assert len([v for v in vs if v.tags.get("final") == "true"]) == 1


# --------------------------------------------------------------------------- population-based training
def test_pbt_exploits_grown_networks_and_explores_growth_settings(tmp_path, ray_tmp):
    """`senn-automl tune --scheduler pbt`: every member trains to its end, at least one exploit
    happens (Tune's pbt_global.txt), and the exploiting member's next MLflow run records the
    explored settings (the trainable puts them in force with training.config.reconfigure)."""
    import json as _json

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "senn_automl.cli", "tune", "--scheduler", "pbt", "--num-samples", "4",
           "--max-concurrent", "2", "--tracking-uri", uri, "--out", str(out), "--set", "max_epochs=12", "--seed", "1"]
    env = {**os.environ, "SENN_RAY_TMPDIR": ray_tmp}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    import pandas as pd

    lb = pd.read_csv(out / "leaderboard.csv")
    assert len(lb) == 4 and set(lb["status"]) == {"complete"} and lb["trial"].is_unique, lb
    assert "champion: models:/senn-digits@champion" in done.stdout
    exploits = [_json.loads(line) for line in (out / "ray_results" / "senn-digits" / "pbt_global.txt").read_text().splitlines()]
    assert exploits, "no exploit in 12 epochs with a perturbation every 5"
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("senn-automl")
    target, _donor, _t_step, _d_step, _old, new = exploits[0]
    tid = next(t for t in lb["trial"] if t.endswith("_" + target.zfill(5)))
    runs = sorted(client.search_runs([exp.experiment_id], filter_string=f"tags.`ray.trial_id` = '{tid}'"),
                  key=lambda r: r.info.start_time)
    assert len(runs) >= 2  # one run per attempt (a synchronous PBT also pauses and restores members)
    keys = ("lr", "tau", "alpha", "expansion_interval")

    def same(params, config):
        return all(float(params[k]) == pytest.approx(float(config[k])) for k in keys)

    assert any(same(r.data.params, new) for r in runs[1:]), ([r.data.params for r in runs], new)
    assert not same(runs[0].data.params, new)  # explore changed the settings


def test_regression_search_from_a_fresh_folder_registers_a_champion_that_predicts_values(tmp_path, ray_tmp):
    """``senn-automl tune --dataset friedman1`` from an empty folder: trials maximise the validation R²,
    the leaderboard ranks by it, and the champion loads back from the registry as a pyfunc model
    that takes raw features and predicts values in the target's units."""
    import numpy as np
    from sklearn.metrics import r2_score

    from senn_automl.data import load_dataset

    env = {**os.environ, "SENN_RAY_TMPDIR": ray_tmp}
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store: ./mlflow.db of the fresh folder
    cmd = [sys.executable, "-m", "senn_automl.cli", "tune", "--dataset", "friedman1", "--num-samples", "3", "--set",
           "max_epochs=8", "--verbose"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    kill_pids(descendants(pids_mentioning(ray_tmp)))
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "val_r2" in done.stdout and "val_acc" not in done.stdout
    m = re.search(r"champion test R²: (-?\d\.\d{4})   RMSE: ([\d.]+)", done.stdout)
    assert m, done.stdout[-2000:]
    import pandas as pd

    lb = pd.read_csv(tmp_path / "runs" / "tune" / "leaderboard.csv")
    assert "val_r2" in lb.columns and "val_acc" not in lb.columns
    done_rows = lb[lb["status"] == "complete"]
    assert len(done_rows) >= 1 and done_rows["val_r2"].is_monotonic_decreasing
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model("models:/senn-friedman1@champion")
        ds = load_dataset("friedman1")
        pred = np.asarray(model.predict(ds.raw("test")))
    finally:
        mlflow.set_tracking_uri(None)
    assert pred.shape == (len(ds.y_test), 1)
    y = ds.raw_targets("test")
    assert r2_score(y, pred) == pytest.approx(float(m.group(1)), abs=1e-4)
    assert 5 < float(pred.mean()) < 25  # friedman1's y is about 14 ± 5: values, not standardised ones
    assert float(m.group(2)) == pytest.approx(float(np.sqrt(np.mean((pred - y) ** 2))), rel=1e-3)
    # `senn-automl compare` reads the study's R² (its runs logged no accuracy)
    from typer.testing import CliRunner

    from senn_automl.cli import app

    r = CliRunner().invoke(app, ["compare", "--tracking-uri", uri, "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    summary = pd.read_csv(tmp_path / "cmp" / "policies.csv")
    assert "best_val_r2" in summary.columns and "best_val_acc" not in summary.columns
    assert summary["best_val_r2"].max() == pytest.approx(done_rows["val_r2"].max(), abs=1e-9)
    bad = CliRunner().invoke(app, ["compare", "--tracking-uri", uri, "--out", str(tmp_path / "cmp"), "--metric", "acc"])
    assert bad.exit_code == 2 and "metric='acc' is unknown; use one of val_acc, val_r2" in bad.output, bad.output
