"""score() against hand-computed numbers and sklearn, its refusals, and the per-route baseline."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from ml_platform.lib.evaluation.gates import LOWER_IS_BETTER
from ml_platform.lib.evaluation.metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    EvaluationError,
    RouteMeanBaseline,
    score,
)

# Four rows small enough to score by hand.
ACTUAL = np.array([0.0, 10.0, 20.0, 30.0])
DELAYED = np.array([False, False, True, True])
PRED_DELAY = np.array([5.0, 10.0, 10.0, 30.0])  # errors 5, 0, -10, 0
PRED_PROB = np.array([0.1, 0.4, 0.35, 0.8])


def test_score_matches_hand_computed_values() -> None:
    result = score(ACTUAL, DELAYED, PRED_DELAY, PRED_PROB)
    assert set(result) == {*REGRESSION_METRICS, *CLASSIFICATION_METRICS}
    assert result["mae"] == pytest.approx(15.0 / 4)
    assert result["rmse"] == pytest.approx(math.sqrt((25.0 + 100.0) / 4))
    # Positive/negative pairs ranked right: (0.35 > 0.1), (0.8 > 0.1), (0.8 > 0.4); wrong: (0.35 < 0.4).
    assert result["roc_auc"] == pytest.approx(3 / 4)
    # Ranked 0.8 (pos), 0.4, 0.35 (pos), 0.1: precision 1/1 at the first positive, 2/3 at the second.
    assert result["pr_auc"] == pytest.approx((1.0 + 2.0 / 3.0) / 2)
    assert result["brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)
    assert all(type(v) is float for v in result.values())


def test_score_accepts_0_1_floats_like_bools() -> None:
    assert score(ACTUAL, DELAYED.astype(float), PRED_DELAY, PRED_PROB) == score(
        ACTUAL, DELAYED, PRED_DELAY, PRED_PROB
    )


def test_perfect_predictions() -> None:
    result = score(ACTUAL, DELAYED, ACTUAL, DELAYED.astype(float))
    assert result == {"mae": 0.0, "rmse": 0.0, "roc_auc": 1.0, "pr_auc": 1.0, "brier": 0.0}


def test_score_agrees_with_sklearn_on_random_data() -> None:
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        mean_absolute_error,
        mean_squared_error,
        roc_auc_score,
    )

    rng = np.random.default_rng(7)
    n = 500
    actual = rng.normal(5.0, 30.0, n)
    pred = actual + rng.normal(0.0, 10.0, n)
    outcome = actual > 15.0
    prob = np.clip(1 / (1 + np.exp(-(pred - 15.0) / 10.0)), 0.0, 1.0)
    result = score(actual, outcome, pred, prob)
    assert result["mae"] == pytest.approx(mean_absolute_error(actual, pred))
    assert result["rmse"] == pytest.approx(math.sqrt(mean_squared_error(actual, pred)))
    assert result["roc_auc"] == pytest.approx(roc_auc_score(outcome, prob))
    assert result["pr_auc"] == pytest.approx(average_precision_score(outcome, prob))
    assert result["brier"] == pytest.approx(brier_score_loss(outcome, prob))


def test_metric_directions_match_the_gates() -> None:
    assert set(REGRESSION_METRICS) | {"brier"} == LOWER_IS_BETTER
    assert not {"roc_auc", "pr_auc"} & LOWER_IS_BETTER


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        pytest.param(([], [], [], []), "no rows", id="empty"),
        pytest.param((ACTUAL, DELAYED, PRED_DELAY[:3], PRED_PROB), "pred_delay has 3 rows", id="length"),
        pytest.param(
            (np.array([0.0, np.nan, 20.0, np.nan]), DELAYED, PRED_DELAY, PRED_PROB),
            r"arr_delay has 2 NaN/inf value\(s\) out of 4 rows \(first at index 1\)",
            id="nan-target",
        ),
        pytest.param(
            (ACTUAL, DELAYED, np.array([5.0, 10.0, np.inf, 30.0]), PRED_PROB),
            r"pred_delay has 1 NaN/inf value\(s\) .* index 2",
            id="inf-prediction",
        ),
        pytest.param(
            (ACTUAL, DELAYED, PRED_DELAY, np.array([0.1, np.nan, 0.35, 0.8])),
            r"pred_prob has 1 NaN/inf",
            id="nan-probability",
        ),
        pytest.param(
            (ACTUAL, np.array([0.0, np.nan, 1.0, 1.0]), PRED_DELAY, PRED_PROB),
            r"is_delayed has 1 NaN/inf",
            id="nan-outcome",
        ),
        pytest.param(
            (ACTUAL, DELAYED, PRED_DELAY, np.array([0.1, 1.2, -0.1, 0.8])),
            r"pred_prob has 2 value\(s\) outside \[0, 1\] .* index 1",
            id="probability-range",
        ),
        pytest.param(
            (ACTUAL, np.array([0.0, 2.0, 1.0, 1.0]), PRED_DELAY, PRED_PROB), "must be 0/1", id="not-binary"
        ),
        pytest.param(
            (ACTUAL, np.zeros(4, dtype=bool), PRED_DELAY, PRED_PROB),
            r"single class \(all 4 rows on time\)",
            id="no-positive",
        ),
        pytest.param(
            (ACTUAL, np.ones(4, dtype=bool), PRED_DELAY, PRED_PROB),
            r"single class \(all 4 rows delayed\)",
            id="no-negative",
        ),
        pytest.param(
            (ACTUAL, [False, None, True, True], PRED_DELAY, PRED_PROB),
            r"is_delayed has 1 NaN/inf value\(s\) .* index 1",
            id="null-outcome",
        ),
        pytest.param(
            (ACTUAL, ["no", "no", "yes", "yes"], PRED_DELAY, PRED_PROB),
            "is_delayed is not numeric",
            id="strings",
        ),
        pytest.param(
            (ACTUAL.reshape(2, 2), DELAYED, PRED_DELAY, PRED_PROB), r"1-D, got shape \(2, 2\)", id="2d"
        ),
    ],
)
def test_score_refuses_meaningless_input(arrays: tuple[object, object, object, object], match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        score(*arrays)  # type: ignore[arg-type]


def test_evaluation_error_is_a_value_error() -> None:
    assert issubclass(EvaluationError, ValueError)


def _features(rows: list[tuple[str | None, float | None, bool | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "route": [r[0] for r in rows],
            "arr_delay": [r[1] for r in rows],
            "is_delayed": [r[2] for r in rows],
            "has_target": [r[1] is not None for r in rows],
        },
        schema={
            "route": pl.String,
            "arr_delay": pl.Float64,
            "is_delayed": pl.Boolean,
            "has_target": pl.Boolean,
        },
    )


TRAIN = _features(
    [
        ("JFK-LAX", 10.0, False),
        ("JFK-LAX", 20.0, True),
        ("EWR-ORD", 0.0, False),
        ("LGA-ATL", None, None),  # cancelled: unlabelled, so LGA-ATL stays unseen
        (None, 40.0, True),  # labelled but routeless: counts towards the global values only
    ]
)


def test_baseline_fits_per_route_means_on_labelled_rows() -> None:
    baseline = RouteMeanBaseline.fit(TRAIN)
    assert baseline.delay_by_route == {"JFK-LAX": 15.0, "EWR-ORD": 0.0}
    assert baseline.share_by_route == {"JFK-LAX": 0.5, "EWR-ORD": 0.0}
    assert baseline.global_delay == pytest.approx((10.0 + 20.0 + 0.0 + 40.0) / 4)
    assert baseline.global_share == pytest.approx(2 / 4)


def test_baseline_predicts_route_means_and_falls_back_to_global() -> None:
    baseline = RouteMeanBaseline.fit(TRAIN)
    frame = pl.DataFrame(
        {"route": ["EWR-ORD", "LGA-ATL", "JFK-LAX", None, "BOS-SFO"], "extra": [1, 2, 3, 4, 5]}
    )
    delay, share = baseline.predict(frame)
    assert delay.dtype == np.float64 and share.dtype == np.float64
    np.testing.assert_allclose(delay, [0.0, 17.5, 15.0, 17.5, 17.5])
    np.testing.assert_allclose(share, [0.0, 0.5, 0.5, 0.5, 0.5])


def test_baseline_predicts_categorical_routes_and_empty_frames() -> None:
    baseline = RouteMeanBaseline.fit(TRAIN)
    delay, _ = baseline.predict(
        pl.DataFrame({"route": ["JFK-LAX", "XXX-YYY"]}, schema={"route": pl.Categorical})
    )
    np.testing.assert_allclose(delay, [15.0, 17.5])
    delay, share = baseline.predict(pl.DataFrame({"route": []}, schema={"route": pl.String}))
    assert delay.shape == share.shape == (0,)


def test_baseline_scores_end_to_end() -> None:
    baseline = RouteMeanBaseline.fit(TRAIN)
    holdout = _features([("JFK-LAX", 30.0, True), ("EWR-ORD", 5.0, False), ("BOS-SFO", 0.0, False)])
    pred_delay, pred_prob = baseline.predict(holdout)
    result = score(holdout["arr_delay"].to_numpy(), holdout["is_delayed"].to_numpy(), pred_delay, pred_prob)
    assert result["mae"] == pytest.approx((15.0 + 5.0 + 17.5) / 3)
    assert result["brier"] == pytest.approx((0.5**2 + 0.0**2 + 0.5**2) / 3)


def test_baseline_refuses_unlabelled_training() -> None:
    unlabelled = _features([("JFK-LAX", None, None), ("EWR-ORD", None, None)])
    with pytest.raises(EvaluationError, match=r"no labelled rows .* among 2 training rows"):
        RouteMeanBaseline.fit(unlabelled)
    with pytest.raises(EvaluationError, match="no labelled rows"):
        RouteMeanBaseline.fit(unlabelled.clear())


def test_baseline_refuses_missing_columns_and_inconsistent_targets() -> None:
    with pytest.raises(EvaluationError, match=r"lacks column\(s\) \['has_target'\]"):
        RouteMeanBaseline.fit(TRAIN.drop("has_target"))
    broken = TRAIN.with_columns(has_target=pl.lit(True))
    with pytest.raises(EvaluationError, match=r"1 labelled row\(s\) with null arr_delay"):
        RouteMeanBaseline.fit(broken)
    with pytest.raises(EvaluationError, match="lacks column 'route'"):
        RouteMeanBaseline.fit(TRAIN).predict(pl.DataFrame({"origin": ["JFK"]}))
