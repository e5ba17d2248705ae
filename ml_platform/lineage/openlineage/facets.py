"""The platform's own OpenLineage facets (``mlp_*``) and the standard facets the events use, by key.

Custom facets are attrs classes on openlineage-python's facet bases, like the generated standard
ones, so they serialize the same way (``Serde``) and carry ``_producer`` and ``_schemaURL``. Each
``_schemaURL`` names a JSON Schema shipped in ``schemas/`` (its ``$id``); the validator
(:mod:`.validate`) checks every custom facet against it. The host in the URLs is ``.invalid``
(RFC 2606) on purpose: the schemas are not published anywhere, they ship with the package.

Every field is filled from what a materialization recorded; a key that was not recorded is left out
(attrs ``None``, which ``Serde`` drops), never filled in.
"""

from __future__ import annotations

from typing import Any

import attr
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
from openlineage.client.generated.base import DatasetFacet, RunFacet

SCHEMA_BASE_URL = "https://ml-platform.invalid/spec/openlineage/facets/"
SCHEMA_VERSION = "1-0-0"


def schema_url(name: str) -> str:
    """``_schemaURL`` of custom facet class ``name``: its schema file's ``$id`` and the ``$defs`` entry."""
    return f"{SCHEMA_BASE_URL}{SCHEMA_VERSION}/{name}.json#/$defs/{name}"


@attr.define
class MlpModelRunFacet(RunFacet):
    """The registered model version a materialization trained or judged, as it recorded it."""

    version: str
    name: str | None = attr.field(default=None)
    uri: str | None = attr.field(default=None)
    mlflowRunId: str | None = attr.field(default=None)
    mlflowExperimentId: str | None = attr.field(default=None)
    mlflowRunUrl: str | None = attr.field(default=None)
    modelVersionUrl: str | None = attr.field(default=None)
    weightsDigest: str | None = attr.field(default=None)
    trainingWindow: str | None = attr.field(default=None)
    device: str | None = attr.field(default=None)
    hpoStudy: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("MlpModelRunFacet")


@attr.define
class MlpMetricsRunFacet(RunFacet):
    """Metrics a materialization recorded: training metrics, or holdout metrics and gate results."""

    #: ``training`` (delay_model) or ``evaluation`` (model_evaluation).
    stage: str
    #: Who -> metric -> value: ``training``; or ``model``, ``baseline`` and ``champion`` on the holdout.
    metrics: dict[str, dict[str, float]]
    gates: list[dict[str, Any]] | None = attr.field(default=None)
    passed: bool | None = attr.field(default=None)
    holdout: str | None = attr.field(default=None)
    championVersion: str | None = attr.field(default=None)
    trainRows: int | None = attr.field(default=None)
    validationRows: int | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("MlpMetricsRunFacet")


@attr.define
class MlpAliasRunFacet(RunFacet):
    """A registry alias the materialization set (or found already set), and what it pointed to before."""

    alias: str
    version: str
    previousVersion: str | None = attr.field(default=None)
    action: str | None = attr.field(default=None)
    auditEventId: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("MlpAliasRunFacet")


@attr.define
class MlpApprovalRunFacet(RunFacet):
    """The promotion decision and its audit-log event: who decided, why, when, the event's hash."""

    decision: str
    reason: str | None = attr.field(default=None)
    policy: str | None = attr.field(default=None)
    actor: str | None = attr.field(default=None)
    auditEventId: str | None = attr.field(default=None)
    occurredAt: str | None = attr.field(default=None)
    eventHash: str | None = attr.field(default=None)
    #: Whether the audit log's hash chain verified when the event was exported.
    auditVerified: bool | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("MlpApprovalRunFacet")


@attr.define
class MlpCodeRunFacet(RunFacet):
    """The code that produced the materialization: its code version and git commit."""

    codeVersion: str | None = attr.field(default=None)
    #: ``lineage/code_version`` or ``dagster/code_version tag``: where ``codeVersion`` was read.
    codeVersionFrom: str | None = attr.field(default=None)
    gitCommit: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("MlpCodeRunFacet")


@attr.define
class MlpMaterializationRunFacet(RunFacet):
    """The Dagster event this OpenLineage run was exported from."""

    asset: str
    storageId: int
    #: None for a runless event (``report_runless_asset_event``: reported, not run by Dagster).
    dagsterRunId: str | None = attr.field(default=None)
    partition: str | None = attr.field(default=None)
    stepKey: str | None = attr.field(default=None)
    dataVersion: str | None = attr.field(default=None)
    #: ``materialization``, or ``failure`` (storageId is then the run's ``RUN_FAILURE`` event).
    event: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("MlpMaterializationRunFacet")


@attr.define
class MlpPartitionDatasetFacet(DatasetFacet):
    """One partition of a table, at the version it was written or read (a ``lineage/upstream`` pin)."""

    partition: str
    contentHash: str | None = attr.field(default=None)
    rowCount: int | None = attr.field(default=None)
    tableVersion: int | None = attr.field(default=None)
    commit: str | None = attr.field(default=None)
    writeSkipped: bool | None = attr.field(default=None)
    fileCount: int | None = attr.field(default=None)
    #: The role the pin was recorded with (drift's ``reference``/``current``, ...).
    role: str | None = attr.field(default=None)
    #: The materialization that recorded exactly this pin (the version that was read).
    materializationStorageId: int | None = attr.field(default=None)
    materializationRunId: str | None = attr.field(default=None)
    #: Why no materialization of the table resolves this pin (then the dataset is named from settings).
    unresolved: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("MlpPartitionDatasetFacet")


@attr.define
class MlpUpstreamDatasetFacet(DatasetFacet):
    """A ``lineage/upstream`` entry that names another asset's materialization (by its run)."""

    asset: str
    partition: str | None = attr.field(default=None)
    runId: str | None = attr.field(default=None)
    storageId: int | None = attr.field(default=None)
    #: The entry as recorded (model_version, decision, bento_tag, role, ...).
    recorded: dict[str, Any] | None = attr.field(default=None)
    unresolved: str | None = attr.field(default=None)

    @staticmethod
    def _get_schema() -> str:
        return schema_url("MlpUpstreamDatasetFacet")


#: The custom facets by key (the key each schema's root ``properties`` names).
CUSTOM_RUN_FACETS: dict[str, type[RunFacet]] = {
    "mlp_model": MlpModelRunFacet,
    "mlp_metrics": MlpMetricsRunFacet,
    "mlp_alias": MlpAliasRunFacet,
    "mlp_approval": MlpApprovalRunFacet,
    "mlp_code": MlpCodeRunFacet,
    "mlp_materialization": MlpMaterializationRunFacet,
}
CUSTOM_DATASET_FACETS: dict[str, type[DatasetFacet]] = {
    "mlp_partition": MlpPartitionDatasetFacet,
    "mlp_upstream": MlpUpstreamDatasetFacet,
}
CUSTOM_FACETS: dict[str, type[Any]] = {**CUSTOM_RUN_FACETS, **CUSTOM_DATASET_FACETS}
CUSTOM_PREFIX = "mlp_"

#: The standard facets the events use, by where they go and their key (as the spec's facet schemas
#: name them). The validator checks a standard facet against its openlineage-python class.
STANDARD_RUN_FACETS: dict[str, type[Any]] = {
    "parent": parent_run.ParentRunFacet,
    "nominalTime": nominal_time_run.NominalTimeRunFacet,
    "errorMessage": error_message_run.ErrorMessageRunFacet,
    "processing_engine": processing_engine_run.ProcessingEngineRunFacet,
}
STANDARD_JOB_FACETS: dict[str, type[Any]] = {"jobType": job_type_job.JobTypeJobFacet}
STANDARD_DATASET_FACETS: dict[str, type[Any]] = {
    "version": dataset_version_dataset.DatasetVersionDatasetFacet,
    "schema": schema_dataset.SchemaDatasetFacet,
    # an input facet in openlineage-python; the spec's own example puts it in a dataset's ``facets``,
    # where the asset checks of a written partition belong
    "dataQualityAssertions": data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet,
}
STANDARD_INPUT_FACETS: dict[str, type[Any]] = {
    "dataQualityAssertions": data_quality_assertions_dataset.DataQualityAssertionsDatasetFacet,
}
STANDARD_OUTPUT_FACETS: dict[str, type[Any]] = {
    "outputStatistics": output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet,
}
