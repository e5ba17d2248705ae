"""Synthetic ``flight_features`` frames with a learnable delay signal, and their encodings.

The frames have the columns the training code reads (``data.INPUT_COLUMNS`` plus ``flight_date``,
``route`` and the targets). ``arr_delay`` grows with the scheduled hour and the precipitation and
depends on the carrier, so a network fitted on them really lowers its losses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
import torch

from ml_platform.lib.features.transforms import WEATHER_COLUMNS, aggregate_names
from ml_platform.lib.training.data import (
    Encoded,
    Preprocessor,
    fit_preprocessor,
    labelled,
    split_by_time,
)
from ml_platform.lib.training.loop import TrainConfig

FIRST_DAY = date(2013, 3, 4)
CARRIERS = ("AA", "B6", "DL", "UA")
ORIGINS = ("EWR", "JFK", "LGA")
DESTS = {"ATL": 760.0, "BOS": 187.0, "ORD": 719.0, "MIA": 1089.0, "LAX": 2475.0}
CARRIER_EFFECT = {"AA": -4.0, "B6": 8.0, "DL": -6.0, "UA": 3.0}
VALIDATION_DAYS = 3

#: Small and quick, but big enough to learn the synthetic signal in a few epochs.
SMALL = TrainConfig(
    embedding_dim=4, hidden=32, layers=2, batch_size=256, max_epochs=6, patience=3, device="cpu"
)


def make_features(days: int = 14, per_day: int = 250, seed: int = 0) -> pl.DataFrame:
    """``days`` days of ``per_day`` synthetic flights each, ~3% without a target."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    flight_date = [FIRST_DAY + timedelta(days=int(d)) for d in np.repeat(np.arange(days), per_day)]
    carrier = rng.choice(CARRIERS, n)
    origin = rng.choice(ORIGINS, n)
    dest = rng.choice(list(DESTS), n)
    hour = rng.integers(5, 24, n)
    precip = np.where(rng.random(n) < 0.7, 0.0, rng.exponential(0.15, n))
    weather = {c: rng.normal(0.0, 1.0, n) for c in WEATHER_COLUMNS}
    weather["precip"] = precip
    weather_age = rng.uniform(0.0, 60.0, n)
    no_weather = rng.random(n) < 0.05
    delay = (
        -10.0
        + 2.5 * (hour - 5)
        + 120.0 * precip
        + np.array([CARRIER_EFFECT[c] for c in carrier])
        + rng.normal(0.0, 8.0, n)
    )
    has_target = rng.random(n) >= 0.03
    frame = pl.DataFrame(
        {
            "flight_date": flight_date,
            "carrier": carrier,
            "origin": origin,
            "dest": dest,
            "route": [f"{o}-{d}" for o, d in zip(origin, dest, strict=True)],
            "sched_hour": hour.astype(np.int64),
            "distance": np.array([DESTS[d] for d in dest]),
            **{c: np.where(no_weather, np.nan, v) for c, v in weather.items()},
            "weather_age_minutes": np.where(no_weather, np.nan, weather_age),
            **{c: rng.uniform(0.0, 50.0, n) for c in aggregate_names()},
            "arr_delay": np.where(has_target, delay, np.nan),
            "has_target": has_target,
        }
    )
    # no observation -> null weather, as the as-of join leaves it; no outcome -> null targets
    return frame.with_columns(
        pl.col("flight_date").dt.weekday().cast(pl.Int64).alias("day_of_week"),
        *[pl.col(c).fill_nan(None) for c in (*WEATHER_COLUMNS, "weather_age_minutes", "arr_delay")],
    ).with_columns(
        pl.when(pl.col("has_target")).then(pl.col("arr_delay") > 15.0).otherwise(None).alias("is_delayed")
    )


@dataclass(frozen=True)
class Prepared:
    """A split, fitted and encoded synthetic window."""

    train_frame: pl.DataFrame
    validation_frame: pl.DataFrame
    preprocessor: Preprocessor
    train: Encoded
    validation: Encoded


def prepare(frame: pl.DataFrame, validation_days: int = VALIDATION_DAYS) -> Prepared:
    """What ``pipeline.train_partition`` does before training."""
    train_frame, validation_frame = split_by_time(labelled(frame), validation_days)
    pre = fit_preprocessor(train_frame)
    return Prepared(train_frame, validation_frame, pre, pre.encode(train_frame), pre.encode(validation_frame))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Train these tiny networks on one intra-op thread, and restore the count afterwards.

    Splitting a 256-row batch over threads only adds barriers, and on a busy 2-core machine
    they stall (epochs measured at 0.02 s on one thread, up to 1.2 s on two). Results are
    still bit-reproducible for a given thread count (tested with two threads as well).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def features() -> pl.DataFrame:
    """14 days x 250 flights."""
    return make_features()


@pytest.fixture(scope="session")
def prepared(features: pl.DataFrame) -> Prepared:
    """The 14 days split into 11 training and 3 validation days, fitted and encoded."""
    return prepare(features)


@pytest.fixture(scope="session")
def small_prepared() -> Prepared:
    """A smaller window (8 days x 120 flights) for the multi-process and multi-trial tests."""
    return prepare(make_features(days=8, per_day=120, seed=1), validation_days=2)
