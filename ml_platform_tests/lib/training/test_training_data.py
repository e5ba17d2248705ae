"""Preprocessing: statistics from training rows only, encoding of unknowns and gaps, the time split."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from ml_platform.lib.features.transforms import WEATHER_COLUMNS
from ml_platform.lib.training.data import (
    CATEGORICAL,
    INPUT_COLUMNS,
    NUMERIC,
    WEATHER_MISSING,
    Preprocessor,
    TrainingDataError,
    fit_preprocessor,
    labelled,
    split_by_time,
)
from ml_platform_tests.lib.training.conftest import FIRST_DAY, Prepared, prepare


def test_statistics_come_from_training_rows_only(features: pl.DataFrame) -> None:
    rows = labelled(features)
    train, validation = split_by_time(rows, 3)
    # validation rows with absurd values (and a category training never saw) must not leak
    extreme = validation.with_columns(
        pl.col("distance") * 1000.0,
        pl.col("temp") + 1e6,
        pl.col("arr_delay") * 100.0,
        pl.lit("ZZ").alias("carrier"),
    )
    plain = prepare(pl.concat([train, validation])).preprocessor
    leaked = prepare(pl.concat([train, extreme])).preprocessor
    assert leaked.to_dict() == plain.to_dict()
    assert plain.means["distance"] == pytest.approx(train["distance"].mean())
    assert plain.stds["temp"] == pytest.approx(train["temp"].std())
    assert plain.delay_mean == pytest.approx(train["arr_delay"].mean())
    assert plain.delay_std == pytest.approx(train["arr_delay"].std())
    assert "ZZ" not in plain.vocabularies["carrier"]
    # fitting on the validation rows themselves would have seen them
    assert fit_preprocessor(extreme).means["distance"] > 1000 * plain.means["distance"] / 2


def test_unknown_categories_encode_to_index_zero(prepared: Prepared) -> None:
    pre = prepared.preprocessor
    frame = prepared.validation_frame.head(4).with_columns(
        pl.Series("carrier", ["ZZ", None, "AA", "DL"]),
        pl.Series("sched_hour", [2, 5, 23, None], dtype=pl.Int64),  # 2 am never seen in training
    )
    cats = pre.encode(frame).categorical
    carrier, hour = CATEGORICAL.index("carrier"), CATEGORICAL.index("sched_hour")
    vocab = pre.vocabularies
    assert cats[:, carrier].tolist() == [
        0,
        0,
        vocab["carrier"].index("AA") + 1,
        vocab["carrier"].index("DL") + 1,
    ]
    assert cats[:, hour].tolist() == [
        0,
        vocab["sched_hour"].index("5") + 1,
        vocab["sched_hour"].index("23") + 1,
        0,
    ]
    assert pre.cardinalities == [len(vocab[c]) + 1 for c in CATEGORICAL]
    assert (cats < np.array(pre.cardinalities)).all()


def test_missing_numbers_become_zero_and_missing_weather_is_flagged(prepared: Prepared) -> None:
    pre = prepared.preprocessor
    frame = prepared.validation_frame.head(3).with_columns(
        pl.Series("distance", [None, 187.0, 760.0], dtype=pl.Float64),
        pl.Series("weather_age_minutes", [None, 12.0, float("nan")], dtype=pl.Float64),
        pl.Series("temp", [None, None, 1.5], dtype=pl.Float64),
    )
    encoded = pre.encode(frame)
    cols = pre.numeric_columns
    assert cols == [*NUMERIC, WEATHER_MISSING]
    assert encoded.numeric.shape == (3, len(cols))
    assert encoded.numeric.dtype == np.float32
    assert np.isfinite(encoded.numeric).all()
    nums = {c: encoded.numeric[:, i] for i, c in enumerate(cols)}
    assert nums["distance"][0] == 0.0  # null -> the training mean
    assert nums["distance"][1] == pytest.approx((187.0 - pre.means["distance"]) / pre.stds["distance"])
    assert nums["temp"].tolist()[:2] == [0.0, 0.0]
    assert nums["temp"][2] == pytest.approx((1.5 - pre.means["temp"]) / pre.stds["temp"])
    # null (and NaN, as pandas hands it over) age <=> no weather observation
    assert nums[WEATHER_MISSING].tolist() == [1.0, 0.0, 1.0]


def test_encoded_targets(prepared: Prepared, features: pl.DataFrame) -> None:
    pre = prepared.preprocessor
    enc = prepared.train
    expected = (prepared.train_frame["arr_delay"].to_numpy() - pre.delay_mean) / pre.delay_std
    np.testing.assert_allclose(enc.delay, expected, rtol=1e-5, atol=1e-5)
    assert abs(float(enc.delay.mean())) < 1e-3 and float(enc.delay.std()) == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_array_equal(enc.delayed, prepared.train_frame["is_delayed"].cast(pl.Float32).to_numpy())
    # float32 round trip: about 1e-6 of the delay's scale (minutes)
    np.testing.assert_allclose(pre.delay_minutes(enc.delay), prepared.train_frame["arr_delay"], atol=1e-4)
    # rows without an outcome, or frames without target columns, get NaN targets
    unlabelled = pre.encode(features.filter(~pl.col("has_target")))
    assert len(unlabelled) > 0 and np.isnan(unlabelled.delay).all() and np.isnan(unlabelled.delayed).all()
    inputs_only = pre.encode(features.select(INPUT_COLUMNS).head(5))
    assert np.isnan(inputs_only.delay).all() and inputs_only.categorical.shape == (5, len(CATEGORICAL))


def test_split_by_time_takes_the_last_days(features: pl.DataFrame) -> None:
    train, validation = split_by_time(features, 3)
    last = FIRST_DAY + timedelta(days=13)
    assert validation["flight_date"].unique().sort().to_list() == [
        last - timedelta(days=d) for d in (2, 1, 0)
    ]
    assert train["flight_date"].max() == last - timedelta(days=3)
    assert train["flight_date"].min() == FIRST_DAY
    assert train.height + validation.height == features.height
    assert validation.height == 3 * 250


@pytest.mark.parametrize("days", [0, 14])
def test_split_by_time_refuses_an_empty_side(features: pl.DataFrame, days: int) -> None:
    with pytest.raises(TrainingDataError, match="cannot split"):
        split_by_time(features, days)


def test_refusals(features: pl.DataFrame) -> None:
    with pytest.raises(TrainingDataError, match=r"lack column\(s\) \['precip'\]"):
        fit_preprocessor(features.drop("precip"))
    with pytest.raises(TrainingDataError, match="is_delayed"):
        fit_preprocessor(features.drop("is_delayed"))
    with pytest.raises(TrainingDataError, match="no labelled rows"):
        fit_preprocessor(features.clear())
    with pytest.raises(TrainingDataError, match="no rows"):
        split_by_time(features.clear(), 3)
    with pytest.raises(TrainingDataError, match="flight_date"):
        split_by_time(features.drop("flight_date"), 3)
    with pytest.raises(TrainingDataError, match="has_target"):
        labelled(features.drop("has_target"))
    pre = fit_preprocessor(labelled(features))
    with pytest.raises(TrainingDataError, match="model input"):
        pre.encode(features.drop("carrier"))


def test_constant_column_gets_unit_scale(features: pl.DataFrame) -> None:
    train = labelled(features).with_columns(
        pl.lit(3.0).alias("visib"), pl.lit(None, pl.Float64).alias("dewp")
    )
    pre = fit_preprocessor(train)
    assert pre.stds["visib"] == 1.0 and pre.means["visib"] == 3.0
    assert pre.stds["dewp"] == 1.0 and pre.means["dewp"] == 0.0
    assert np.isfinite(pre.encode(train).numeric).all()


def test_preprocessor_round_trips_through_json(prepared: Prepared) -> None:
    pre = prepared.preprocessor
    restored = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert restored == pre
    frame = prepared.validation_frame
    a, b = pre.encode(frame), restored.encode(frame)
    for field in ("categorical", "numeric", "delay", "delayed"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert set(pre.vocabularies["origin"]) == {"EWR", "JFK", "LGA"}
    assert set(pre.means) == set(NUMERIC) and all(c in pre.means for c in WEATHER_COLUMNS)
