"""Smoke test of bench/growth_vs_fixed.py: wine, 2 folds and a 2-width grid, into a temporary folder."""

from __future__ import annotations

import json

import pytest
from conftest import import_bench

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")


@pytest.fixture
def bench():
    yield from import_bench("growth_vs_fixed")


def test_growth_vs_fixed_smoke(tmp_path, bench):
    rows = bench.main(["--datasets", "wine", "--folds", "2", "--widths", "8", "16", "--device", "cpu",
                       "--set", "expansion_interval=1", "--set", "accept_on=scoring", "--out", str(tmp_path)])
    for ext in ("csv", "json", "png"):
        assert (tmp_path / f"growth_vs_fixed.{ext}").stat().st_size > 0
    record = json.loads((tmp_path / "growth_vs_fixed.json").read_text())
    # --set splits into an estimator parameter and a policy parameter
    assert record["settings"] == {"estimator": {"expansion_interval": 1}, "policy": {"accept_on": "scoring"}}
    (row,) = rows
    folds = [r for r in record["per_fold"] if r["fold"] >= 0]
    assert len(folds) == 2 and row["folds_with_growth"] == sum(r["events"] > 0 for r in folds) > 0
    for r in folds:  # the fixed net has the grown net's architecture
        assert r["arch"] and r["params"] > 0 and 0.8 < r["grown_acc"] <= 1 and 0.8 < r["fixed_acc"] <= 1
    mean = lambda k: sum(r[k] for r in folds) / 2  # noqa: E731
    assert row["diff_pt"] == pytest.approx(100 * (mean("grown_acc") - mean("fixed_acc")), abs=0.01)
    assert row["target"] == ("met" if mean("grown_acc") >= mean("fixed_acc") - bench.TARGET_GAP else "missed")
    assert set(row["width_grid"]) == {8, 16} and row["right_width"] in (8, 16)
    with pytest.raises(SystemExit, match="use key=value"):
        bench.parse_settings(["tau"])
