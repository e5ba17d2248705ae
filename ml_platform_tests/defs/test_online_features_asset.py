"""``online_features``: materialized with the daily data job, read through recorded pins, served."""

from __future__ import annotations

from datetime import date

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_platform.definitions import DATA_JOB, build_definitions
from ml_platform.defs.serving.online import (
    NAME,
    ONLINE_AS_OF,
    ONLINE_CONTENT_HASH,
    ONLINE_DAY,
    ONLINE_OBSERVATIONS,
    ONLINE_SERVED,
    ONLINE_STORE,
    ONLINE_STORE_DAY,
    keys_metadata,
)
from ml_platform.lib import metadata as keys
from ml_platform.lib.features.transforms import cutoff_for
from ml_platform.lib.online import FEATURE_COLUMNS, REQUEST_COLUMNS, online_features, open_online_store
from ml_platform.lib.storage import PARTITION_COLUMN, DeltaPartitionStore
from ml_platform_tests.conftest import QUIET, failure_messages, latest, run_days

DAYS = ["2013-01-01", "2013-01-02", "2013-01-03"]


def read_latest(
    instance: dg.DagsterInstance, store: DeltaPartitionStore, asset: str, day: str
) -> pl.DataFrame:
    version = int(latest(instance, asset, day).metadata[keys.STORAGE_TABLE_VERSION].value)  # type: ignore[arg-type]
    return store.read_at_version(asset, day, version).drop(PARTITION_COLUMN)


def test_each_day_writes_its_snapshot_with_lineage_and_the_latest_day_is_served(make_settings, instance):
    settings = make_settings()
    run_days(settings, instance, DAYS)
    delta = DeltaPartitionStore(settings.delta_root)
    assert instance.get_materialized_partitions(dg.AssetKey(NAME)) == set(DAYS)

    for day in DAYS:
        mat = latest(instance, NAME, day)
        meta = {k: v.value for k, v in mat.metadata.items()}
        features = read_latest(instance, delta, "flight_features", day)
        assert meta[ONLINE_DAY] == day
        assert meta[keys_metadata("origin")] == features["origin"].n_unique()
        assert meta[keys_metadata("carrier")] == features["carrier"].n_unique()
        assert meta[keys_metadata("route")] == features.select("origin", "dest").n_unique()
        # weather of the day before and of the day, clipped at the first partition
        weather_days = [d for d in DAYS if d <= day][-2:]
        weather_rows = sum(
            latest(instance, "validated_weather", d).metadata[keys.ROW_COUNT].value for d in weather_days
        )  # type: ignore[misc]
        assert meta[ONLINE_OBSERVATIONS] == weather_rows
        assert meta[keys.ROW_COUNT] == weather_rows + sum(
            meta[keys_metadata(k)] for k in ("origin", "carrier", "route")
        )
        assert meta[ONLINE_AS_OF] == cutoff_for(date.fromisoformat(day)).isoformat()
        assert meta[ONLINE_STORE] == str(settings.online_store_path)
        assert meta[ONLINE_SERVED] is True and meta[ONLINE_STORE_DAY] == day
        assert meta[keys.LINEAGE_GIT_COMMIT] == "test"
        assert meta[keys.LINEAGE_CODE_VERSION] == mat.tags["dagster/code_version"]
        assert mat.tags["dagster/data_version"] == meta[ONLINE_CONTENT_HASH]
        # it read exactly the recorded versions of flight_features[day] and the weather days
        read = {(u["table"], u["partition"]): u for u in meta[keys.LINEAGE_UPSTREAM]}  # type: ignore[union-attr]
        assert set(read) == {("flight_features", day)} | {("validated_weather", d) for d in weather_days}
        for (table, partition), pin in read.items():
            upstream = latest(instance, table, partition).metadata
            assert pin["content_hash"] == upstream[keys.STORAGE_CONTENT_HASH].value
            assert pin["table_version"] == upstream[keys.STORAGE_TABLE_VERSION].value
            assert "files" not in pin

    # the store holds the latest day: a lookup gives that day's offline features for its flights
    store = open_online_store(settings.online_store_url, settings.online_store_path)
    info = store.info()
    assert info is not None and info.day == date(2013, 1, 3)
    features = read_latest(instance, delta, "flight_features", DAYS[-1]).sort(
        "scheduled_departure", "carrier", "flight"
    )
    served = online_features(features.select(REQUEST_COLUMNS), store)
    assert_frame_equal(served, features.select(FEATURE_COLUMNS), rel_tol=1e-12, abs_tol=0.0)
    assert served["aggregates_as_of"].unique().to_list() == [cutoff_for(date(2013, 1, 3))]


def test_an_older_day_rematerialized_is_recorded_but_not_served(make_settings, instance):
    settings = make_settings()
    run_days(settings, instance, DAYS[:2])
    job = build_definitions(settings).resolve_job_def(DATA_JOB)

    def materialize(day: str) -> dg.AssetMaterialization:
        result = job.execute_in_process(
            partition_key=day,
            instance=instance,
            asset_selection=[dg.AssetKey(NAME)],
            run_config=QUIET,
            raise_on_error=False,
        )
        assert result.success, failure_messages(result)
        return latest(instance, NAME, day)

    first = latest(instance, NAME, DAYS[0])
    older = materialize(DAYS[0])
    assert older.metadata[ONLINE_SERVED].value is False
    assert older.metadata[ONLINE_STORE_DAY].value == DAYS[1]
    # the same inputs give the same data version, served or not
    assert older.tags["dagster/data_version"] == first.tags["dagster/data_version"]
    info = open_online_store(None, settings.online_store_path).info()
    assert info is not None and info.day == date.fromisoformat(DAYS[1])

    before = latest(instance, NAME, DAYS[1])
    again = materialize(DAYS[1])  # the same day again replaces it (same content, same version)
    assert again.metadata[ONLINE_SERVED].value is True
    assert again.tags["dagster/data_version"] == before.tags["dagster/data_version"]
    held = open_online_store(None, settings.online_store_path).info()
    assert held is not None and held.day == info.day and held.written_at > info.written_at


def test_a_missing_feature_day_fails_naming_it(make_settings, instance):
    settings = make_settings()
    run_days(settings, instance, DAYS[:1])
    result = (
        build_definitions(settings)
        .resolve_job_def(DATA_JOB)
        .execute_in_process(
            partition_key=DAYS[1],
            instance=instance,
            asset_selection=[dg.AssetKey(NAME)],
            run_config=QUIET,
            raise_on_error=False,
        )
    )
    assert not result.success
    assert "flight_features: partition(s) 2013-01-02 have no materialization" in failure_messages(result)


def test_a_redis_url_from_the_environment_is_passed_as_an_env_var(make_settings, monkeypatch):
    from dagster._serdes import serialize_value

    url = "redis://mlp:not-in-snapshots@cache.internal:6379/0"
    monkeypatch.setenv("MLP_ONLINE_STORE_URL", url)
    settings = make_settings()
    assert settings.online_store_url == url
    defs = build_definitions(settings)
    snapshot = serialize_value(defs.resolve_job_def(DATA_JOB).get_job_snapshot())
    assert "MLP_ONLINE_STORE_URL" in snapshot
    assert "not-in-snapshots" not in snapshot
    with pytest.raises(Exception, match="MLP_ONLINE_STORE_URL"):
        monkeypatch.delenv("MLP_ONLINE_STORE_URL")
        dg.build_resources({"online_store": defs.resources["online_store"]}).__enter__()


def test_loading_the_definitions_does_not_import_redis(tmp_path):
    import json
    import os
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "import ml_platform.definitions as d\n"
        "d.defs()\n"
        "print(json.dumps('redis' in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "MLP_ROOT_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False
