"""OpenLineage run events from what one materialization recorded (plain data in, typed events out).

:class:`Recorded` is everything the exporter read about one Dagster event (a materialization, or a
failure to materialize): its identity, its metadata, its resolved ``lineage/upstream`` entries, its
check results, the audit-log event it names. :func:`build_events` turns it into a START and a
COMPLETE (or FAIL) :class:`~openlineage.client.event_v2.RunEvent`, built only from those records.
Nothing here reads Dagster, MLflow or the stores: that is :mod:`.export`'s job.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.generated import (
    data_quality_assertions_dataset,
    dataset_version_dataset,
    error_message_run,
    job_type_job,
    nominal_time_run,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    schema_dataset,
)

from ml_platform import __version__
from ml_platform.lib import metadata as keys
from ml_platform.lineage.openlineage import facets as F
from ml_platform.lineage.openlineage.config import OpenLineageConfig

#: The namespace of the uuid5 run ids: the same (Dagster run, asset, partition) gets the same id.
RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ml_platform:openlineage:run")
PROMOTION_CHAMPION = "champion"
_EVALUATED = ("model", "baseline", "champion")


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as OpenLineage names it, and the version of it that was written or read."""

    namespace: str
    name: str
    version: str | None = None


@dataclass(frozen=True)
class Upstream:
    """One recorded ``lineage/upstream`` entry, and the materialization it resolves to."""

    entry: Mapping[str, Any]
    dataset: DatasetRef
    #: The storage id and run of the materialization that recorded exactly what was read.
    storage_id: int | None = None
    run_id: str | None = None
    #: Why no materialization resolves the entry (the dataset is then named from settings).
    unresolved: str | None = None

    @property
    def is_pin(self) -> bool:
        return "table" in self.entry and "partition" in self.entry and "content_hash" in self.entry


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    severity: str | None
    description: str | None


@dataclass(frozen=True)
class AuditRecord:
    """The registry audit-log event a materialization names (``registry/audit_event``)."""

    event_id: str
    action: str
    alias: str | None
    version: str | None
    previous_version: str | None
    actor: str
    reason: str
    occurred_at: str
    event_hash: str


@dataclass(frozen=True)
class Recorded:
    """One materialization and what it recorded; or one asset (partition or range) a failed step did
    not materialize, with the step's error."""

    kind: Literal["materialization", "failure"]
    asset: str
    partition: str | None
    storage_id: int
    run_id: str
    #: The Dagster job of the run (the parent run facet's job).
    job_name: str | None
    step_key: str | None
    #: ISO 8601 UTC: when the step started (else the run), and when the event was recorded.
    started_at: str | None
    recorded_at: str
    #: Metadata values as recorded (plain JSON-like values), by key.
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: ``dagster/column_schema`` as (column, type) pairs.
    schema: list[tuple[str, str]] | None = None
    code_version: str | None = None
    code_version_from: str | None = None
    git_commit: str | None = None
    data_version: str | None = None
    #: The dataset the asset wrote (None for a failure).
    output: DatasetRef | None = None
    upstream: list[Upstream] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    #: The partition's time window (ISO 8601), when the asset's partitions are time windows.
    nominal: tuple[str, str] | None = None
    audit: AuditRecord | None = None
    audit_verified: bool | None = None
    error_message: str | None = None
    error_stack: str | None = None

    @property
    def label(self) -> str:
        where = f"[{self.partition}]" if self.partition is not None else ""
        return f"{self.asset}{where} run {self.run_id} (storage id {self.storage_id})"


def run_id_of(dagster_run_id: str, asset: str, partition: str | None, storage_id: int | None = None) -> str:
    """The OpenLineage run id of one asset partition in one Dagster run (stable across re-exports).

    A runless event (``report_runless_asset_event``: no Dagster run) is its own run, named by its
    storage id.
    """
    run = dagster_run_id or f"runless:{storage_id}"
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{run}\0{asset}\0{partition or ''}"))


def build_events(rec: Recorded, config: OpenLineageConfig, engine_version: str) -> list[RunEvent]:
    """START then COMPLETE (a materialization) or FAIL (a failure to materialize)."""
    producer = config.producer
    run_id = run_id_of(rec.run_id, rec.asset, rec.partition, rec.storage_id)
    job = Job(
        namespace=config.namespace,
        name=rec.asset,
        facets={
            "jobType": job_type_job.JobTypeJobFacet(
                processingType="BATCH", integration="DAGSTER", jobType="ASSET", producer=producer
            )
        },
    )
    common: dict[str, Any] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=engine_version,
            name="Dagster",
            openlineageAdapterVersion=__version__,
            producer=producer,
        ),
    }
    if rec.job_name and _is_uuid(rec.run_id):
        common["parent"] = parent_run.ParentRunFacet(
            run=parent_run.Run(runId=rec.run_id),
            job=parent_run.Job(namespace=config.namespace, name=rec.job_name),
            producer=producer,
        )
    if rec.nominal is not None:
        common["nominalTime"] = nominal_time_run.NominalTimeRunFacet(
            nominalStartTime=rec.nominal[0], nominalEndTime=rec.nominal[1], producer=producer
        )
    inputs = [_input(u, producer) for u in rec.upstream]
    start = RunEvent(
        eventType=RunState.START,
        eventTime=rec.started_at or rec.recorded_at,
        run=Run(runId=run_id, facets=dict(common)),
        job=job,
        inputs=inputs,
        outputs=[OutputDataset(namespace=rec.output.namespace, name=rec.output.name)] if rec.output else [],
        producer=producer,
    )
    run_facets = {**common, **_ml_facets(rec, producer)}
    if rec.kind == "failure":
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=rec.error_message or "the asset failed to materialize (no error recorded)",
            programmingLanguage="python",
            stackTrace=rec.error_stack or None,
            producer=producer,
        )
    end = RunEvent(
        eventType=RunState.FAIL if rec.kind == "failure" else RunState.COMPLETE,
        eventTime=rec.recorded_at,
        run=Run(runId=run_id, facets=run_facets),
        job=job,
        inputs=inputs,
        outputs=[_output(rec, producer)] if rec.output else [],
        producer=producer,
    )
    return [start, end]


# ------------------------------------------------------------------------------------------ datasets


def _input(u: Upstream, producer: str) -> InputDataset:
    facets: dict[str, Any] = {}
    if u.dataset.version is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=u.dataset.version, producer=producer
        )
    e = u.entry
    if u.is_pin:
        facets["mlp_partition"] = F.MlpPartitionDatasetFacet(
            partition=str(e["partition"]),
            contentHash=_str(e.get("content_hash")),
            rowCount=_int(e.get("row_count")),
            tableVersion=_int(e.get("table_version")),
            commit=_str(e.get("commit")) or None,
            role=_str(e.get("role")),
            materializationStorageId=u.storage_id,
            materializationRunId=u.run_id,
            unresolved=u.unresolved,
            producer=producer,
        )
    else:
        storage_id = _int(e.get("storage_id"))
        facets["mlp_upstream"] = F.MlpUpstreamDatasetFacet(
            asset=str(e.get("asset") or e.get("table") or "?"),
            partition=_str(e.get("partition")),
            runId=_str(e.get("run_id")) or u.run_id,
            storageId=storage_id if storage_id is not None else u.storage_id,
            recorded=dict(e),
            unresolved=u.unresolved,
            producer=producer,
        )
    return InputDataset(namespace=u.dataset.namespace, name=u.dataset.name, facets=facets)


def _output(rec: Recorded, producer: str) -> OutputDataset:
    assert rec.output is not None
    md = rec.metadata
    facets: dict[str, Any] = {}
    output_facets: dict[str, Any] = {}
    if rec.output.version is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=rec.output.version, producer=producer
        )
    if rec.schema:
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in rec.schema],
            producer=producer,
        )
    files = md.get(keys.STORAGE_FILES)
    rows = _int(md.get(keys.ROW_COUNT))
    if keys.STORAGE_CONTENT_HASH in md and rec.partition is not None:
        skipped = md.get(keys.STORAGE_WRITE_SKIPPED)
        facets["mlp_partition"] = F.MlpPartitionDatasetFacet(
            partition=rec.partition,
            contentHash=_str(md.get(keys.STORAGE_CONTENT_HASH)),
            rowCount=rows,
            tableVersion=_int(md.get(keys.STORAGE_TABLE_VERSION)),
            commit=_str(md.get(keys.STORAGE_COMMIT)) or None,
            writeSkipped=skipped if isinstance(skipped, bool) else None,
            fileCount=len(files) if isinstance(files, list) else None,
            producer=producer,
        )
    if rec.checks:
        facets["dataQualityAssertions"] = data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet(
            assertions=[
                data_quality_assertions_dataset.Assertion(
                    assertion=c.name,
                    success=c.passed,
                    severity=c.severity.lower() if c.severity else None,
                    name=c.name,
                    description=c.description or None,
                )
                for c in rec.checks
            ],
            producer=producer,
        )
    if rows is not None:
        output_facets["outputStatistics"] = (
            output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                rowCount=rows, fileCount=len(files) if isinstance(files, list) else None, producer=producer
            )
        )
    return OutputDataset(
        namespace=rec.output.namespace, name=rec.output.name, facets=facets, outputFacets=output_facets
    )


# -------------------------------------------------------------------------------------- ML facets


def _ml_facets(rec: Recorded, producer: str) -> dict[str, Any]:
    md = rec.metadata
    out: dict[str, Any] = {
        "mlp_materialization": F.MlpMaterializationRunFacet(
            asset=rec.asset,
            storageId=rec.storage_id,
            dagsterRunId=rec.run_id or None,
            partition=rec.partition,
            stepKey=rec.step_key,
            dataVersion=rec.data_version,
            event=rec.kind,
            producer=producer,
        )
    }
    if rec.code_version is not None or rec.git_commit is not None:
        out["mlp_code"] = F.MlpCodeRunFacet(
            codeVersion=rec.code_version,
            codeVersionFrom=rec.code_version_from,
            gitCommit=rec.git_commit,
            producer=producer,
        )
    if keys.MLFLOW_MODEL_VERSION in md:
        out["mlp_model"] = F.MlpModelRunFacet(
            version=str(md[keys.MLFLOW_MODEL_VERSION]),
            name=_str(md.get(keys.MLFLOW_MODEL_NAME)),
            uri=_str(md.get(keys.MLFLOW_MODEL_URI)),
            mlflowRunId=_str(md.get(keys.MLFLOW_RUN_ID)),
            mlflowExperimentId=_str(md.get(keys.MLFLOW_EXPERIMENT_ID)),
            mlflowRunUrl=_str(md.get(keys.MLFLOW_RUN_URL)),
            modelVersionUrl=_str(md.get(keys.MLFLOW_MODEL_URL)),
            weightsDigest=_str(md.get(keys.TRAINING_WEIGHTS_DIGEST)),
            trainingWindow=_str(md.get(keys.TRAINING_WINDOW)),
            device=_str(md.get(keys.TRAINING_DEVICE)),
            hpoStudy=_str(md.get(keys.HPO_STUDY)),
            producer=producer,
        )
    metrics = _metrics(md, producer)
    if metrics is not None:
        out["mlp_metrics"] = metrics
    alias = _alias(rec, producer)
    if alias is not None:
        out["mlp_alias"] = alias
    if keys.REGISTRY_DECISION in md:
        audit = rec.audit
        out["mlp_approval"] = F.MlpApprovalRunFacet(
            decision=str(md[keys.REGISTRY_DECISION]),
            reason=_str(md.get("registry/reason")),
            policy=_str(md.get("registry/policy")),
            actor=audit.actor if audit else None,
            auditEventId=_str(md.get(keys.REGISTRY_EVENT)),
            occurredAt=audit.occurred_at if audit else None,
            eventHash=audit.event_hash if audit else None,
            auditVerified=rec.audit_verified if audit else None,
            producer=producer,
        )
    return out


def _metrics(md: Mapping[str, Any], producer: str) -> F.MlpMetricsRunFacet | None:
    evaluated: dict[str, dict[str, float]] = {}
    for key, value in md.items():
        if not key.startswith("evaluation/") or key == keys.EVALUATION_CHAMPION_VERSION:
            continue
        name = key.removeprefix("evaluation/")
        who, _, metric = name.partition("_")
        if who in _EVALUATED and metric and _is_number(value):
            evaluated.setdefault(who, {})[metric] = float(value)
    if evaluated or keys.EVALUATION_GATES in md:
        gates = md.get(keys.EVALUATION_GATES)
        passed = md.get(keys.EVALUATION_PASSED)
        return F.MlpMetricsRunFacet(
            stage="evaluation",
            metrics=evaluated,
            gates=[dict(g) for g in gates if isinstance(g, Mapping)] if isinstance(gates, list) else None,
            passed=passed if isinstance(passed, bool) else None,
            holdout=_str(md.get(keys.EVALUATION_HOLDOUT)),
            championVersion=_str(md.get(keys.EVALUATION_CHAMPION_VERSION)),
            producer=producer,
        )
    training = {
        name: float(md[key])
        for name, key in (
            ("best_val_loss", "training/best_val_loss"),
            ("samples_per_second", keys.TRAINING_SAMPLES_PER_SECOND),
        )
        if _is_number(md.get(key))
    }
    if training:
        return F.MlpMetricsRunFacet(
            stage="training",
            metrics={"training": training},
            trainRows=_int(md.get(keys.TRAINING_ROWS)),
            validationRows=_int(md.get(keys.TRAINING_VALIDATION_ROWS)),
            producer=producer,
        )
    return None


def _alias(rec: Recorded, producer: str) -> F.MlpAliasRunFacet | None:
    """The alias the audit event moved; or, for a promotion that found the version already champion
    (no audit event), the champion alias as the materialization recorded it."""
    audit = rec.audit
    if audit is not None and audit.alias is not None and audit.version is not None:
        return F.MlpAliasRunFacet(
            alias=audit.alias,
            version=audit.version,
            previousVersion=audit.previous_version,
            action=audit.action,
            auditEventId=audit.event_id,
            producer=producer,
        )
    md = rec.metadata
    if md.get(keys.REGISTRY_DECISION) == "promote" and keys.REGISTRY_CHAMPION in md and audit is None:
        return F.MlpAliasRunFacet(
            alias=PROMOTION_CHAMPION,
            version=str(md[keys.REGISTRY_CHAMPION]),
            previousVersion=_str(md.get("registry/champion_before")),
            action="unchanged" if str(md.get(keys.REGISTRY_EVENT, "")).startswith("none") else None,
            producer=producer,
        )
    return None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
