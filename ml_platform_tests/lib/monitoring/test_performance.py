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


@pytest.mark.parametrize(
    "at_limit",
    [
        # exactly 5 % worse skill; the float ratio lands a hair above (the first two) or below 0.05
        Decay("rmse", 63.0, 60.0, 60.0, 60.0, 0.05),
        Decay("roc_auc", 0.6 / 1.05, 0.6, 0.6, 0.6, 0.05),
        Decay("brier", 0.105, 0.1, 0.1, 0.1, 0.05),
        Decay("mae", 2.0, 4.0, 2.0, 4.0, 0.0),  # a zero threshold: no change is not decay
    ],
    ids=["rmse-above-in-floats", "roc_auc-above-in-floats", "brier-below-in-floats", "zero"],
)
def test_exactly_at_the_threshold_is_not_degraded(at_limit: Decay):
    assert at_limit.degradation == pytest.approx(at_limit.threshold, abs=1e-12)
    assert not at_limit.degraded
    assert at_limit.summary.endswith(f"<= {at_limit.threshold:.0%})"), at_limit.summary


def test_the_threshold_is_exclusive_and_improvement_is_never_decay():
    assert not Decay("brier", 0.1049, 0.1, 0.1, 0.1, 0.05).degraded
    assert Decay("brier", 0.10501, 0.1, 0.1, 0.1, 0.05).degraded  # 5.01 %: just past it
    assert Decay("brier", 0.106, 0.1, 0.1, 0.1, 0.05).degraded
    improved = Decay("roc_auc", 0.8, 0.6, 0.7, 0.6, 0.05)
    assert improved.degradation < 0 and not improved.degraded


def test_a_metric_missing_from_a_table_is_named():
    with pytest.raises(DecayError, match="brier: no value in the live baseline, evaluation model metrics"):
        judge_decay({"brier": 0.2}, {}, {}, {"brier": 0.2}, ["brier"], 0.05)
