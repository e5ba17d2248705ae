"""``openlineage_sensor``: exports the new materializations as OpenLineage run events, every 30 s.

It requests no runs: each tick calls :func:`ml_platform.lineage.openlineage.export_openlineage`,
which emits what was recorded since the cursor (``<storage>/openlineage/cursor.json``, shared with
``mlp openlineage export``) and moves the cursor. The tick says how many events it emitted. The
export (and openlineage-python) is imported when a tick runs, not when the Definitions load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import dagster as dg

from ml_platform.settings import PlatformSettings

SENSOR: Final = "openlineage_sensor"
INTERVAL_S: Final = 30
#: Batches of Dagster events per tick (500 each); a backlog is worked off over the next ticks.
BATCHES_PER_TICK: Final = 4


def build_openlineage_sensor(
    settings: PlatformSettings, *, state_dir: Path | None = None
) -> dg.SensorDefinition:
    """The export sensor for ``settings``; ``state_dir`` moves its cursor and events file (tests)."""
    from ml_platform.lineage.openlineage.config import strip_credentials

    transport = settings.openlineage_transport
    where = {
        "file": f"appends them to {settings.openlineage_state_dir / 'events.jsonl'}",
        "http": f"POSTs them to {strip_credentials(settings.openlineage_url or '')}",
        "none": "is off (MLP_OPENLINEAGE_TRANSPORT=none)",
    }[transport]

    @dg.sensor(
        name=SENSOR,
        minimum_interval_seconds=INTERVAL_S,
        default_status=dg.DefaultSensorStatus.STOPPED
        if transport == "none"
        else dg.DefaultSensorStatus.RUNNING,
        description=(
            "Exports every new materialization (and failure to materialize) as OpenLineage START and"
            " COMPLETE/FAIL run events with the ML facets (model version, metrics, alias, approval,"
            f" code), validated before they are emitted; it {where}. Running by default whenever a"
            " transport is set: it only reads the event log and writes lineage events, it launches"
            " no run and changes no asset, so there is no demo or replay for it to disturb (unlike"
            " the automation and retrain sensors). A cursor file keeps each event exported once."
        ),
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        from ml_platform.lineage.openlineage.config import OpenLineageConfig
        from ml_platform.lineage.openlineage.cursor import ExportBusy
        from ml_platform.lineage.openlineage.export import export_openlineage, partitions_of

        if transport == "none":
            return dg.SensorResult(skip_reason="MLP_OPENLINEAGE_TRANSPORT=none: nothing is exported")
        config = OpenLineageConfig.from_settings(settings, state_dir=state_dir)
        try:
            summary = export_openlineage(
                context.instance,
                config,
                partitions=partitions_of(context.repository_def),
                max_batches=BATCHES_PER_TICK,
            )
        except ExportBusy as exc:
            return dg.SensorResult(skip_reason=str(exc))
        if not summary.events:
            return dg.SensorResult(
                skip_reason=f"nothing new since storage id {summary.cursor_before} ({config.target})",
                cursor=str(summary.cursor_after),
            )
        message = (
            f"emitted {summary.events} OpenLineage events for {summary.materializations} materializations"
            f" and {summary.failures} failures to {config.target}; cursor {summary.cursor_before} ->"
            f" {summary.cursor_after}" + (" (more waiting: next tick)" if summary.more else "")
        )
        context.log.info(message)
        return dg.SensorResult(skip_reason=message, cursor=str(summary.cursor_after))

    return _sensor
