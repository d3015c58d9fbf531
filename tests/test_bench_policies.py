"""Smoke test of bench/policies.py: digits, one seed, a few epochs, every row, temporary output folder."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd

BENCH = Path(__file__).resolve().parents[1] / "bench" / "policies.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_policies", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_policies_bench_digits(tmp_path):
    bench = _load()
    wanted = ["natural", "edges", "secnn", "fixed_mlp", "fixed_cnn"]
    out = bench.main(["--dataset", "digits", "--seeds", "1", "--epochs", "10", "--policies", "natural", "edges",
                      "secnn", "fixed", "--threads", "1", "--device", "cpu", "--out", str(tmp_path)])
    for name in ("policies_runs.csv", "policies_runs.json", "policies_summary.csv", "policies_summary.json", "policies.png"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    runs = pd.read_csv(tmp_path / "policies_runs.csv")
    assert sorted(runs["policy"]) == sorted(wanted)  # "fixed" = fixed_mlp + fixed_cnn, one row each for one seed
    assert set(pd.read_csv(tmp_path / "policies_summary.csv")["policy"]) == set(wanted)
    by = runs.set_index("policy")
    assert by.loc["edges", "model"] == "edge" and by.loc["secnn", "model"] == "cnn" and by.loc["fixed_cnn", "model"] == "cnn"
    assert by.loc["edges", "params_start"] < by.loc["fixed_mlp", "params_start"]  # logistic regression start
    assert by.loc["fixed_mlp", "params_start"] == by.loc["natural", "params_start"]
    assert by.loc["fixed_cnn", "params_start"] == by.loc["secnn", "params_start"]
    growth = by.loc[["natural", "edges", "secnn"]]
    assert (growth["params_final"] >= growth["params_start"]).all()
    assert (growth["params_end"] >= growth["params_start"]).all()
    assert growth["n_growth"].sum() >= 1  # secnn checks every epoch (natural: after epoch 10, the last, none)
    fixed = by.loc[["fixed_mlp", "fixed_cnn"]]
    assert (fixed["params_final"] == fixed["params_start"]).all() and (fixed["n_growth"] + fixed["n_prune"] == 0).all()
    assert runs["test_acc"].between(0.5, 1.0).all()  # 10-class digits: far above chance after 10 epochs
    record = json.loads((tmp_path / "policies_runs.json").read_text())
    assert record["overrides_of_defaults"]["edges"]["start_depth"] == 0
    assert record["settings"]["edges"]["max_events"] == 3 and record["machine"]["torch_threads"] == 1
    assert len(out["rows"]) == 5


def test_policies_bench_skips_cnn_rows_without_images(tmp_path):
    bench = _load()
    names, skipped = bench.expand(["natural", "fixed", "secnn"], has_images=False)
    assert names == ["natural", "fixed_mlp"] and skipped == ["fixed_cnn", "secnn"]
