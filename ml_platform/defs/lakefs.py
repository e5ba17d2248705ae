"""Write-audit-publish on lakeFS: the sensors that publish a run's branch, or keep it out of main.

With ``MLP_STORAGE_BACKEND=lakefs`` every run writes on its own branch ``run-<run_id>``
(:class:`~ml_platform.resources.storage.VersionedStoreResource`). A blocking check that fails
fails its step and so the run. Therefore:

* ``lakefs_publish_sensor`` (run succeeded = every blocking check passed) merges the run's branch
  into main and deletes it;
* ``lakefs_unpublished_sensor`` (run failed) leaves the branch where it is, unmerged, and says so
  in its log: the data stays readable by commit for a person to inspect, and never reaches main.
  Re-executing the run from failure starts the new run's branch from this one, and publishing
  the re-execution publishes both.

Both sensors run by default (publishing is part of a run's correctness, not optional automation)
and need the daemon, like every Dagster sensor.
"""

from __future__ import annotations

import dagster as dg

from ml_platform.lib.storage.lakefs import branch_for_run
from ml_platform.resources.storage import VersionedStoreResource

PUBLISH_SENSOR = "lakefs_publish_sensor"
UNPUBLISHED_SENSOR = "lakefs_unpublished_sensor"


def publish_metadata(run: dg.DagsterRun) -> dict[str, str]:
    """The lakeFS merge commit's metadata: which Dagster run, job and partition it publishes."""
    metadata = {"dagster.run_id": run.run_id, "dagster.job": run.job_name}
    for tag in ("dagster/partition", "dagster/backfill", "dagster/sensor_name"):
        if tag in run.tags:
            metadata[tag.replace("/", ".")] = run.tags[tag]
    return metadata


def build_lakefs_sensors() -> list[dg.SensorDefinition]:
    """The publish and unpublished sensors (only defined for the lakeFS backend)."""

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name=PUBLISH_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Write-audit-publish: merges a succeeded run's lakeFS branch run-<run_id> into main"
        " (its blocking checks all passed) and deletes the branch.",
    )
    def lakefs_publish_sensor(
        context: dg.RunStatusSensorContext, versioned_store: VersionedStoreResource
    ) -> dg.SkipReason | None:
        run = context.dagster_run
        store = versioned_store.lakefs_store(run.run_id)
        merged = store.publish(f"publish Dagster run {run.run_id} ({run.job_name})", publish_metadata(run))
        if merged is None:
            return dg.SkipReason(f"run {run.run_id} wrote nothing to lakeFS: nothing to publish")
        context.log.info(f"published {store.branch} into {store.main}: merge commit {merged}")
        return None

    @dg.run_failure_sensor(
        name=UNPUBLISHED_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Write-audit-publish: a failed run's lakeFS branch stays unmerged (kept for"
        " inspection); re-execute the run from failure to publish it.",
    )
    def lakefs_unpublished_sensor(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        context.log.warning(
            f"run {run.run_id} ({run.job_name}) failed: lakeFS branch {branch_for_run(run.run_id)} is kept"
            " unmerged; its partitions stay out of main. Re-execute the run from failure to publish"
            " them, or delete the branch."
        )

    return [lakefs_publish_sensor, lakefs_unpublished_sensor]
