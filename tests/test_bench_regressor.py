"""Smoke test of bench/regressor_vs_sklearn.py: friedman1, 2 folds repeated with 2 seeds, into a temporary folder."""

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
    rows = bench.main(["--datasets", "friedman1", "--folds", "2", "--repeats", "2", "--device", "cpu", "--set", "max_epochs=30",
                       "--out", str(tmp_path)])
    for ext in ("csv", "json", "png"):
        assert (tmp_path / f"regressor_vs_sklearn.{ext}").stat().st_size > 0
    assert json.loads((tmp_path / "regressor_vs_sklearn.json").read_text())["settings"] == {"max_epochs": 30}
    senn, mlp = rows
    assert senn["estimator"] == "SENNRegressor" and mlp["estimator"].startswith("MLPRegressor")
    assert 0.5 < senn["r2_mean"] <= 1 and 0.5 < mlp["r2_mean"] <= 1 and len(senn["r2_folds"]) == 4
    assert senn["r2_folds"][:2] != senn["r2_folds"][2:]  # the second repeat fits with other seeds
    assert senn["r2_gap"] == pytest.approx(senn["r2_mean"] - mlp["r2_mean"])
    gaps = [a - b for a, b in zip(senn["r2_repeats"], mlp["r2_repeats"])]
    assert senn["r2_gap_repeats"] == pytest.approx(gaps, abs=1e-4) and len(gaps) == 2
    assert senn["r2_gap_se"] == pytest.approx(abs(gaps[0] - gaps[1]) / 2)  # std(ddof=1)/√2 of two values
    assert senn["param_ratio"] == pytest.approx(senn["params_mean"] / 1201)  # 10·100 + 100 + 100 + 1 weights
    grows = senn["fits_without_growth"] == 0
    assert senn["fits_without_growth"] >= (min(senn["growth_events_per_fold"]) == 0)  # repeat 0 is among the fits
    assert senn["target_met"] == (senn["r2_gap"] >= -0.01 and senn["param_ratio"] <= 0.5 and grows)
