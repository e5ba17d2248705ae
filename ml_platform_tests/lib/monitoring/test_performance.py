"""Live decay is judged on skill over the naive baseline, relative to the skill at evaluation."""

import pytest

from ml_platform.lib.monitoring.performance import Decay, DecayError, judge_decay, skill


def test_skill_is_a_ratio_where_lower_is_better():
    """RMSE 40 against a baseline of 50 is skill 0.8; ROC AUC 0.75 against 0.6 is 0.8 too."""
    assert skill("rmse", 40.0, 50.0) == pytest.approx(0.8)
    assert skill("roc_auc", 0.75, 0.6) == pytest.approx(0.8)


def test_skill_refuses_a_zero_denominator_and_an_unknown_metric():
    with pytest.raises(DecayError, match="brier: the baseline scored 0"):
        skill("brier", 0.1, 0.0)
    with pytest.raises(DecayError, match="roc_auc: the model scored 0"):
        skill("roc_auc", 0.0, 0.6)
    with pytest.raises(DecayError, match="unknown metric 'r2'"):
        skill("r2", 1.0, 1.0)


def test_a_harder_day_is_not_decay_when_the_baseline_suffers_as_much():
    """Live RMSE 50% higher than at evaluation, baseline too: same skill, no decay."""
    (d,) = judge_decay({"rmse": 60.0}, {"rmse": 75.0}, {"rmse": 40.0}, {"rmse": 50.0}, ["rmse"], 0.05)
    assert d.degradation == pytest.approx(0.0, abs=1e-12)
    assert not d.degraded


def test_losing_the_edge_over_the_baseline_is_decay():
    """Skill 0.8 at evaluation, 0.9 live: 12.5% worse, past 5%."""
    (d,) = judge_decay({"rmse": 45.0}, {"rmse": 50.0}, {"rmse": 40.0}, {"rmse": 50.0}, ["rmse"], 0.05)
    assert d.live_skill == pytest.approx(0.9)
    assert d.evaluation_skill == pytest.approx(0.8)
    assert d.degradation == pytest.approx(0.125)
    assert d.degraded
    assert d.summary == "rmse skill 0.900 vs 0.800 at evaluation (+12.5% > 5%)"
    assert d.to_dict()["degraded"] is True


def test_the_threshold_is_exclusive_and_improvement_is_never_decay():
    at_limit = Decay("brier", 0.105, 0.1, 0.1, 0.1, 0.05)
    assert at_limit.degradation == pytest.approx(0.05)
    assert not Decay("brier", 0.1049, 0.1, 0.1, 0.1, 0.05).degraded
    assert Decay("brier", 0.106, 0.1, 0.1, 0.1, 0.05).degraded
    assert Decay("roc_auc", 0.8, 0.6, 0.7, 0.6, 0.05).degradation < 0


def test_a_metric_missing_from_a_table_is_named():
    with pytest.raises(DecayError, match="brier: no value in the live baseline, evaluation model metrics"):
        judge_decay({"brier": 0.2}, {}, {}, {"brier": 0.2}, ["brier"], 0.05)
