"""MLP_STORAGE_BACKEND=lakefs, as far as it runs without a lakeFS server.

The store itself is covered by the contract suite (``lib/storage/test_store_contract.py``) and the
whole write-audit-publish flow by ``integration/test_lakefs_wap.py``; both need a lakeFS server and
are skipped here with the reason. These tests check the Dagster side with the real SDK pointed at a
closed port: the settings, the sensors, the secrets, and that a run writes on ``run-<run_id>``.
"""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from ml_platform.definitions import DATA_JOB, build_definitions
from ml_platform.defs.lakefs import PUBLISH_SENSOR, UNPUBLISHED_SENSOR, publish_metadata
from ml_platform.lib.storage import StorageError
from ml_platform.resources.storage import VersionedStoreResource
from ml_platform_tests.conftest import QUIET

SECRET = "lakefs-secret-7b1f0c9e-do-not-leak"
CLOSED = "http://127.0.0.1:9/api/v1"


@pytest.fixture
def lakefs_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLP_LAKEFS_ACCESS_KEY_ID", "AKIAMLPTEST")
    monkeypatch.setenv("MLP_LAKEFS_SECRET_ACCESS_KEY", SECRET)


def lakefs_settings(make_settings, **overrides):
    import os

    return make_settings(
        storage_backend="lakefs",
        lakefs_endpoint=CLOSED,
        lakefs_access_key_id=os.environ["MLP_LAKEFS_ACCESS_KEY_ID"],
        lakefs_secret_access_key=os.environ["MLP_LAKEFS_SECRET_ACCESS_KEY"],
        **overrides,
    )


def test_settings_refuse_lakefs_without_its_endpoint_and_keys(make_settings):
    with pytest.raises(
        ValueError, match="MLP_LAKEFS_ENDPOINT, MLP_LAKEFS_ACCESS_KEY_ID, MLP_LAKEFS_SECRET_ACCESS_KEY"
    ):
        make_settings(storage_backend="lakefs")


def test_delta_has_no_publish_sensors(make_settings):
    names = {s.name for s in build_definitions(make_settings()).sensors}  # type: ignore[union-attr]
    assert not names & {PUBLISH_SENSOR, UNPUBLISHED_SENSOR}


def test_lakefs_adds_running_publish_sensors_and_keeps_the_secret_out_of_snapshots(make_settings, lakefs_env):
    defs = build_definitions(lakefs_settings(make_settings))
    sensors = {s.name: s for s in defs.sensors}  # type: ignore[union-attr]
    for name in (PUBLISH_SENSOR, UNPUBLISHED_SENSOR):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors[PUBLISH_SENSOR].required_resource_keys == {"versioned_store"}
    job = defs.resolve_job_def(DATA_JOB)
    snapshot = serialize_value(job.get_job_snapshot())
    assert "MLP_LAKEFS_SECRET_ACCESS_KEY" in snapshot  # the variable's name, resolved in the step
    assert SECRET not in snapshot


def test_a_run_writes_on_its_own_branch(make_settings, lakefs_env, instance):
    """The real SDK against a closed port: the failure names the asset, partition and run branch."""
    job = build_definitions(lakefs_settings(make_settings)).resolve_job_def(DATA_JOB)
    result = job.execute_in_process(
        partition_key="2013-01-01", instance=instance, run_config=QUIET, raise_on_error=False
    )
    assert not result.success
    messages = ""
    for event in result.all_events:
        error = event.step_failure_data.error if event.is_step_failure else None  # type: ignore[union-attr]
        while error is not None:
            messages += error.message
            error = error.cause
    assert f"creating branch run-{result.run_id} from main in ml-platform: lakeFS unreachable" in messages
    assert "raw_flights[2013-01-01]" in messages
    assert SECRET not in messages


def test_the_publish_sensor_merges_the_branch_of_the_run_that_succeeded(make_settings, lakefs_env, instance):
    defs = build_definitions(lakefs_settings(make_settings))
    sensor = next(s for s in defs.sensors if s.name == PUBLISH_SENSOR)  # type: ignore[union-attr]
    run = instance.create_run_for_job(
        dg.GraphDefinition(name="noop", node_defs=[]).to_job(), run_id="4f1c2a9e-0d3b-4c55-9a1e-2b7d9c0e8f11"
    )
    context = dg.build_run_status_sensor_context(
        sensor_name=PUBLISH_SENSOR,
        dagster_instance=instance,
        dagster_run=run,
        dagster_event=dg.DagsterEvent(
            event_type_value="PIPELINE_SUCCESS", job_name="noop", event_specific_data=None
        ),
        resources={"versioned_store": defs.resources["versioned_store"]},  # type: ignore[index]
    )
    with pytest.raises(
        StorageError, match=r"looking up branch ml-platform/run-4f1c2a9e-0d3b-4c55-9a1e-2b7d9c0e8f11"
    ):
        sensor(context)  # type: ignore[operator]


def test_the_merge_commit_names_run_job_and_partition(instance):
    run = instance.create_run_for_job(
        dg.GraphDefinition(name="noop", node_defs=[]).to_job(),
        tags={"dagster/partition": "2013-01-01", "dagster/backfill": "abcd"},
    )
    assert publish_metadata(run) == {
        "dagster.run_id": run.run_id,
        "dagster.job": "noop",
        "dagster.partition": "2013-01-01",
        "dagster.backfill": "abcd",
    }


def test_the_store_needs_a_run_and_its_configuration():
    with pytest.raises(StorageError, match="branch per run: it needs a Dagster run"):
        VersionedStoreResource(backend="lakefs", delta_root="unused").store()
    with pytest.raises(StorageError, match="lakefs_endpoint, lakefs_repository"):
        VersionedStoreResource(backend="lakefs", delta_root="unused").lakefs_store("r1")
