"""Feature freshness: how far a request's departure lies beyond what the served snapshot knows.

The online store holds the snapshot of one day D (:mod:`ml_platform.lib.online.store`): the
trailing aggregates as of D's cutoff (D's local midnight, ``aggregates_as_of``) and the weather
observations of D-1 and D. Offline, a flight of day F is scored with F's cutoff and the last
observation at most ``WEATHER_TOLERANCE`` (6 h) before its departure. So the "as of" that matters for
a request is the snapshot's cutoff *measured against the request's departure*, not against the
wall clock: a replay of 2013 served from the 2013 snapshot of the same day is fresh, a departure in
2026 served from a 2013 snapshot is stale by thirteen years whatever the clock says.

:func:`feature_age` is ``scheduled_departure - aggregates_as_of``. A departure on the snapshot's own
day is 0 to 24 h after the cutoff: exactly the features the offline pipeline uses. Up to 6 h more
the weather of D's last hours can still match. Past that (:data:`DEFAULT_BUDGET`, 30 h) the snapshot
cannot hold a weather observation for the departure: the weather inputs are null by construction
and the aggregates miss at least a whole day of flights. A departure *before* the cutoff (a past
flight asked about after a newer snapshot landed) has a negative age: its features are newer than
the flight, not stale, and are not flagged.

The budget is ``MLP_SERVING_FEATURE_FRESHNESS_HOURS`` (:class:`~ml_platform.settings.PlatformSettings`);
what the service does with a stale answer is in ``ml_platform/serving/service.py`` and README.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

#: The default budget: the snapshot's day (24 h after its cutoff) plus the weather tolerance (6 h).
DEFAULT_BUDGET: Final = timedelta(hours=30)


def feature_age(departure: datetime, aggregates_as_of: datetime) -> timedelta:
    """How far ``departure`` lies after the snapshot's cutoff (negative: before it). Both aware."""
    return departure - aggregates_as_of


def is_stale(departure: datetime, aggregates_as_of: datetime, budget: timedelta) -> bool:
    """Whether features as of ``aggregates_as_of`` are too old for a flight departing at ``departure``.

    Raises:
        ValueError: ``budget`` is not positive.
    """
    if budget <= timedelta(0):
        raise ValueError(f"the feature-freshness budget must be positive, got {budget}")
    return feature_age(departure, aggregates_as_of) > budget
