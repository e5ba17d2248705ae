"""Write-audit-publish end to end on a real lakeFS: the data job, its checks, the publish sensor.

Skipped unless a lakeFS server is configured (``LAKEFS_ENDPOINT``, ``LAKEFS_ACCESS_KEY_ID``,
``LAKEFS_SECRET_ACCESS_KEY``, ``LAKEFS_STORAGE_NAMESPACE``; docs/lakefs.md). Each test makes its own
repository and deletes it.

* A run whose checks pass writes on ``run-<run_id>``; nothing reaches ``main`` until the publish
  sensor merges it; the materialization's data version is the lakeFS commit, and a later run
  reads exactly that commit.
* A run whose blocking quarantine check fails is never merged: ``main`` stays empty, and another
  run that tries to read what it wrote is refused.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import date

import dagster as dg
import polars as pl
import pytest

from ml_platform.definitions import build_definitions
from ml_platform.defs.lakefs import PUBLISH_SENSOR, UNPUBLISHED_SENSOR
from ml_platform.lib import metadata as keys
from ml_platform.lib.storage import PartitionVersion, StorageError
from ml_platform.lib.storage.lakefs import LakeFSPartitionStore, branch_for_run, connect
from ml_platform_tests.conftest import latest, run_days
from ml_platform_tests.lib.storage.test_store_contract import lakefs_skip_reason

DAY = "2013-01-01"


@pytest.fixture
def repository(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    reason = lakefs_skip_reason()
    if reason:
        pytest.skip(reason)
    import lakefs

    monkeypatch.setenv("MLP_LAKEFS_ACCESS_KEY_ID", os.environ["LAKEFS_ACCESS_KEY_ID"])
    monkeypatch.setenv("MLP_LAKEFS_SECRET_ACCESS_KEY", os.environ["LAKEFS_SECRET_ACCESS_KEY"])
    client = connect(
        os.environ["LAKEFS_ENDPOINT"],
        os.environ["LAKEFS_ACCESS_KEY_ID"],
        os.environ["LAKEFS_SECRET_ACCESS_KEY"],
    )
    name = f"mlp-wap-{uuid.uuid4().hex[:10]}"
    namespace = f"{os.environ['LAKEFS_STORAGE_NAMESPACE'].rstrip('/')}/{name}"
    repo = lakefs.Repository(name, client=client).create(storage_namespace=namespace, default_branch="main")
    try:
        yield name
    finally:
        repo.delete()


def _settings(make_settings, repository: str, **overrides):
    return make_settings(
        storage_backend="lakefs",
        lakefs_endpoint=os.environ["LAKEFS_ENDPOINT"],
        lakefs_repository=repository,
        lakefs_access_key_id=os.environ["MLP_LAKEFS_ACCESS_KEY_ID"],
        lakefs_secret_access_key=os.environ["MLP_LAKEFS_SECRET_ACCESS_KEY"],
        **overrides,
    )


def _run_sensor(
    defs: dg.Definitions, name: str, instance: dg.DagsterInstance, run_id: str, event: str
) -> object:
    sensor = next(s for s in defs.sensors if s.name == name)  # type: ignore[union-attr]
    run = instance.get_run_by_id(run_id)
    assert run is not None
    kwargs = {}
    if name == PUBLISH_SENSOR:
        kwargs["resources"] = {"versioned_store": defs.resources["versioned_store"]}  # type: ignore[index]
    context = dg.build_run_status_sensor_context(
        sensor_name=name,
        dagster_instance=instance,
        dagster_run=run,
        dagster_event=dg.DagsterEvent(
            event_type_value=event, job_name=run.job_name, event_specific_data=None
        ),
        **kwargs,
    )
    if name == UNPUBLISHED_SENSOR:
        context = context.for_run_failure()
    return sensor(context)  # type: ignore[operator]


def _main_paths(store: LakeFSPartitionStore, table: str) -> list[str]:
    return [o.path for o in store.repository.ref("main").objects(prefix=f"{store.prefix}{table}/")]


def test_a_passing_run_is_published_only_by_the_sensor(make_settings, instance, repository):
    settings = _settings(make_settings, repository)
    defs = build_definitions(settings)
    (result,) = run_days(settings, instance, [DAY])
    resource = defs.resources["versioned_store"]  # type: ignore[index]
    store = resource.lakefs_store(result.run_id)  # type: ignore[union-attr]
    assert store.branch == branch_for_run(result.run_id) and store.branch_exists(store.branch)
    assert _main_paths(store, "validated_flights") == []  # audited on the branch, not published

    mat = latest(instance, "validated_flights", DAY)
    commit = str(mat.metadata[keys.STORAGE_COMMIT].value)
    assert mat.tags["dagster/data_version"] == commit  # the lakeFS commit is the data version
    assert keys.STORAGE_TABLE_VERSION not in mat.metadata

    _run_sensor(defs, PUBLISH_SENSOR, instance, result.run_id, "PIPELINE_SUCCESS")
    assert not store.branch_exists(store.branch)
    files = mat.metadata[keys.STORAGE_FILES].value
    assert _main_paths(store, "validated_flights") == [f"{store.prefix}validated_flights/{files[0]}"]  # type: ignore[index]

    # another run reads exactly the pinned commit, and it hashes to what lineage recorded
    pin = PartitionVersion(
        table="validated_flights",
        partition=DAY,
        table_version=None,
        content_hash=str(mat.metadata[keys.STORAGE_CONTENT_HASH].value),
        row_count=int(mat.metadata[keys.ROW_COUNT].value),  # type: ignore[arg-type]
        files=tuple(files),  # type: ignore[arg-type]
        commit=commit,
    )
    assert resource.lakefs_store("a-later-run").read([pin]).height == pin.row_count  # type: ignore[union-attr]


def test_a_run_that_fails_its_blocking_check_never_reaches_main(
    make_settings, instance, repository, drop_folder, nyc_source
):
    good = nyc_source.read_day("flights", date(2013, 1, 1)).frame
    n = int(good.height * 0.10)
    bad = good.with_columns(
        pl.when(pl.int_range(pl.len()) < n).then(-1.0).otherwise(pl.col("distance")).alias("distance")
    )
    folder = drop_folder(DAY, "flights", bad)
    drop_folder(DAY, "weather")
    settings = _settings(
        make_settings, repository, source="drop_folder", drop_folder=folder, max_quarantine_share=0.05
    )
    defs = build_definitions(settings)
    (result,) = run_days(settings, instance, [DAY], expect_success=False)
    assert not result.success
    _run_sensor(defs, UNPUBLISHED_SENSOR, instance, result.run_id, "PIPELINE_FAILURE")

    resource = defs.resources["versioned_store"]  # type: ignore[index]
    failed = resource.lakefs_store(result.run_id)  # type: ignore[union-attr]
    assert failed.branch_exists(failed.branch)  # kept for inspection
    assert _main_paths(failed, "raw_flights") == []
    assert _main_paths(failed, "quarantine_flights") == []

    raw = latest(instance, "raw_flights", DAY)  # materialized on the failed run's branch
    pin = PartitionVersion(
        table="raw_flights",
        partition=DAY,
        table_version=None,
        content_hash=str(raw.metadata[keys.STORAGE_CONTENT_HASH].value),
        row_count=int(raw.metadata[keys.ROW_COUNT].value),  # type: ignore[arg-type]
        files=tuple(raw.metadata[keys.STORAGE_FILES].value),  # type: ignore[arg-type]
        commit=str(raw.metadata[keys.STORAGE_COMMIT].value),
    )
    with pytest.raises(StorageError, match="never published"):
        resource.lakefs_store("another-run").read([pin])  # type: ignore[union-attr]
