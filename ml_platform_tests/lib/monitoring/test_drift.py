"""Drift scores from whylogs sketches: KS, PSI, mean shift, TVD, missing, and their verdicts.

The scores are checked against their textbook definitions (scipy's KS, a hand-computed PSI), and
``score_drift`` against synthetic days: a reference merged from 14 stable days must not alarm on a
15th stable day, and must err, on the right feature and measure, on a shifted one.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from scipy.stats import ks_2samp

from ml_platform.lib.features.transforms import WEATHER_COLUMNS, aggregate_names
from ml_platform.lib.monitoring.drift import (
    DEFAULT_THRESHOLDS,
    MEASURES,
    PSI_FLOOR,
    DriftError,
    DriftPolicy,
    FeatureDrift,
    Measure,
    Threshold,
    categorical_scores,
    default_overrides,
    mean_shift,
    numeric_scores,
    psi,
    score_drift,
    score_feature,
    worst,
)
from ml_platform.lib.monitoring.profiles import kll, merge, moments, profile_frame

DAY = date(2013, 3, 1)
#: A ``FeatureDrift.breaches`` entry: measure, score, limit, level.
BREACH = re.compile(r"^(psi|ks|mean_shift|tvd|missing) (\S+) >= (\S+) \((warn|error)\)$")


def _sketch(values: np.ndarray) -> Any:
    """The KLL sketch of one day's ``values``."""
    return kll(profile_frame(pl.DataFrame({"x": values}), DAY), "x")


def _ks(reference: np.ndarray, current: np.ndarray) -> float:
    return numeric_scores(_sketch(reference), _sketch(current))["ks"]


# --- KS and PSI of numeric sketches ---------------------------------------------------------------


@pytest.mark.parametrize(("n_ref", "n_cur"), [(200, 200), (150, 90), (37, 200), (5, 11)])
@pytest.mark.parametrize("seed", range(4))
def test_ks_equals_scipy_for_small_continuous_samples(seed: int, n_ref: int, n_cur: int) -> None:
    """Up to 200 values a side every value is on the comparison grid: KS is scipy's, to rounding."""
    rng = np.random.default_rng(seed)
    reference = rng.normal(0.0, 1.0, n_ref)
    current = rng.normal(rng.normal(0.0, 0.5), rng.uniform(0.7, 1.5), n_cur)
    assert _ks(reference, current) == pytest.approx(ks_2samp(reference, current).statistic, abs=1e-9)


@pytest.mark.parametrize(("n_ref", "n_cur"), [(900, 1000), (1023, 400), (50, 700)])
@pytest.mark.parametrize("seed", range(4))
def test_ks_equals_scipy_for_integer_samples_with_ties(seed: int, n_ref: int, n_cur: int) -> None:
    """Integer-valued features (counts, minutes): ties sit on the right side of each CDF step."""
    rng = np.random.default_rng(100 + seed)
    reference = rng.poisson(5.0, n_ref).astype(float)
    current = rng.poisson(rng.uniform(4.0, 6.5), n_cur).astype(float)
    assert _ks(reference, current) == pytest.approx(ks_2samp(reference, current).statistic, abs=1e-9)


def test_ks_of_a_constant_against_a_spread_sample() -> None:
    """A point mass: the largest gap is just below or at the point, as scipy finds it."""
    reference = np.full(50, 3.0)
    current = np.array([1.0, 2.0, 3.0, 4.0, 5.0] * 20)
    assert _ks(reference, current) == pytest.approx(ks_2samp(reference, current).statistic, abs=1e-9)


def _continuous_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Continuous samples of 700 and 800 rows (one day each: exact sketches, more than 200 values)."""
    pairs = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        pairs.append((rng.normal(0.0, 1.0, 800), rng.normal(0.1, 1.1, 700)))
    return pairs


def test_ks_equals_scipy_for_continuous_samples_under_kll_k() -> None:
    """A day's sketch is exact (< KLL_K rows) and is compared at every value: scipy's KS exactly."""
    for reference, current in _continuous_pairs():
        assert _ks(reference, current) == pytest.approx(ks_2samp(reference, current).statistic, abs=1e-9)


def test_identical_sketches_have_zero_psi_and_ks() -> None:
    values = np.random.default_rng(1).normal(10.0, 3.0, 900)
    scores = numeric_scores(_sketch(values), _sketch(values.copy()))
    assert scores["psi"] < 1e-9
    assert scores["ks"] < 1e-9


def test_psi_of_a_one_sd_shift_is_large() -> None:
    """A normal moved by one standard deviation is far past the 0.25 "act" line."""
    rng = np.random.default_rng(2)
    scores = numeric_scores(_sketch(rng.normal(0.0, 1.0, 900)), _sketch(rng.normal(1.0, 1.0, 900)))
    assert scores["psi"] > 0.5
    assert scores["ks"] > 0.3


def test_psi_of_two_draws_of_one_distribution_is_small() -> None:
    rng = np.random.default_rng(3)
    scores = numeric_scores(_sketch(rng.normal(0.0, 1.0, 900)), _sketch(rng.normal(0.0, 1.0, 900)))
    assert scores["psi"] < DEFAULT_THRESHOLDS["psi"].warn
    assert scores["ks"] < DEFAULT_THRESHOLDS["ks"].warn


def test_numeric_scores_of_an_empty_sketch_raise() -> None:
    empty = kll(profile_frame(pl.DataFrame({"x": pl.Series([None, None], dtype=pl.Float64)}), DAY), "x")
    with pytest.raises(DriftError, match="empty distribution"):
        numeric_scores(_sketch(np.arange(10.0)), empty)


# --- mean shift -----------------------------------------------------------------------------------


def test_mean_shift_of_equal_means_is_zero() -> None:
    assert mean_shift(10.0, 3.0, 10.0) == 0.0
    assert mean_shift(10.0, 0.0, 10.0) == 0.0  # a constant that stays put is no shift


def test_mean_shift_is_in_reference_standard_deviations() -> None:
    assert mean_shift(10.0, 3.0, 16.0) == pytest.approx(2.0)
    assert mean_shift(10.0, 3.0, 4.0) == pytest.approx(2.0)  # either direction


def test_mean_shift_of_a_two_sd_shift_from_profiles() -> None:
    """Day rows moved by two standard deviations: about 2, exactly the gap over the reference std."""
    values = np.random.default_rng(4).normal(10.0, 3.0, 900)
    reference = profile_frame(pl.DataFrame({"x": values}), DAY)
    current = profile_frame(pl.DataFrame({"x": values + 6.0}), DAY)
    ref_mean, ref_std = moments(reference, "x")
    shift = mean_shift(ref_mean, ref_std, moments(current, "x")[0])
    assert shift == pytest.approx(6.0 / values.std(ddof=1), rel=1e-9)
    assert shift == pytest.approx(2.0, abs=0.1)


def test_mean_shift_from_a_constant_reference_is_infinite() -> None:
    assert mean_shift(5.0, 0.0, 5.5) == math.inf


def test_constant_reference_errs_and_still_serialises() -> None:
    """A constant reference with a moved mean: mean_shift inf, an error, stored as the largest float."""
    reference = profile_frame(pl.DataFrame({"x": [3.0] * 20}), DAY)
    current = profile_frame(pl.DataFrame({"x": [4.0] * 20}), DAY)
    result = score_feature(reference, current, "x", DriftPolicy(("x",)))
    assert result.scores["mean_shift"] == math.inf
    assert result.severity == "error"
    as_json = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert as_json["scores"]["mean_shift"] == 1e308


# --- categorical scores ---------------------------------------------------------------------------


def test_tvd_is_the_share_of_rows_that_changed_category() -> None:
    assert categorical_scores({"A": 50, "B": 50}, {"A": 100})["tvd"] == pytest.approx(0.5)
    assert categorical_scores({"A": 50, "B": 50}, {"A": 5, "B": 5})["tvd"] == 0.0
    assert categorical_scores({"A": 10}, {"B": 3})["tvd"] == pytest.approx(1.0)


def test_categorical_psi_by_hand_with_the_floor() -> None:
    """{A: .5, B: .5} against {A: 1, B: 0}: B's empty share is clipped to PSI_FLOOR before the log."""
    expected = (1.0 - 0.5) * math.log(1.0 / 0.5) + (PSI_FLOOR - 0.5) * math.log(PSI_FLOOR / 0.5)
    assert categorical_scores({"A": 50, "B": 50}, {"A": 100})["psi"] == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(4.6043, abs=1e-4)


def test_categorical_psi_is_symmetric() -> None:
    """PSI sums (a - e) * log(a / e), the same with the two tables swapped."""
    one, other = {"UA": 30, "B6": 25, "EV": 45}, {"UA": 60, "DL": 10, "EV": 30}
    forward = categorical_scores(one, other)
    backward = categorical_scores(other, one)
    assert forward["psi"] == pytest.approx(backward["psi"], rel=1e-12)
    assert forward["tvd"] == pytest.approx(backward["tvd"], rel=1e-12)


def test_psi_of_share_vectors() -> None:
    assert psi(np.array([0.25, 0.75]), np.array([0.25, 0.75])) == 0.0
    by_hand = (0.5 - 0.25) * math.log(0.5 / 0.25) + (0.5 - 0.75) * math.log(0.5 / 0.75)
    assert psi(np.array([0.25, 0.75]), np.array([0.5, 0.5])) == pytest.approx(by_hand)


@pytest.mark.parametrize(("reference", "current"), [({}, {"A": 1}), ({"A": 1}, {}), ({"A": 0}, {"A": 3})])
def test_empty_category_table_raises(reference: dict[str, int], current: dict[str, int]) -> None:
    with pytest.raises(DriftError, match="empty category table"):
        categorical_scores(reference, current)


# --- score_drift on synthetic days ----------------------------------------------------------------

CARRIERS = ("UA", "B6", "EV", "DL", "AA")
CARRIER_MIX = (0.3, 0.25, 0.2, 0.15, 0.1)
DISTANCES = np.array([200, 502, 733, 1008, 2475])
DISTANCE_MIX = (0.2, 0.3, 0.2, 0.2, 0.1)
FEATURES = ("temp", "carrier", "distance")
#: Temperature is a day-level feature (one sky a day): judged by its mean only.
TEMP_OVERRIDE: dict[str, dict[Measure, Threshold | None]] = {
    "temp": {"psi": None, "ks": None, "mean_shift": Threshold(3.0, 5.0)}
}
REFERENCE_DAYS = 14


def _day(rng: np.random.Generator) -> pl.DataFrame:
    """One stable day of flights: the day's own temperature level, a fixed carrier and route mix."""
    rows = int(rng.integers(850, 1000))
    level = 40.0 + rng.normal(0.0, 2.0)
    return pl.DataFrame(
        {
            "temp": level + rng.normal(0.0, 3.5, rows),
            "carrier": rng.choice(CARRIERS, rows, p=CARRIER_MIX),
            "distance": rng.choice(DISTANCES, rows, p=DISTANCE_MIX) + rng.integers(-20, 21, rows),
        }
    )


@pytest.fixture(scope="module")
def reference() -> Any:
    """The reference profile: the merge of 14 stable days' profiles."""
    rng = np.random.default_rng(2013)
    return merge([profile_frame(_day(rng), DAY + timedelta(days=d)) for d in range(REFERENCE_DAYS)])


@pytest.fixture(scope="module")
def next_day() -> pl.DataFrame:
    """A 15th stable day, drawn like the reference's days."""
    return _day(np.random.default_rng(99))


@pytest.fixture(scope="module")
def policy() -> DriftPolicy:
    return DriftPolicy(FEATURES, overrides=TEMP_OVERRIDE)


def _score(reference: Any, frame: pl.DataFrame, policy: DriftPolicy) -> dict[str, FeatureDrift]:
    results = score_drift(reference, profile_frame(frame, DAY + timedelta(days=REFERENCE_DAYS)), policy)
    ranks = [{"ok": 0, "warn": 1, "error": 2}[r.severity] for r in results]
    assert ranks == sorted(ranks, reverse=True), "results are sorted worst first"
    assert sorted(r.feature for r in results) == sorted(policy.features)
    return {r.feature: r for r in results}


def test_a_stable_day_raises_no_alarm(reference: Any, next_day: pl.DataFrame, policy: DriftPolicy) -> None:
    """The false-alarm property: a day like the reference's days is ok on every feature."""
    results = _score(reference, next_day, policy)
    assert {f: r.severity for f, r in results.items()} == dict.fromkeys(FEATURES, "ok")
    assert all(r.breaches == [] for r in results.values())
    assert results["temp"].reference_rows > 12_000
    assert results["temp"].current_rows == next_day.height
    assert set(results["temp"].scores) == set(MEASURES["numeric"])
    assert set(results["carrier"].scores) == set(MEASURES["categorical"])


def test_stable_days_never_alarm(reference: Any, policy: DriftPolicy) -> None:
    """Ten more stable days, ten times ok."""
    for seed in range(10):
        results = _score(reference, _day(np.random.default_rng(1000 + seed)), policy)
        assert worst(list(results.values())) == "ok", {f: r.scores for f, r in results.items()}


def test_a_hot_day_errs_on_temp_by_mean_shift(
    reference: Any, next_day: pl.DataFrame, policy: DriftPolicy
) -> None:
    """temp + 27: an error through mean_shift; psi and ks are reported but not judged."""
    results = _score(reference, next_day.with_columns(pl.col("temp") + 27.0), policy)
    temp = results["temp"]
    assert temp.severity == "error"
    assert next(iter(results)) == "temp"  # worst first
    assert temp.scores["mean_shift"] >= 5.0
    assert temp.thresholds["psi"] is None and temp.thresholds["ks"] is None
    assert temp.scores["psi"] > DEFAULT_THRESHOLDS["psi"].error  # reported: far past any line
    assert temp.scores["ks"] == pytest.approx(1.0)
    assert temp.breaches == [f"mean_shift {temp.scores['mean_shift']:.3g} >= 5 (error)"]
    assert results["carrier"].severity == results["distance"].severity == "ok"


def test_a_carrier_takeover_errs_on_carrier(
    reference: Any, next_day: pl.DataFrame, policy: DriftPolicy
) -> None:
    """Half the day's rows moved to one carrier: an error by tvd and psi; the others stay ok."""
    moved = np.random.default_rng(7).permutation(next_day.height)[: next_day.height // 2]
    frame = next_day.with_columns(
        pl.when(pl.int_range(pl.len()).is_in(moved))
        .then(pl.lit("EV"))
        .otherwise(pl.col("carrier"))
        .alias("carrier")
    )
    results = _score(reference, frame, policy)
    carrier = results["carrier"]
    assert next(iter(results)) == "carrier"
    assert carrier.severity == "error"
    assert carrier.scores["tvd"] >= DEFAULT_THRESHOLDS["tvd"].error
    assert carrier.scores["tvd"] == pytest.approx(0.4, abs=0.05)  # half of the 80% not on EV moved
    assert carrier.scores["psi"] >= DEFAULT_THRESHOLDS["psi"].error
    assert {m for m, _, _, _ in map(_breach, carrier.breaches)} == {"psi", "tvd"}
    assert results["temp"].severity == results["distance"].severity == "ok"


def _breach(text: str) -> tuple[str, float, float, str]:
    match = BREACH.match(text)
    assert match, text
    return match[1], float(match[2]), float(match[3]), match[4]


def test_breaches_name_measure_score_limit_and_level(reference: Any, next_day: pl.DataFrame) -> None:
    """Each breach says which measure, its score, the limit it reached and the level."""
    policy = DriftPolicy(FEATURES, overrides={"temp": {"mean_shift": Threshold(0.5, 10.0)}})
    results = _score(reference, next_day.with_columns(pl.col("temp") + 27.0), policy)
    temp = results["temp"]
    parsed = {m: (score, limit, level) for m, score, limit, level in map(_breach, temp.breaches)}
    score, limit, level = parsed["mean_shift"]
    assert score == pytest.approx(temp.scores["mean_shift"], rel=1e-2)
    assert (limit, level) == (0.5, "warn")
    assert parsed["psi"][1:] == (0.25, "error")
    assert parsed["ks"][1:] == (0.2, "error")
    assert "missing" not in parsed


def test_to_dict_is_json_with_null_thresholds(
    reference: Any, next_day: pl.DataFrame, policy: DriftPolicy
) -> None:
    """to_dict survives json.dumps; a reported-only measure's threshold is null."""
    results = _score(reference, next_day, policy)
    text = json.dumps([r.to_dict() for r in results.values()], allow_nan=False)
    back = {d["feature"]: d for d in json.loads(text)}
    assert back["temp"]["thresholds"]["psi"] is None
    assert back["temp"]["thresholds"]["ks"] is None
    assert back["temp"]["thresholds"]["mean_shift"] == {"warn": 3.0, "error": 5.0}
    assert back["carrier"]["kind"] == "categorical"
    assert back["carrier"]["severity"] == "ok"
    assert back["carrier"]["scores"]["tvd"] == pytest.approx(results["carrier"].scores["tvd"], abs=1e-6)
    assert back["distance"]["current_rows"] == next_day.height


# --- missing features and missing values ----------------------------------------------------------


def test_a_feature_missing_from_a_profile_is_named(reference: Any, next_day: pl.DataFrame) -> None:
    current = profile_frame(next_day.drop("distance"), DAY)
    with pytest.raises(DriftError, match="distance"):
        score_drift(reference, current, DriftPolicy(FEATURES))
    with pytest.raises(DriftError, match="wind_gust"):
        score_drift(reference, profile_frame(next_day, DAY), DriftPolicy((*FEATURES, "wind_gust")))
    with pytest.raises(DriftError, match="'distance' is not in the profile"):
        score_feature(reference, current, "distance", DriftPolicy(FEATURES))


def test_a_feature_of_another_kind_is_named(reference: Any, next_day: pl.DataFrame) -> None:
    current = profile_frame(next_day.with_columns(pl.col("distance").cast(pl.String)), DAY)
    with pytest.raises(DriftError, match="'distance' is numeric in the reference"):
        score_drift(reference, current, DriftPolicy(FEATURES))


def test_an_entirely_null_column_is_judged_by_missing_only(reference: Any, next_day: pl.DataFrame) -> None:
    """A feed that stopped delivering a column: no distribution to compare, missing share 1.0 errs."""
    frame = next_day.with_columns(
        pl.lit(None, dtype=pl.Float64).alias("temp"), pl.lit(None, dtype=pl.String).alias("carrier")
    )
    results = _score(reference, frame, DriftPolicy(FEATURES))
    for feature in ("temp", "carrier"):
        result = results[feature]
        assert result.scores == {"missing": 1.0}
        assert list(result.thresholds) == ["missing"]
        assert result.severity == "error"
        assert result.breaches == ["missing 1 >= 0.3 (error)"]
    assert results["distance"].severity == "ok"


def test_a_partly_null_column_warns_by_missing(reference: Any, next_day: pl.DataFrame) -> None:
    """A fifth of the day's temperatures missing: the null share moved 0.2, a warning."""
    frame = next_day.with_columns(
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(None).otherwise(pl.col("temp")).alias("temp")
    )
    temp = _score(reference, frame, DriftPolicy(FEATURES, overrides=TEMP_OVERRIDE))["temp"]
    assert temp.scores["missing"] == pytest.approx(0.2, abs=0.01)
    assert temp.severity == "warn"
    assert temp.breaches == [f"missing {temp.scores['missing']:.3g} >= 0.1 (warn)"]


def test_an_empty_day_raises(reference: Any, next_day: pl.DataFrame) -> None:
    with pytest.raises(DriftError):
        score_drift(reference, profile_frame(next_day.clear(), DAY), DriftPolicy(FEATURES))


# --- thresholds and policies ----------------------------------------------------------------------


def test_threshold_judges_at_or_above() -> None:
    threshold = Threshold(0.1, 0.25)
    assert threshold.judge(0.0) == "ok"
    assert threshold.judge(0.0999) == "ok"
    assert threshold.judge(0.1) == "warn"
    assert threshold.judge(0.25) == "error"
    assert threshold.judge(math.inf) == "error"


@pytest.mark.parametrize(("warn", "error"), [(0.3, 0.2), (-0.1, 0.2), (-1.0, -0.5)])
def test_threshold_rejects_inverted_or_negative_limits(warn: float, error: float) -> None:
    with pytest.raises(ValueError, match="0 <= warn <= error"):
        Threshold(warn, error)


def test_policy_threshold_respects_overrides() -> None:
    policy = DriftPolicy(
        ("temp", "carrier"),
        overrides={"temp": {"psi": None, "mean_shift": Threshold(3.0, 5.0)}},
    )
    assert policy.threshold("temp", "psi") is None  # reported, not judged
    assert policy.threshold("temp", "mean_shift") == Threshold(3.0, 5.0)
    assert policy.threshold("temp", "ks") == DEFAULT_THRESHOLDS["ks"]  # not overridden
    assert policy.threshold("carrier", "tvd") == DEFAULT_THRESHOLDS["tvd"]


def test_policy_defaults_can_be_replaced() -> None:
    defaults = {**DEFAULT_THRESHOLDS, "tvd": Threshold(0.3, 0.4)}
    assert DriftPolicy(("carrier",), defaults=defaults).threshold("carrier", "tvd") == Threshold(0.3, 0.4)


def test_default_overrides_cover_the_day_level_features() -> None:
    """Weather and trailing aggregates: psi and ks reported only, judged by mean_shift."""
    overrides = default_overrides()
    day_level = [*WEATHER_COLUMNS, *aggregate_names()]
    assert len(day_level) > len(WEATHER_COLUMNS)
    for column in day_level:
        assert column in overrides, column
        assert overrides[column]["psi"] is None
        assert overrides[column]["ks"] is None
        assert isinstance(overrides[column]["mean_shift"], Threshold)
    policy = DriftPolicy(tuple(day_level), overrides=overrides)
    assert all(policy.threshold(c, "psi") is None for c in day_level)
    assert policy.threshold("wind_gust", "missing") == Threshold(0.5, 0.8)
    assert policy.threshold("temp", "missing") == DEFAULT_THRESHOLDS["missing"]


def test_default_overrides_are_fresh_each_call() -> None:
    """Callers may edit the overrides they get without changing anyone else's."""
    first = default_overrides()
    first["temp"]["mean_shift"] = None
    assert default_overrides()["temp"]["mean_shift"] == Threshold(3.0, 5.0)


def test_worst() -> None:
    def result(severity: str) -> FeatureDrift:
        return FeatureDrift("x", "numeric", {}, {}, severity, 1, 1)  # type: ignore[arg-type]

    assert worst([]) == "ok"
    assert worst([result("ok"), result("warn")]) == "warn"
    assert worst([result("warn"), result("error"), result("ok")]) == "error"
