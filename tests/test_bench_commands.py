"""Smoke tests of the bench/ commands that run as scripts: each runs, prints its table and writes
its CSV, JSON and PNG (figures are in BENCHMARKS.md; no timing is asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert hows == ["plain loop", "run_search, 1 concurrent", "run_search, 2 concurrent"]
    assert all(r["registered_versions"] >= 2 for r in rec["rows"][1:])  # at least one final model per trial
    assert (tmp_path / "search_overhead.png").stat().st_size > 0
