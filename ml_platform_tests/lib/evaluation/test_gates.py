"""The promotion gates: direction of each metric, tolerance, missing champion, evidence."""

from __future__ import annotations

import json

import pytest

from ml_platform.lib.evaluation.gates import (
    BEATS_BASELINE,
    DEFAULT_GATE_METRICS,
    LOWER_IS_BETTER,
    NOT_WORSE_THAN_CHAMPION,
    GateResult,
    beats_baseline,
    not_worse_than_champion,
)

#: The metrics these cases judge (explicit: the default set is asserted separately).
GATE = ("mae", "brier")
MODEL = {"mae": 10.0, "rmse": 15.0, "roc_auc": 0.75, "pr_auc": 0.5, "brier": 0.15}


def test_directions() -> None:
    assert {"mae", "rmse", "brier"} == LOWER_IS_BETTER
    assert DEFAULT_GATE_METRICS == ("rmse", "brier")


def test_beats_baseline_passes_when_better_on_every_metric() -> None:
    baseline = {"mae": 12.0, "brier": 0.2}
    result = beats_baseline(MODEL, baseline, GATE)
    assert result.name == BEATS_BASELINE
    assert result.passed
    assert result.comparisons == {
        "mae": {"model": 10.0, "reference": 12.0},
        "brier": {"model": 0.15, "reference": 0.2},
    }
    assert "better than the per-route historical mean on mae, brier" in result.detail


def test_beats_baseline_fails_on_one_metric_and_names_it() -> None:
    result = beats_baseline(MODEL, {"mae": 12.0, "brier": 0.1}, GATE)
    assert not result.passed
    assert result.detail.startswith("not better")
    assert "brier (0.15 vs 0.1)" in result.detail
    assert "mae" not in result.detail.split(" on ", 1)[1]


def test_beats_baseline_requires_strict_improvement() -> None:
    assert not beats_baseline(MODEL, {"mae": 10.0, "brier": 0.2}, GATE).passed


def test_beats_baseline_auc_is_higher_is_better() -> None:
    assert beats_baseline(MODEL, {"roc_auc": 0.70}, metrics=("roc_auc",)).passed
    lower = beats_baseline(MODEL, {"roc_auc": 0.80}, metrics=("roc_auc",))
    assert not lower.passed
    assert "roc_auc (0.75 vs 0.8)" in lower.detail


def test_no_champion_passes_without_comparisons() -> None:
    result = not_worse_than_champion(MODEL, None, tolerance=0.0, metrics=GATE)
    assert result.name == NOT_WORSE_THAN_CHAMPION
    assert result.passed
    assert result.comparisons == {}
    assert "no champion" in result.detail


def test_within_tolerance_passes() -> None:
    # 2% slack: mae may reach 10.2 against a champion's 10.0, brier 0.153 against 0.15.
    champion = {"mae": 9.85, "brier": 0.149}
    result = not_worse_than_champion(MODEL, champion, tolerance=0.02, metrics=GATE, champion_version="3")
    assert result.passed
    assert result.detail == "within 2.0% of champion v3 on mae, brier"
    assert result.comparisons["mae"] == {"model": 10.0, "reference": 9.85}


def test_beyond_tolerance_fails() -> None:
    champion = {"mae": 9.0, "brier": 0.149}  # mae 10 > 9 * 1.02
    result = not_worse_than_champion(MODEL, champion, tolerance=0.02, metrics=GATE)
    assert not result.passed
    assert result.detail == "worse than the champion by more than 2.0% on mae (10 vs 9)"


def test_champion_tolerance_auc_is_higher_is_better() -> None:
    metrics = ("roc_auc",)
    # Higher AUC than the champion always passes, even with zero tolerance.
    assert not_worse_than_champion(MODEL, {"roc_auc": 0.60}, 0.0, metrics).passed
    # 0.75 is within 5% below 0.78 (slack 0.039) but not within 1% (slack 0.0078).
    assert not_worse_than_champion(MODEL, {"roc_auc": 0.78}, 0.05, metrics).passed
    assert not not_worse_than_champion(MODEL, {"roc_auc": 0.78}, 0.01, metrics).passed


@pytest.mark.parametrize("passed", [True, False])
def test_gate_result_round_trips_through_json(passed: bool) -> None:
    result = not_worse_than_champion(MODEL, {"mae": 10.0 if passed else 1.0, "brier": 0.15}, 0.0, GATE)
    assert result.passed is passed
    assert GateResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
