"""Materialize raw -> features in process, into tmp_path, and check lineage, versions and checks."""

from __future__ import annotations

from datetime import date

import dagster as dg
import polars as pl
import pytest

from ml_platform.lib import metadata as keys
from ml_platform.lib.storage import DeltaPartitionStore
from ml_platform_tests.conftest import failure_messages, latest, run_days

DAYS = ["2013-01-01", "2013-01-02", "2013-01-03"]
ASSETS = ["raw_flights", "raw_weather", "validated_flights", "validated_weather", "flight_features"]


def check_evaluations(instance: dg.DagsterInstance, asset: str, check: str) -> list[dg.AssetCheckEvaluation]:
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey(asset), check), limit=50
    )
    return [
        r.event.dagster_event.event_specific_data  # type: ignore[union-attr,misc]
        for r in records
        if r.event
        and r.event.dagster_event
        and r.event.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]


def test_materializes_with_lineage_metadata_and_partition_checks(make_settings, instance):
    settings = make_settings()
    run_days(settings, instance, DAYS)
    store = DeltaPartitionStore(settings.delta_root)

    for asset in ASSETS:
        assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(DAYS)
    for asset in ASSETS:
        mat = latest(instance, asset, "2013-01-03")
        meta = mat.metadata
        # the DataVersion is the content hash, and the store holds exactly that content
        assert mat.tags["dagster/data_version"] == meta[keys.STORAGE_CONTENT_HASH].value
        assert meta[keys.LINEAGE_GIT_COMMIT].value == "test"
        assert meta[keys.LINEAGE_CODE_VERSION].value == mat.tags["dagster/code_version"]
        assert meta[keys.SCHEMA].schema.columns  # type: ignore[attr-defined]
        version = int(meta[keys.STORAGE_TABLE_VERSION].value)
        frame = store.read_at_version(asset, "2013-01-03", version)
        assert frame.height == meta[keys.ROW_COUNT].value
    assert (
        latest(instance, "raw_flights", "2013-01-01")
        .metadata[keys.LINEAGE_SOURCE]
        .value["file"]
        .endswith("flights.csv.zip")
    )

    # flight_features[01-03] read validated_flights 01-01..01-03 (the window, clipped at the first
    # partition) and validated_weather 01-02..01-03, at exactly the versions those recorded
    upstream = latest(instance, "flight_features", "2013-01-03").metadata[keys.LINEAGE_UPSTREAM].value
    read = {(u["table"], u["partition"]): u for u in upstream}
    assert set(read) == {("validated_flights", d) for d in DAYS} | {
        ("validated_weather", d) for d in DAYS[1:]
    }
    for (table, partition), pin in read.items():
        upstream_meta = latest(instance, table, partition).metadata
        assert pin["content_hash"] == upstream_meta[keys.STORAGE_CONTENT_HASH].value
        assert pin["table_version"] == upstream_meta[keys.STORAGE_TABLE_VERSION].value

    # checks are partition-scoped and passed for every day
    for asset, check in [
        ("validated_flights", "quarantine_share_within_threshold"),
        ("flight_features", "no_look_ahead"),
        ("flight_features", "complete"),
        ("flight_features", "targets_consistent"),
    ]:
        evaluations = check_evaluations(instance, asset, check)
        assert {e.partition for e in evaluations} == set(DAYS)
        assert all(e.passed for e in evaluations)


def test_same_inputs_same_data_version_and_no_new_delta_version(make_settings, instance):
    settings = make_settings()
    run_days(settings, instance, DAYS[:2])
    before = {a: latest(instance, a, DAYS[1]) for a in ASSETS}
    run_days(settings, instance, DAYS[1:2])
    for asset in ASSETS:
        after = latest(instance, asset, DAYS[1])
        assert after.tags["dagster/data_version"] == before[asset].tags["dagster/data_version"], asset
        assert (
            after.metadata[keys.STORAGE_TABLE_VERSION] == before[asset].metadata[keys.STORAGE_TABLE_VERSION]
        )
        assert after.metadata[keys.STORAGE_WRITE_SKIPPED].value is True


def test_changed_source_gives_new_version_and_old_version_stays_readable(
    make_settings, instance, drop_folder, nyc_source
):
    for dataset in ("flights", "weather"):
        folder = drop_folder(DAYS[0], dataset)
    settings = make_settings(source="drop_folder", drop_folder=folder)
    run_days(settings, instance, DAYS[:1])
    old = latest(instance, "validated_flights", DAYS[0])

    day = nyc_source.read_day("flights", date(2013, 1, 1)).frame
    drop_folder(DAYS[0], "flights", day.head(500))  # a corrected delivery replaces the day
    run_days(settings, instance, DAYS[:1])
    new = latest(instance, "validated_flights", DAYS[0])
    assert new.tags["dagster/data_version"] != old.tags["dagster/data_version"]
    assert new.metadata[keys.ROW_COUNT].value == 500

    store = DeltaPartitionStore(settings.delta_root)
    pinned = store.read_at_version(
        "validated_flights", DAYS[0], int(old.metadata[keys.STORAGE_TABLE_VERSION].value)
    )
    assert pinned.height == old.metadata[keys.ROW_COUNT].value == day.height
    from ml_platform.lib.hashing import content_hash

    assert content_hash(pinned) == old.metadata[keys.STORAGE_CONTENT_HASH].value


def test_downstream_reads_the_recorded_version_not_the_latest_files(make_settings, instance):
    settings = make_settings()
    run_days(settings, instance, DAYS[:1])
    recorded = latest(instance, "validated_flights", DAYS[0])
    # an out-of-band writer replaces the partition behind Dagster's back
    store = DeltaPartitionStore(settings.delta_root)
    current = store.read_at_version(
        "validated_flights", DAYS[0], int(recorded.metadata[keys.STORAGE_TABLE_VERSION].value)
    )
    store.write_partition("validated_flights", DAYS[0], current.head(10))

    job_settings = settings
    from ml_platform.definitions import build_definitions

    defs = build_definitions(job_settings)
    result = dg.materialize(
        [defs.resolve_assets_def("flight_features")],
        instance=instance,
        partition_key=DAYS[0],
        raise_on_error=False,
    )
    assert result.success, failure_messages(result)
    features = latest(instance, "flight_features", DAYS[0])
    assert features.metadata[keys.ROW_COUNT].value == recorded.metadata[keys.ROW_COUNT].value
    pin = next(u for u in features.metadata[keys.LINEAGE_UPSTREAM].value if u["table"] == "validated_flights")
    assert pin["table_version"] == recorded.metadata[keys.STORAGE_TABLE_VERSION].value


def test_missing_upstream_window_fails_with_the_missing_partitions(make_settings, instance):
    settings = make_settings()
    run_days(settings, instance, DAYS[:1])
    from ml_platform.definitions import build_definitions

    defs = build_definitions(settings)
    result = dg.materialize(
        [defs.resolve_assets_def("flight_features")],
        instance=instance,
        partition_key="2013-01-03",
        raise_on_error=False,
    )
    assert not result.success
    message = failure_messages(result)
    assert "validated_flights" in message and "2013-01-02" in message and "2013-01-03" in message


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("missing_column", "missing column(s) distance"),
        ("wrong_dtype", "column 'distance'"),
        ("unreadable", "unreadable file"),
        ("empty_day", "empty day"),
    ],
)
def test_bad_input_fails_clearly_and_keeps_published_partitions(
    make_settings, instance, drop_folder, nyc_source, problem, expected
):
    for day in DAYS[:2]:
        for dataset in ("flights", "weather"):
            folder = drop_folder(day, dataset)
    settings = make_settings(source="drop_folder", drop_folder=folder)
    run_days(settings, instance, DAYS[:2])
    published = {a: latest(instance, a, DAYS[1]) for a in ASSETS}

    bad_day = DAYS[1]  # a bad re-delivery of an already published day
    good = nyc_source.read_day("flights", date(2013, 1, 2)).frame
    if problem == "missing_column":
        drop_folder(bad_day, "flights", good.drop("distance"))
    elif problem == "wrong_dtype":
        drop_folder(bad_day, "flights", good.with_columns(pl.lit("far").alias("distance")))
    elif problem == "unreadable":
        drop_folder(bad_day, "flights", raw_bytes=b"PAR1 this is not parquet")
    else:
        drop_folder(bad_day, "flights", good.clear())
    (result,) = run_days(settings, instance, [bad_day], expect_success=False)
    assert not result.success
    message = failure_messages(result)
    assert f"partition {bad_day}" in message
    assert f"flights/{bad_day}.parquet" in message
    assert expected in message

    store = DeltaPartitionStore(settings.delta_root)
    for asset, before in published.items():
        after = latest(instance, asset, bad_day)
        assert after.tags["dagster/data_version"] == before.tags["dagster/data_version"], asset
        version = int(before.metadata[keys.STORAGE_TABLE_VERSION].value)
        assert store.read_at_version(asset, bad_day, version).height == before.metadata[keys.ROW_COUNT].value
    # the delta table's latest state of the day is still the published one
    assert store.current("raw_flights", bad_day)[1] == tuple(
        published["raw_flights"].metadata[keys.STORAGE_FILES].value
    )


def _with_bad_distance(frame: pl.DataFrame, share: float) -> pl.DataFrame:
    n = int(frame.height * share)
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) < n).then(-1.0).otherwise(pl.col("distance")).alias("distance")
    )


def test_quarantine_threshold_fails_the_partition(make_settings, instance, drop_folder, nyc_source):
    good = nyc_source.read_day("flights", date(2013, 1, 1)).frame
    folder = drop_folder(DAYS[0], "flights", _with_bad_distance(good, 0.10))
    drop_folder(DAYS[0], "weather")
    settings = make_settings(source="drop_folder", drop_folder=folder, max_quarantine_share=0.05)
    (result,) = run_days(settings, instance, DAYS[:1], expect_success=False)
    assert not result.success
    message = failure_messages(result)
    assert "validated_flights 2013-01-01" in message and "above the allowed 5.0%" in message
    assert DAYS[0] not in instance.get_materialized_partitions(dg.AssetKey("validated_flights"))
    assert DAYS[0] not in instance.get_materialized_partitions(dg.AssetKey("flight_features"))
    (evaluation,) = check_evaluations(instance, "validated_flights", "quarantine_share_within_threshold")
    assert evaluation.passed is False and evaluation.partition == DAYS[0]
    quarantined = DeltaPartitionStore(settings.delta_root).read_at_version("quarantine_flights", DAYS[0], 0)
    assert quarantined.height == int(good.height * 0.10)
    assert quarantined["_quarantine_reason"].str.contains("distance").all()


def test_quarantined_rows_below_threshold_are_excluded_and_warned(
    make_settings, instance, drop_folder, nyc_source
):
    good = nyc_source.read_day("flights", date(2013, 1, 1)).frame
    folder = drop_folder(DAYS[0], "flights", _with_bad_distance(good, 0.02))
    drop_folder(DAYS[0], "weather")
    settings = make_settings(source="drop_folder", drop_folder=folder, max_quarantine_share=0.05)
    run_days(settings, instance, DAYS[:1])
    bad = int(good.height * 0.02)
    validated = latest(instance, "validated_flights", DAYS[0])
    assert validated.metadata[keys.QUALITY_QUARANTINED_ROWS].value == bad
    assert validated.metadata[keys.ROW_COUNT].value == good.height - bad
    assert latest(instance, "flight_features", DAYS[0]).metadata[keys.ROW_COUNT].value == good.height - bad
    (warning,) = check_evaluations(instance, "validated_flights", "no_quarantined_rows")
    assert warning.passed is False and warning.severity == dg.AssetCheckSeverity.WARN


def test_range_runs_give_each_day_its_own_version_and_checks(make_settings, instance, tmp_path):
    """`mlp demo` runs one layer over many days; each day must look exactly as if run alone."""
    from ml_platform.definitions import DATA_JOB, build_definitions
    from ml_platform.demo import run_partitions

    settings = make_settings()
    job = build_definitions(settings).resolve_job_def(DATA_JOB)
    outcomes = run_partitions(instance, job, DAYS, chunk_days=2)
    assert all(o.success for o in outcomes), [o.error for o in outcomes]
    # four layers: raw; validated; features and the validated-flight profiles; the feature profiles
    assert [(o.first, o.last) for o in outcomes] == [(DAYS[0], DAYS[1])] * 4 + [(DAYS[2], DAYS[2])] * 4

    for asset in ASSETS:
        versions = {d: latest(instance, asset, d) for d in DAYS}
        for day, mat in versions.items():
            assert mat.tags["dagster/data_version"] == mat.metadata[keys.STORAGE_CONTENT_HASH].value, (
                asset,
                day,
            )
        assert len({m.tags["dagster/data_version"] for m in versions.values()}) == len(DAYS), asset
    evaluations = check_evaluations(instance, "flight_features", "no_look_ahead")
    assert {e.partition for e in evaluations if e.partition} == set(DAYS)
    assert all(e.passed for e in evaluations)

    # the same day run alone, one partition per run as the UI does, gets the same data versions
    other = make_settings(storage_root="storage2")
    home = tmp_path / "home2"
    home.mkdir()
    with dg.DagsterInstance.local_temp(
        tempdir=str(home), overrides={"telemetry": {"enabled": False}}
    ) as fresh:
        run_days(other, fresh, DAYS[:1])
        for asset in ASSETS:
            alone = latest(fresh, asset, DAYS[0]).tags["dagster/data_version"]
            assert alone == latest(instance, asset, DAYS[0]).tags["dagster/data_version"], asset


def test_a_range_run_over_several_layers_is_refused_clearly(make_settings, instance):
    from ml_platform.definitions import DATA_JOB, build_definitions

    job = build_definitions(make_settings()).resolve_job_def(DATA_JOB)
    result = job.execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[1]},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False,
    )
    assert not result.success
    message = failure_messages(result)
    assert "must not also select its downstream assets" in message and "run one layer at a time" in message
