"""The online stores (embedded sqlite and Redis), one suite against both, on hand-built snapshots."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ml_platform.lib.features.transforms import (
    KEY_COLUMNS,
    WEATHER_COLUMNS,
    aggregate_names,
    cutoff_for,
)
from ml_platform.lib.online import (
    FEATURE_COLUMNS,
    FEATURE_SCHEMA,
    REQUEST_COLUMNS,
    EmbeddedOnlineStore,
    InvalidRequest,
    OnlineSnapshot,
    OnlineStoreError,
    RedisOnlineStore,
    build_snapshot,
    online_features,
    open_online_store,
    redact_url,
)
from ml_platform.lib.online.features import served_features
from ml_platform.lib.online.snapshot import COUNT_FIELDS, FIELDS, KINDS, column_of
from ml_platform.lib.training.data import INPUT_COLUMNS
from ml_platform_tests.lib.online.conftest import STORE_PARAMS

D = date(2013, 2, 15)  # a Friday, far from the DST changes; local midnight is 05:00 UTC
ROUTES = [("UA", "EWR", "ORD"), ("DL", "JFK", "ATL"), ("AA", "LGA", "MIA")]
#: aggregates of this route have no known outcomes: null means, like a route of cancelled flights
NULL_MEANS_ROUTE = "LGA-MIA"


def utc(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def key_of(kind: str, carrier: str, origin: str, dest: str) -> str:
    return {"origin": origin, "carrier": carrier, "route": f"{origin}-{dest}"}[kind]


def agg_value(kind: str, key: str, field: str, version: int) -> int | float | None:
    """A distinct value per (kind, key, field, version)."""
    if field in COUNT_FIELDS:
        return version * 1000 + len(key) * 10 + KINDS.index(kind)
    if key == NULL_MEANS_ROUTE and kind == "route":
        return None
    return version + FIELDS.index(field) / 8 + len(key) / 1024 + KINDS.index(kind) / 3


def features_frame(day: date, routes: Iterable[tuple[str, str, str]], version: int = 1) -> pl.DataFrame:
    """flight_features-shaped rows of ``day`` (two flights per route, same aggregates)."""
    rows: list[dict[str, Any]] = []
    for n, (carrier, origin, dest) in enumerate(routes):
        for extra in (0, 1):
            row: dict[str, Any] = {
                "carrier": carrier,
                "flight": 100 * n + extra,
                "origin": origin,
                "dest": dest,
                "scheduled_departure": utc(day, 12 + extra),
                "flight_date": day,
                "aggregates_as_of": cutoff_for(day),
            }
            for kind in KINDS:
                key = key_of(kind, carrier, origin, dest)
                for f in FIELDS:
                    row[column_of(kind, f)] = agg_value(kind, key, f, version)
            rows.append(row)
    schema = {c: (pl.Int64 if "_flights_" in c else pl.Float64) for c in aggregate_names()} | {
        "scheduled_departure": pl.Datetime("us", "UTC"),
        "aggregates_as_of": pl.Datetime("us", "UTC"),
    }
    return pl.DataFrame(rows, schema_overrides=schema)


def weather_frame(observations: Iterable[tuple[str, datetime, float]]) -> pl.DataFrame:
    """validated_weather-shaped rows: temp as given, wind_gust null, the rest derived from temp."""
    rows = []
    for origin, observed, temp in observations:
        row: dict[str, Any] = {"origin": origin, "observed_at": observed}
        for i, c in enumerate(WEATHER_COLUMNS):
            row[c] = temp if c == "temp" else (None if c == "wind_gust" else temp + i)
        rows.append(row)
    return pl.DataFrame(
        rows,
        schema={
            "origin": pl.String,
            "observed_at": pl.Datetime("us", "UTC"),
            **{c: pl.Float64 for c in WEATHER_COLUMNS},
        },
    )


def hourly_weather(day: date, temp: float, origins: Iterable[str] = ("EWR", "JFK", "LGA")) -> pl.DataFrame:
    """An observation per origin and hour of the day before and of ``day``."""
    start = utc(day - timedelta(days=1), 0)
    return weather_frame((o, start + timedelta(hours=h), temp) for o in origins for h in range(48))


def snapshot(
    day: date = D, version: int = 1, routes: Iterable[tuple[str, str, str]] = ROUTES
) -> OnlineSnapshot:
    return build_snapshot(day, features_frame(day, routes, version), hourly_weather(day, float(version)))


def requests(*items: tuple[str, str, str, datetime]) -> pl.DataFrame:
    """Requests (carrier, origin, dest, departure); flight and distance made up."""
    return pl.DataFrame(
        {
            "carrier": [i[0] for i in items],
            "flight": list(range(1, len(items) + 1)),
            "origin": [i[1] for i in items],
            "dest": [i[2] for i in items],
            "scheduled_departure": [i[3] for i in items],
            "distance": [719.0] * len(items),
        },
        schema_overrides={"scheduled_departure": pl.Datetime("us", "UTC")},
    )


# -- round trip ------------------------------------------------------------------------------------


def test_write_then_lookup_gives_back_the_snapshot(store):
    snap = snapshot()
    store.write(snap)
    asked = requests(*[(c, o, d, utc(D, 15, 30)) for c, o, d in ROUTES])
    got = online_features(asked, store)

    assert got.columns == list(FEATURE_COLUMNS)
    assert set(INPUT_COLUMNS) <= set(got.columns)
    assert got.schema == pl.Schema(FEATURE_SCHEMA)
    assert got.select(KEY_COLUMNS).equals(asked.select(KEY_COLUMNS))
    for row, (carrier, origin, dest) in zip(got.iter_rows(named=True), ROUTES, strict=True):
        for kind in KINDS:
            key = key_of(kind, carrier, origin, dest)
            for f in FIELDS:
                assert row[column_of(kind, f)] == agg_value(kind, key, f, 1), (kind, key, f)
        assert row["aggregates_as_of"] == cutoff_for(D)
        assert row["route"] == f"{origin}-{dest}"
        # 15:30 UTC is 10:30 in New York on a Friday
        assert (row["flight_date"], row["sched_hour"], row["day_of_week"], row["month"]) == (D, 10, 5, 2)
        assert row["weather_observed_at"] == utc(D, 15)
        assert row["weather_age_minutes"] == 30.0
        assert row["temp"] == 1.0 and row["wind_gust"] is None and row["pressure"] == 1.0 + 7
    info = store.info()
    assert info is not None
    assert (info.day, info.aggregates_as_of, info.observations) == (D, cutoff_for(D), 3 * 48)
    assert dict(info.keys) == {"origin": 3, "carrier": 3, "route": 3}
    assert info.content_hash == snap.content_hash()


def test_lookups_keep_request_order_and_duplicates(store):
    store.write(snapshot())
    asked = requests(
        ("AA", "LGA", "MIA", utc(D, 20)),
        ("UA", "EWR", "ORD", utc(D, 9, 15)),
        ("AA", "LGA", "MIA", utc(D, 20)),
        ("DL", "JFK", "ATL", utc(D, 6)),
    )
    got = online_features(asked, store)
    assert got["route"].to_list() == ["LGA-MIA", "EWR-ORD", "LGA-MIA", "JFK-ATL"]
    assert got["weather_observed_at"].to_list() == [utc(D, 19), utc(D, 9), utc(D, 19), utc(D, 5)]
    assert got["route_delay_mean_7d"].to_list()[0] is None  # a null mean stays null
    assert got["route_flights_7d"].to_list()[0] == agg_value("route", "LGA-MIA", "flights_7d", 1)


def test_an_empty_batch_gives_an_empty_frame(store):
    store.write(snapshot())
    got = online_features(requests(), store)
    assert got.height == 0 and got.schema == pl.Schema(FEATURE_SCHEMA)


def test_unknown_keys_give_zero_counts_and_null_means(store):
    store.write(snapshot())
    got = online_features(
        requests(
            ("ZZ", "EWR", "XYZ", utc(D, 15)),  # unknown carrier and route, known origin
            ("UA", "SWF", "ORD", utc(D, 15)),  # unknown origin: no weather either
        ),
        store,
    ).rows(named=True)
    for name in aggregate_names():
        kind, field = name.split("_", 1)
        unknown = 0 if "_flights_" in name else None
        # first request: only its origin is known; second: only its carrier
        assert got[0][name] == (agg_value(kind, "EWR", field, 1) if kind == "origin" else unknown), name
        assert got[1][name] == (agg_value(kind, "UA", field, 1) if kind == "carrier" else unknown), name
    assert got[1]["weather_observed_at"] is None and got[1]["weather_age_minutes"] is None
    assert all(got[1][c] is None for c in WEATHER_COLUMNS)
    assert got[0]["weather_observed_at"] == utc(D, 14)


# -- weather as of the departure ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("departure", "expected"),
    [
        (utc(D, 12), utc(D, 11)),  # strictly before: not the observation at the departure itself
        (utc(D, 12, 0, 1), utc(D, 12)),
        (utc(D, 17, 59), utc(D, 12)),
        (utc(D, 18), utc(D, 12)),  # exactly the 6 h tolerance: still used
        (utc(D, 18, 0, 1), None),  # older than 6 h: no weather
        (utc(D, 10), None),  # nothing before
        (utc(D, 10, 0, 1), utc(D, 10)),
    ],
)
def test_weather_is_the_last_observation_strictly_before_departure_within_6h(store, departure, expected):
    weather = weather_frame(
        [
            ("EWR", utc(D, 10), 10.0),
            ("EWR", utc(D, 11), 11.0),
            ("EWR", utc(D, 12), 12.0),
            ("JFK", utc(D, 17), 99.0),  # another origin's observation is never used
        ]
    )
    store.write(build_snapshot(D, features_frame(D, ROUTES), weather))
    (row,) = online_features(requests(("UA", "EWR", "ORD", departure)), store).rows(named=True)
    assert row["weather_observed_at"] == expected
    if expected is None:
        assert row["temp"] is None and row["weather_age_minutes"] is None
    else:
        assert row["temp"] == float(expected.hour)
        assert row["weather_age_minutes"] == float((departure - expected) // timedelta(minutes=1))


def test_a_batch_spanning_the_day_picks_each_departures_own_observation(store):
    store.write(snapshot())
    departures = [utc(D, h, 59) for h in range(24)] + [utc(D - timedelta(days=1), 0, 30)]
    got = online_features(requests(*[("UA", "EWR", "ORD", d) for d in departures]), store)
    expected = [d.replace(minute=0) for d in departures]
    assert got["weather_observed_at"].to_list() == expected
    assert got["weather_age_minutes"].to_list() == [59.0] * 24 + [30.0]


# -- replacement ------------------------------------------------------------------------------------


def test_a_new_snapshot_replaces_the_old_one_entirely(store):
    store.write(snapshot(D, 1, ROUTES))
    later = D + timedelta(days=1)
    store.write(snapshot(later, 2, ROUTES[:1]))  # DL and AA (and their routes) are gone
    got = online_features(
        requests(("UA", "EWR", "ORD", utc(later, 15)), ("DL", "JFK", "ATL", utc(later, 15))), store
    ).rows(named=True)
    assert got[0]["route_flights_28d"] == agg_value("route", "EWR-ORD", "flights_28d", 2)
    assert got[0]["aggregates_as_of"] == cutoff_for(later)
    assert got[0]["temp"] == 2.0
    assert got[1]["route_flights_28d"] == 0 and got[1]["carrier_delay_mean_7d"] is None
    assert got[1]["origin_flights_7d"] == 0  # JFK flew nothing on the later day: unknown there
    assert store.info().day == later


def test_an_older_day_never_replaces_a_newer_one_and_the_same_day_does(store):
    later = D + timedelta(days=1)
    store.write(snapshot(later, 2))
    store.write(snapshot(D, 1))  # a backfill of the day before: serving does not go back
    assert store.info().day == later
    again = snapshot(later, 3)
    store.write(again)  # the same day again (rematerialized): replaces
    info = store.info()
    assert (info.day, info.content_hash) == (later, again.content_hash())
    (row,) = online_features(requests(("UA", "EWR", "ORD", utc(later, 15))), store).rows(named=True)
    assert row["carrier_flights_7d"] == agg_value("carrier", "UA", "flights_7d", 3)


@pytest.mark.parametrize("kind", STORE_PARAMS)
def test_a_reader_during_writes_sees_the_old_or_the_new_snapshot_never_a_mix(make_store, kind):
    """A writer alternates two snapshots of the same day; a reader looking up concurrently (its own
    connection) must see each batch wholly from one of them (values and key sets differ)."""
    writer_store = make_store(kind)
    if isinstance(writer_store, EmbeddedOnlineStore):
        reader_store: Any = EmbeddedOnlineStore(writer_store.path)
    else:
        reader_store = RedisOnlineStore(writer_store.url, namespace=writer_store.namespace)
    try:
        _check_atomic_replacement(writer_store, reader_store)
    finally:
        reader_store.close()


def _check_atomic_replacement(writer_store: Any, reader_store: Any) -> None:
    routes_a = [("UA", "EWR", "ORD"), ("DL", "JFK", "ATL")] + [("UA", "EWR", f"A{i:02d}") for i in range(40)]
    routes_b = [("UA", "EWR", "ORD"), ("AA", "LGA", "MIA")] + [("UA", "EWR", f"B{i:02d}") for i in range(40)]
    versions = {1: snapshot(D, 1, routes_a), 2: snapshot(D, 2, routes_b)}
    hashes = {v: snap.content_hash() for v, snap in versions.items()}
    writer_store.write(versions[1])
    asked = requests(
        *[(c, o, d, utc(D, 15)) for c, o, d in routes_a[:2] + routes_b[1:2]],
        *[("UA", "EWR", d, utc(D, 15)) for d in ("A07", "B07", "A39", "B39")],
    )
    stop = threading.Event()
    seen: dict[int, int] = {1: 0, 2: 0}
    mixed: list[str] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                served = served_features(asked, reader_store)
                got = served.features
                temps = set(got["temp"].to_list())
                ua = set(got.filter(pl.col("carrier") == "UA")["carrier_flights_7d"].to_list())
                known = {
                    r: f > 0
                    for r, f in zip(got["route"].to_list(), got["route_flights_7d"].to_list(), strict=True)
                }
                version = 1 if known["EWR-A07"] else 2
                expect_known = {
                    "EWR-ORD": True,
                    "JFK-ATL": version == 1,
                    "LGA-MIA": version == 2,
                    "EWR-A07": version == 1,
                    "EWR-B07": version == 2,
                    "EWR-A39": version == 1,
                    "EWR-B39": version == 2,
                }
                expect_ua = {agg_value("carrier", "UA", "flights_7d", version)}
                if temps != {float(version)} or ua != expect_ua or known != expect_known:
                    mixed.append(f"temps {temps}, UA flights {ua}, known routes {known}")
                    return
                if served.snapshot.content_hash != hashes[version]:  # the features' own snapshot
                    mixed.append(f"version {version}'s features named snapshot {served.snapshot}")
                    return
                seen[version] += 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + 20
    writes = 0
    try:
        while time.monotonic() < deadline and not mixed and not errors:
            writes += 1
            writer_store.write(versions[2 if writes % 2 else 1])
            if writes >= 60 and min(seen.values()) >= 10:
                break
    finally:
        stop.set()
        reader.join(timeout=30)
    assert not errors, errors
    assert not mixed, f"a reader saw a mix of two snapshots: {mixed[0]}"
    assert min(seen.values()) >= 1, f"the reader did not see both snapshots ({seen}, {writes} writes)"


def test_a_lookup_names_the_snapshot_that_answered(store):
    """What a prediction-log line records: the held snapshot's day, cutoff, content hash, write time."""
    first = snapshot(D, 1)
    store.write(first)
    asked = requests(*[(c, o, d, utc(D, 15, 30)) for c, o, d in ROUTES])
    served = served_features(asked, store)
    held = store.info()
    assert held is not None and served.snapshot == held.ref
    assert served.snapshot.day == D and served.snapshot.aggregates_as_of == cutoff_for(D)
    assert served.snapshot.content_hash == first.content_hash()
    assert served.features.equals(online_features(asked, store))
    # the same day rewritten with other content: another hash, a later write
    second = snapshot(D, 2)
    store.write(second)
    again = served_features(asked, store).snapshot
    assert again.content_hash == second.content_hash() != first.content_hash()
    assert again.written_at >= served.snapshot.written_at


# -- errors -----------------------------------------------------------------------------------------


def test_a_store_without_a_snapshot_says_so(store):
    with pytest.raises(OnlineStoreError, match="no snapshot") as info:
        online_features(requests(("UA", "EWR", "ORD", utc(D, 15))), store)
    assert store.describe() in str(info.value)
    assert store.info() is None


def test_a_redis_store_that_is_down_fails_naming_the_url_without_the_password():
    store = open_online_store("redis://mlp:s3cr3t-pw@127.0.0.1:1/0", Path("unused"))
    assert isinstance(store, RedisOnlineStore)
    assert store.describe() == "redis://mlp:***@127.0.0.1:1/0 (namespace mlp)"
    started = time.monotonic()
    for call in (
        lambda: online_features(requests(("UA", "EWR", "ORD", utc(D, 15))), store),
        lambda: store.write(snapshot()),
        store.info,
    ):
        with pytest.raises(OnlineStoreError) as info:
            call()
        message = str(info.value)
        assert "redis://mlp:***@127.0.0.1:1/0" in message and "mlp:meta" in message, message
        assert "s3cr3t" not in message and "s3cr3t" not in repr(info.value.__cause__), message
    assert time.monotonic() - started < 10  # fails fast: no backoff for seconds
    store.close()


def test_the_embedded_store_without_its_file_fails_naming_the_path(tmp_path):
    path = tmp_path / "nowhere" / "features.sqlite"
    store = open_online_store(None, path)
    assert isinstance(store, EmbeddedOnlineStore) and store.describe() == str(path)
    with pytest.raises(OnlineStoreError, match="no snapshot") as info:
        online_features(requests(("UA", "EWR", "ORD", utc(D, 15))), store)
    assert str(path) in str(info.value)
    assert not path.exists()  # a lookup creates nothing


def test_urls_pick_the_store_and_never_show_a_password(tmp_path):
    assert isinstance(open_online_store(None, tmp_path / "f.sqlite"), EmbeddedOnlineStore)
    assert isinstance(open_online_store("", tmp_path / "f.sqlite"), EmbeddedOnlineStore)
    tls = open_online_store("rediss://:pw@cache.internal:6380/2", tmp_path, namespace="prod")
    assert tls.describe() == "rediss://:***@cache.internal:6380/2 (namespace prod)"
    assert redact_url("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
    with pytest.raises(OnlineStoreError, match="scheme 'memcached'") as info:
        open_online_store("memcached://u:pw@h:11211", tmp_path)
    assert "pw" not in str(info.value).replace("memcached", "")


@pytest.mark.integration
def test_a_redis_snapshot_of_another_layout_is_refused(make_store):
    store = make_store("redis")
    store.write(snapshot())
    store._client.hset(store.meta_key, "layout", "v0:something-else")
    with pytest.raises(OnlineStoreError, match="another layout"):
        online_features(requests(("UA", "EWR", "ORD", utc(D, 15))), store)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop("distance"), "lack column"),
        (lambda f: f.with_columns(pl.lit(None, pl.String).alias("dest")), "nulls in"),
        (lambda f: f.with_columns(pl.col("scheduled_departure").dt.replace_time_zone(None)), "time zone"),
    ],
)
def test_bad_requests_are_refused_before_the_store_is_asked(store, change, message):
    store.write(snapshot())
    with pytest.raises(InvalidRequest, match=message):
        online_features(change(requests(("UA", "EWR", "ORD", utc(D, 15)))), store)


def test_requests_of_other_dtypes_and_time_zones_are_normalized(store):
    store.write(snapshot())
    base = requests(("UA", "EWR", "ORD", utc(D, 15, 30)))
    other = base.with_columns(
        pl.col("flight").cast(pl.Int32),
        pl.col("distance").cast(pl.Int64),
        pl.col("scheduled_departure").dt.convert_time_zone("America/New_York").dt.cast_time_unit("ms"),
    ).select(list(reversed(REQUEST_COLUMNS)))
    assert online_features(other, store).equals(online_features(base, store))


def test_a_snapshot_refuses_features_with_two_values_for_one_key():
    frame = features_frame(D, ROUTES)
    frame = frame.with_columns(
        pl.when(pl.col("flight") == 1)
        .then(pl.col("route_flights_7d") + 1)
        .otherwise(pl.col("route_flights_7d"))
        .alias("route_flights_7d")
    )
    with pytest.raises(ValueError, match="route key"):
        build_snapshot(D, frame, hourly_weather(D, 1.0))
    with pytest.raises(ValueError, match="another day"):
        build_snapshot(D + timedelta(days=1), features_frame(D, ROUTES), hourly_weather(D, 1.0))
