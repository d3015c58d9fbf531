"""Smoke test of bench/growth_timing.py: wine, one fold, into a temporary folder."""

from __future__ import annotations

import json
import math

import pytest
from conftest import import_bench

pytest.importorskip("pandas")
pytest.importorskip("matplotlib")


@pytest.fixture
def bench():
    yield from import_bench("growth_timing")


def test_growth_timing_smoke(tmp_path, bench):
    from senn_automl.growth.natural import NaturalExpansionPolicy

    propose, grow = NaturalExpansionPolicy.propose, NaturalExpansionPolicy.grow
    table = bench.main(["--datasets", "wine", "--folds", "1", "--widths", "8", "--early-widths", "16",
                        "--device", "cpu", "--out", str(tmp_path)])
    # the measurement wrappers are gone after the run
    assert NaturalExpansionPolicy.propose is propose and NaturalExpansionPolicy.grow is grow
    for ext in ("csv", "json", "png"):
        assert (tmp_path / f"growth_timing.{ext}").stat().st_size > 0
    per_fold = json.loads((tmp_path / "growth_timing.json").read_text())["per_fold"]
    runs = {r["run"]: r for r in per_fold}
    assert set(runs) == {"default (grown)", "fixed [8]", "fixed [10]", "early growth from the start, capacity 16", "early growth from epoch 0, capacity 16",
                         "its architecture, fixed (from the start, capacity 16)",
                         "its architecture, fixed (from epoch 0, capacity 16)"}
    default = runs["default (grown)"]
    assert default["checks"] >= 1 and 0 <= default["heldout_passes"] <= default["checks"]
    assert math.isfinite(default["ratio_scoring"]) and math.isfinite(default["ratio_heldout"])
    assert 0 <= default["checks_before_best"] <= default["checks"]
    early, same = runs["early growth from the start, capacity 16"], runs["its architecture, fixed (from the start, capacity 16)"]
    assert same["arch"] == early["arch"] and 10 <= early["arch"][0] <= 16
    assert early["events_kept"] + early["events_discarded"] >= early["arch"][0] - 10
    for r in per_fold:
        assert 0.5 < r["acc"] <= 1 and r["best_val_loss"] > 0 and r["best_epoch"] >= 0
    assert {row["run"] for row in table} == set(runs) and all(row["folds"] == 1 for row in table)
