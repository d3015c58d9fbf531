"""Smoke tests of the bench/ commands that run as scripts: each runs, prints its table and writes
its CSV, JSON and PNG (figures are in BENCHMARKS.md; no timing is asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

pytest.importorskip("pandas")

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(script: str, *args: str, timeout: int = 300) -> str:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


def test_growth_overhead_runs_each_side_in_its_own_process(tmp_path):
    out = _run("growth_overhead.py", "--cases", "mlp-digits", "--epochs", "12", "--set", "expansion_interval=5",
               "--repeats", "2", "--out", str(tmp_path))
    assert "ratio" in out
    for ext in ("csv", "json", "png"):
        assert (tmp_path / f"growth_overhead.{ext}").stat().st_size > 0
    rec = json.loads((tmp_path / "growth_overhead.json").read_text())
    (row,) = rec["rows"]
    assert row["case"] == "mlp-digits" and row["epochs"] == 12
    # two fresh-process runs per side; the reported one is the faster (lower median of two)
    assert row["repeats"] == 2 and len(row["growing_s_all"]) == len(row["fixed_s_all"]) == 2
    assert row["growing_s"] == min(row["growing_s_all"]) and row["fixed_s"] == min(row["fixed_s_all"])
    # ratio is growing / fixed (from unrounded seconds; the s columns are rounded to 0.01 s)
    assert row["ratio"] == pytest.approx(row["growing_s"] / row["fixed_s"], rel=0.1)
    # the within-run figure: growing wall time over its time outside checks, so above 1 when checks ran
    assert row["ratio_in_run"] > 1 and row["checks_s"] > 0
    assert row["final_params"] >= row["start_params"] == 790  # 64-10-10 start
    assert 0 <= row["checks_share"] < 1 and row["peak_rss_growing_mb"] > 0
    assert rec["machine"]["device"] == "cpu"


def test_compute_to_accuracy_compares_growth_with_the_grid(tmp_path):
    _run("compute_to_accuracy.py", "--dataset", "wine", "--widths", "4", "8", "--depths", "1",
         "--grow", "", "--grow", "tau=0.01", "--set", "max_epochs=15", "--out", str(tmp_path))
    rec = json.loads((tmp_path / "compute_to_accuracy_wine.json").read_text())
    runs = [r["run"] for r in rec["rows"]]
    assert runs == ["grid", "grid", "growing", "growing (tau=0.01)"]
    for s in rec["summaries"]:
        grid = [r for r in rec["rows"] if r["run"] == "grid"]
        assert s["grid_seconds"] == pytest.approx(sum(r["seconds"] for r in grid), abs=0.2)
        assert s["matched"] == (s["growing_test_acc"] >= s["grid_best_test_acc"] - 0.005)
    assert (tmp_path / "compute_to_accuracy_wine.png").stat().st_size > 0


def test_search_overhead_times_loop_and_search(tmp_path):
    _run("search_overhead.py", "--trials", "2", "--out", str(tmp_path), timeout=400)
    rec = json.loads((tmp_path / "search_overhead.json").read_text())
    hows = [r["how"] for r in rec["rows"]]
    assert hows == ["plain loop", "run_search, 1 concurrent", "run_search, 2 concurrent", "loop + MLflow tracking",
                    "loop + tracking, no growth plot", "loop + tracking, async logging"]
    assert all(r["registered_versions"] >= 2 for r in rec["rows"][1:3])  # at least one final model per trial
    loop_s = rec["rows"][0]["wall_s"]
    assert all(r["overhead_s"] == pytest.approx(r["wall_s"] - loop_s, abs=0.02) for r in rec["rows"][3:])
    assert (tmp_path / "search_overhead.png").stat().st_size > 0


def test_search_vs_fixed_compares_arms_at_one_budget(tmp_path):
    _run("search_vs_fixed.py", "--datasets", "digits", "--models", "mlp", "--seeds", "0", "--trials", "2",
         "--pbt-population", "2", "--time-budget-s", "60", "--out", str(tmp_path), timeout=500)
    rec = json.loads((tmp_path / "search_vs_fixed.json").read_text())
    assert (tmp_path / "search_vs_fixed.png").stat().st_size > 0
    runs = {r["arm"]: r for r in rec["per_search"]}
    assert set(runs) == {"fixed", "growth", "growth+pbt"}
    assert runs["fixed"]["growth_events"] == 0  # the fixed space never grows
    for r in runs.values():
        assert r["started"] == r["trials"] == 2 and r["errors"] == 0
        assert r["complete"] + r["pruned"] <= r["started"]  # the rest: interrupted
        if r["test_acc"] is None:  # no trial logged its final model within the budget: no champion, no curve
            assert r["curve"] == []
            continue
        # the best model so far ends as the champion: its test accuracy and size are the row's
        times = [t for t, _, _ in r["curve"]]
        assert times == sorted(times) and 0 < times[-1] <= r["wall_s"]
        assert r["curve"][-1][1:] == [r["test_acc"], r["n_params"]]
    growth = {s["arm"]: s for s in rec["rows"]}["growth"]
    if runs["growth"]["test_acc"] is not None and runs["fixed"]["test_acc"] is not None:
        assert growth["vs_fixed_pt"] == pytest.approx(100 * (runs["growth"]["test_acc"] - runs["fixed"]["test_acc"]), abs=0.01)


def test_candidate_effort_repeats_searches_without_changing_the_run(tmp_path):
    from senn_automl.data import load_dataset
    from senn_automl.training import config
    from senn_automl.training.trainer import Trainer

    overrides = {"expansion_interval": 5}
    _run("candidate_effort.py", "--seeds", "0", "--epochs", "12", "--set", "expansion_interval=5", "--cold-steps", "5", "50",
         "--warm-steps", "0", "10", "--candidates", "8", "32", "--out", str(tmp_path))
    rec = json.loads((tmp_path / "candidate_effort_digits.json").read_text())
    assert (tmp_path / "candidate_effort_digits.png").stat().st_size > 0
    rows = {(r["kind"], r["start"], r["P"], r["steps"]): r for r in rec["rows"]}
    # the first check searches cold: neurons at each step count and P, layers at both insertion points
    assert {("neuron", "cold", 32, 5), ("neuron", "cold", 32, 50), ("neuron", "cold", 8, 50)} <= set(rows)
    assert {("layer@0", "cold", None, 50), ("layer@1", "cold", None, 50)} <= set(rows)
    assert rows[("neuron", "cold", 32, 50)]["default"] and not rows[("neuron", "cold", 32, 5)]["default"]
    # every effort of one search starts from the same point: as many searches per effort
    cold = [r["searches"] for k, r in rows.items() if k[0] == "neuron" and k[1] == "cold"]
    assert len(set(cold)) == 1
    assert all(r["ms_per_search"] > 0 and 0 <= r["pass_share"] <= 1 for r in rows.values())
    # the probe repeats searches on its own generator: the run grows as a plain run does
    import torch

    ds = load_dataset("digits", seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the benchmark runs: the same summation order
    conf = config.resolve(overrides, max_epochs=12, patience=None, restore_best=False, seed=0, device="cpu", progress=False)
    model, policy, train = config.build(conf, ds.n_features, ds.n_classes, ds.image_shape)
    try:
        plain = Trainer(model, policy, train).fit(ds.X_train, ds.y_train, ds.X_val, ds.y_val)
    finally:
        torch.set_num_threads(threads)
    (run,) = rec["runs"]
    assert run["hidden"] == list(plain.model.hidden)
    assert run["event_scores"] == pytest.approx([e.score for e in plain.growth_log], rel=1e-9) and plain.growth_log
    assert run["final_train_loss"] == pytest.approx(plain.history[-1]["train_loss"], rel=1e-9)


def test_growth_vs_classes_counts_units_per_number_of_classes(tmp_path):
    _run("growth_vs_classes.py", "--dataset", "digits", "--classes", "2", "10", "--seeds", "2", "--rows", "400",
         "--max-epochs", "3", "--out", str(tmp_path))
    rec = json.loads((tmp_path / "growth_vs_classes.json").read_text())
    y = load_digits().target
    assert [(r["K"], r["seed"]) for r in rec["rows"]] == [(2, 0), (2, 1), (10, 0), (10, 1)]
    for r in rec["rows"]:
        assert len(r["classes"].split()) == r["K"]
        available = int(np.isin(y, [int(c) for c in r["classes"].split()]).sum())
        assert r["rows"] == min(400, available)  # two digits classes hold about 360 images
        assert 0 <= r["units_at_start"] <= r["events"]
        # a 10-neuron start; no pruning by default, and the returned model may predate later events
        assert 10 + r["units_at_start"] <= r["width_returned"] <= 10 + r["events"]
    # on ten digits classes the check on the untrained network adds units (K - 1 = 9 directions to fill)
    assert all(r["units_at_start"] >= 1 for r in rec["rows"] if r["K"] == 10)
    assert [s["K"] for s in rec["summary"]] == [2, 10]
    assert rec["summary"][1]["units_at_start_mean"] == sum(r["units_at_start"] for r in rec["rows"][2:]) / 2
    assert rec["summary"][1]["events_mean"] == sum(r["events"] for r in rec["rows"][2:]) / 2
    assert (tmp_path / "growth_vs_classes.png").stat().st_size > 0
