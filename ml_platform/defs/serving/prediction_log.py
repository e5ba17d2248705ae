"""``prediction_log``: a flight day's online predictions, from the served Bento's JSON lines to Delta.

The service appends one line per prediction to ``<prediction_log_dir>/<flight day>/<host>-<pid>.jsonl``
(:mod:`ml_platform.lib.serving.prediction_log`). ``prediction_log[D]`` reads every ``*.jsonl`` of
D's folder up to its last complete line, checks and flattens each line, and publishes one Delta
partition per flight day (the flight's local date, the day of ``flight_features`` and of its
actuals), which ``prediction_log_profiles`` profiles and ``live_performance`` judges.

**Lineage of a raw log.** A log file is not a Delta partition: it may still be appended to. What a
materialization read is recorded per file in ``lineage/source``: name, bytes read, complete lines,
sha256 of exactly those bytes, and the bytes of a line still being written (not read). Re-reading
``bytes_read`` bytes of the file gives the same hash; the partition's content hash is the data
version, so reading the same lines again publishes nothing new.

**Which features served each line.** Each line names the ``online_features`` snapshot that answered
(day, content hash, written at) and whether its features were stale (the departure beyond the
freshness budget); lines older than those keys read null. The materialization records
``prediction_log/stale_predictions`` and the predictions per snapshot
(``prediction_log/predictions_by_online_snapshot``).

**Malformed lines go to a quarantine table**, ``quarantine_prediction_log`` (file, line, byte
offset, reason, raw line), as validation quarantines rows, rather than into the partition with a
``_parse_error`` column: a line that cannot be parsed has no typed values to put in the partition's
columns, and every consumer (profiles, drift, live performance) would have to filter it out. The
quarantine keeps the raw line and where it was, so it can be fixed and re-read. The check
``no_malformed_log_lines`` (WARN, not blocking) reports them; the valid lines are published.

**When it runs.** Not eagerly while the day is live: the log of D grows until D's last flight has
departed, and a partition rematerialized on every append would re-judge ``live_performance`` again
and again on a partial day. Automation collects D once, at 06:00 New York time the next morning
(every flight of D has departed; a prediction is asked before departure). A line that arrives later
(a request about a departed flight) is picked up by rematerializing the day by hand; the bytes
recorded per file show what the published version had read.
"""

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from ml_platform.defs.common import AssetBuild
from ml_platform.defs.k8s import DELAY_MODEL, k8s_tags
from ml_platform.defs.publish import (
    AssetEvent,
    PartitionReporter,
    PartitionResult,
    RecordedVersions,
    describe,
    partition_metadata,
    version_metadata,
)
from ml_platform.lib import metadata as keys
from ml_platform.lib.features.transforms import LOCAL_TZ
from ml_platform.lib.versioning import code_version_of_names
from ml_platform.resources import VersionedStoreResource

NAME = "prediction_log"
QUARANTINE = "quarantine_prediction_log"
CHECK = "no_malformed_log_lines"
MODULES = ("ml_platform.lib.serving.prediction_log", "ml_platform.lib.storage.delta")
#: When automation collects day D: 06:00 on D + 1 in New York, once every flight of D has departed.
COLLECT_CRON = "0 6 * * *"
#: Metadata keys.
LOG_FOLDER = "prediction_log/folder"
LOG_LINES = "prediction_log/lines"
LOG_MALFORMED = "prediction_log/malformed_by_reason"
LOG_PENDING_BYTES = "prediction_log/pending_bytes"
LOG_MODEL_VERSIONS = "prediction_log/predictions_by_model_version"
LOG_STALE = "prediction_log/stale_predictions"
LOG_SNAPSHOTS = "prediction_log/predictions_by_online_snapshot"


def build_prediction_log_assets(build: AssetBuild, folder: Path) -> list[dg.AssetsDefinition]:
    """The prediction log asset, reading the day folders under ``folder`` (``prediction_log_dir``)."""
    parts = build.partitioning
    code_version = code_version_of_names(*MODULES)

    @dg.asset(
        name=NAME,
        group_name="serving",
        kinds={"delta"},
        op_tags=k8s_tags(NAME, "small", model=DELAY_MODEL),
        partitions_def=parts.daily,
        # no backfill policy, like the other assets of the monitoring job (one run per day)
        output_required=False,  # no log for the day: nothing published (and a range run reports per day)
        code_version=code_version,
        automation_condition=None
        if build.automation is None
        else dg.AutomationCondition.on_cron(COLLECT_CRON, LOCAL_TZ),
        description=(
            "Every online prediction of the flights of the day, as the served model logged it: the"
            " request, the feature row it scored, the prediction, the model version, the latency and"
            f" the request id. Read from {folder}/<day>/*.jsonl up to each file's last complete line;"
            " per file the bytes read and their sha256 are recorded. Malformed lines are"
            f" quarantined in '{QUARANTINE}'. Collected at 06:00 New York time the next morning."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                CHECK,
                asset=NAME,
                partitions_def=parts.daily,
                description=f"Warns when a line of the day's log could not be read ({QUARANTINE}).",
            )
        ],
    )
    def _asset(
        context: dg.AssetExecutionContext, versioned_store: VersionedStoreResource
    ) -> Iterator[AssetEvent]:
        from ml_platform.lib.serving.prediction_log import read_day

        store = versioned_store.store()
        reporter = PartitionReporter(context)
        published = RecordedVersions(context.instance, context.asset_key, reporter.partitions, table=NAME)
        for partition in reporter.partitions:
            where = f"{NAME}[{partition}]"
            day = read_day(folder, date.fromisoformat(partition))
            if day is None:
                context.log.info(
                    f"{where}: no complete log line in {folder / partition}/*.jsonl (no online"
                    " prediction of the day's flights yet); nothing published"
                )
                continue
            quarantined = store.write_partition(QUARANTINE, partition, day.quarantined)
            version = store.write_partition(
                NAME, partition, day.frame, unless_same_as=published.get(partition)
            )
            reasons = day.reasons()
            reporter.log(
                f"{where}: {day.frame.height} predictions from {len(day.files)} file(s),"
                f" {day.quarantined.height} malformed line(s) quarantined -> {describe(version)}"
            )
            if day.quarantined.height:
                context.log.warning(f"{where}: {day.quarantined.height} malformed line(s): {reasons}")
            evidence: dict[str, Any] = {
                "partition": partition,
                "lines": day.lines,
                "malformed_lines": day.quarantined.height,
                "by_reason": dg.MetadataValue.json(reasons),
                "quarantine_table_version": version_metadata(quarantined),
                "first": dg.MetadataValue.json(
                    day.quarantined.head(5).drop("raw_line").to_dicts() if day.quarantined.height else []
                ),
            }
            yield from reporter.publish(
                PartitionResult(
                    partition,
                    version,
                    partition_metadata(
                        version,
                        day.frame,
                        table_uri=store.table_uri(NAME),
                        upstream=[],
                        code_version=code_version,
                        build=build.build,
                        extra={
                            keys.LINEAGE_SOURCE: dg.MetadataValue.json(
                                {"folder": str(day.folder), "files": [f.to_metadata() for f in day.files]}
                            ),
                            LOG_FOLDER: dg.MetadataValue.path(str(day.folder)),
                            LOG_LINES: dg.MetadataValue.int(day.lines),
                            LOG_PENDING_BYTES: dg.MetadataValue.int(sum(f.pending_bytes for f in day.files)),
                            LOG_MODEL_VERSIONS: dg.MetadataValue.json(_by_version(day.frame)),
                            LOG_STALE: dg.MetadataValue.int(int(day.frame["stale"].sum())),
                            LOG_SNAPSHOTS: dg.MetadataValue.json(_by_snapshot(day.frame)),
                            keys.QUALITY_QUARANTINED_ROWS: dg.MetadataValue.int(day.quarantined.height),
                            keys.QUALITY_QUARANTINE_TABLE: version_metadata(quarantined),
                            LOG_MALFORMED: dg.MetadataValue.json(reasons),
                        },
                    ),
                    checks=[
                        dg.AssetCheckResult(
                            check_name=CHECK,
                            passed=day.quarantined.height == 0,
                            severity=dg.AssetCheckSeverity.WARN,
                            description=(
                                f"all {day.lines} lines read"
                                if day.quarantined.height == 0
                                else f"{day.quarantined.height} of {day.lines} lines quarantined in"
                                f" {QUARANTINE}: {reasons}"
                            ),
                            metadata=evidence,
                        )
                    ],
                )
            )
        if reporter.results or reporter.ranged:
            yield from reporter.finish()
        else:  # Dagster requires the check's output: no line read, none malformed
            yield dg.AssetCheckResult(
                check_name=CHECK,
                passed=True,
                severity=dg.AssetCheckSeverity.WARN,
                description="no log for the day: nothing read, nothing published",
                metadata={"partition": reporter.partitions[0], "lines": 0, "malformed_lines": 0},
            )

    return [_asset]


def _by_snapshot(frame: pl.DataFrame) -> dict[str, int]:
    """Predictions per online snapshot that served them (``<day>@<hash, 12 hex>``; ``unknown`` for
    lines older than the keys): a day answered from an old snapshot shows at a glance."""
    counts = frame.group_by("online_snapshot_day", "online_snapshot_hash").len()
    out = {
        "unknown" if h is None else f"{d}@{h[:12]}": int(n)
        for d, h, n in counts.sort("online_snapshot_day", "online_snapshot_hash", nulls_last=True).iter_rows()
    }
    return out


def _by_version(frame: pl.DataFrame) -> dict[str, int]:
    """Predictions per model version (a canary or a rollback serves two on one day)."""
    counts = frame.group_by("model_version").len().sort("model_version")
    return {str(v): int(n) for v, n in counts.iter_rows()}
