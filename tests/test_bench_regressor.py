"""Smoke test of bench/regressor_vs_sklearn.py: friedman1, 2 folds, into a temporary folder."""

from __future__ import annotations

import json

import pytest
from conftest import import_bench

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")


@pytest.fixture
def bench():
    yield from import_bench("regressor_vs_sklearn")


def test_regressor_vs_sklearn_smoke(tmp_path, bench):
    rows = bench.main(["--datasets", "friedman1", "--folds", "2", "--device", "cpu", "--set", "max_epochs=30",
                       "--out", str(tmp_path)])
    for ext in ("csv", "json", "png"):
        assert (tmp_path / f"regressor_vs_sklearn.{ext}").stat().st_size > 0
    assert json.loads((tmp_path / "regressor_vs_sklearn.json").read_text())["settings"] == {"max_epochs": 30}
    senn, mlp = rows
    assert senn["estimator"] == "SENNRegressor" and mlp["estimator"].startswith("MLPRegressor")
    assert 0.5 < senn["r2_mean"] <= 1 and 0.5 < mlp["r2_mean"] <= 1 and len(senn["r2_folds"]) == 2
    assert senn["r2_gap"] == pytest.approx(senn["r2_mean"] - mlp["r2_mean"])
    assert senn["param_ratio"] == pytest.approx(senn["params_mean"] / 1201)  # 10·100 + 100 + 100 + 1 weights
    grows = min(senn["growth_events_per_fold"]) >= 1
    assert senn["target_met"] == (senn["r2_gap"] >= -0.01 and senn["param_ratio"] <= 0.5 and grows)
