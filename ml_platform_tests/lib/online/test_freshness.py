"""Feature freshness: a departure against the served snapshot's cutoff, never the wall clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ml_platform.lib.features.transforms import WEATHER_TOLERANCE, cutoff_for
from ml_platform.lib.online.freshness import DEFAULT_BUDGET, feature_age, is_stale

DAY = date(2013, 4, 28)
CUTOFF = cutoff_for(DAY)  # 04:00 UTC (EDT)


def test_the_default_budget_is_the_snapshots_day_plus_the_weather_tolerance() -> None:
    assert timedelta(days=1) + WEATHER_TOLERANCE == DEFAULT_BUDGET


@pytest.mark.parametrize(
    ("departure", "stale"),
    [
        (CUTOFF + timedelta(hours=17), False),  # the snapshot's own day
        (CUTOFF + timedelta(hours=29, minutes=59), False),  # early next morning: D's last weather can match
        (CUTOFF + DEFAULT_BUDGET, False),  # the budget itself is still fresh
        (CUTOFF + DEFAULT_BUDGET + timedelta(seconds=1), True),
        (datetime(2026, 5, 1, 21, tzinfo=UTC), True),  # the request: 2026 on the 2013-04-28 snapshot
        (CUTOFF - timedelta(days=3), False),  # a past flight asked after a newer snapshot: not stale
    ],
)
def test_a_departure_beyond_the_budget_after_the_cutoff_is_stale(departure: datetime, stale: bool) -> None:
    assert is_stale(departure, CUTOFF, DEFAULT_BUDGET) is stale
    assert feature_age(departure, CUTOFF) == departure - CUTOFF


def test_the_budget_is_a_setting_and_must_be_positive() -> None:
    departure = CUTOFF + timedelta(hours=20)
    assert is_stale(departure, CUTOFF, timedelta(hours=12))
    assert not is_stale(departure, CUTOFF, timedelta(hours=24))
    with pytest.raises(ValueError, match="must be positive"):
        is_stale(departure, CUTOFF, timedelta(0))
