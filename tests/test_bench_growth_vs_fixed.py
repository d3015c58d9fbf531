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

    def mean(k):
        return sum(r[k] for r in folds) / 2

    assert row["diff_pt"] == pytest.approx(100 * (mean("grown_acc") - mean("fixed_acc")), abs=0.01)
    assert row["target"] == ("met" if mean("grown_acc") >= mean("fixed_acc") - bench.TARGET_GAP else "missed")
    assert set(row["width_grid"]) == {8, 16} and row["right_width"] in (8, 16)
    with pytest.raises(SystemExit, match="use key=value"):
        bench.parse_settings(["tau"])
    assert bench.parse_settings(["lr=1e-3"]) == ({"lr": 0.001}, {})  # YAML 1.1 alone would give the string "1e-3"


def test_growth_vs_fixed_gromo_peer(tmp_path, bench):
    """``--peers gromo``: a GroMo GrowingMLP grown on the same folds, in the row, the per-fold entries and the JSON."""
    pytest.importorskip("gromo")
    rows = bench.main(["--datasets", "wine", "--folds", "2", "--peers", "gromo", "--device", "cpu",
                       "--set", "max_width=16", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "growth_vs_fixed.json").read_text())
    assert record["peers"]["gromo"]["version"] and record["peers"]["gromo"]["settings"]["max_width"] == 16
    (row,) = rows
    folds = [r for r in record["per_fold"] if r["fold"] >= 0]
    assert len(folds) == 2
    for r in folds:
        assert 0.5 < r["gromo_acc"] <= 1 and 1 <= r["gromo_width"] <= 16 and r["gromo_params"] > 0 and r["fit_s_gromo"] > 0
    assert row["gromo"] == pytest.approx(sum(r["gromo_acc"] for r in folds) / 2, abs=1e-4) and row["gromo"] > 0.5
    assert row["gromo_width"] >= 1 and row["gromo_params"] > 0 and len(row["gromo_steps"]) == 2
    with pytest.raises(SystemExit, match="no such setting"):
        bench._gromo.settings(epochs=3)


def test_growth_vs_fixed_gromo_missing(tmp_path, bench, monkeypatch):
    """Without GroMo, ``--peers gromo`` stops before any fold with the install line."""
    import sys

    for mod in [m for m in sys.modules if m == "gromo" or m.startswith("gromo.")] or ["gromo"]:
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(SystemExit, match="pip install gromo"):
        bench.main(["--datasets", "wine", "--folds", "2", "--peers", "gromo", "--device", "cpu", "--out", str(tmp_path)])
    assert not (tmp_path / "growth_vs_fixed.json").exists()
