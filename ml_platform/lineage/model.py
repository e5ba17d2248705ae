"""The typed records of a lineage chain and of an impact report (plain data, JSON-ready).

Every record is built from what was recorded: a Dagster materialization event (``Materialization``:
its storage id, run, partition, code version and git commit), the storage pin it recorded
(``StorageVersion``), MLflow's run and registry, the registry's audit log, the deployment's desired
state and log, the prediction log. A link that should have been recorded and was not is a
:class:`Missing` hop carrying the reason; nothing is filled in from "the latest" materialization.

:func:`to_json` turns any of them into JSON-serializable data (``mlp lineage --json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

StartKind = Literal["bento", "alias", "version", "request", "deployment"]
START_KINDS: tuple[StartKind, ...] = ("bento", "alias", "version", "request", "deployment")


class LineageError(RuntimeError):
    """The start of a trace (or the target of an impact query) is unknown; the message says what was tried."""


@dataclass(frozen=True)
class Missing:
    """A link that was not recorded where it should have been: the chain says so instead of guessing."""

    #: Which hop of the chain (``bento``, ``model``, ``mlflow_run``, ``flight_features``, ...).
    hop: str
    #: What the link was looked up from (``delay_bento[2013-01-21] run 1234``).
    ref: str
    #: Why it is missing, naming the record and key that lacks it.
    reason: str
    #: Recorded things the link might have been, listed but not followed (never part of the chain).
    candidates: list[str] = field(default_factory=list)
    #: True for a link of the chain itself (deployment -> bento -> ... -> raw); False for a record
    #: beside it (which evaluation a promotion re-read, a deployment's git commit).
    on_path: bool = True
    missing: bool = True

    def describe(self) -> str:
        text = f"{self.hop}: {self.reason} ({self.ref})"
        if self.candidates:
            text += f"; recorded candidates, not followed: {', '.join(self.candidates)}"
        return text


@dataclass(frozen=True)
class Consistency:
    """One cross-check between two records of the same link (e.g. MLflow's run tags vs. Dagster's run)."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Materialization:
    """One recorded Dagster materialization event."""

    asset: str
    partition: str | None
    storage_id: int
    run_id: str
    #: UTC, ISO 8601.
    timestamp: str
    #: ``lineage/code_version``, else Dagster's ``dagster/code_version`` tag (``code_version_from``).
    code_version: str | None
    code_version_from: str | None
    #: ``lineage/git_commit`` (None when the asset does not record it).
    git_commit: str | None
    #: Dagster's ``dagster/data_version`` tag.
    data_version: str | None

    @property
    def id(self) -> str:
        where = f"[{self.partition}]" if self.partition is not None else ""
        return f"{self.asset}{where}@{self.storage_id}"

    @property
    def label(self) -> str:
        where = f"[{self.partition}]" if self.partition is not None else ""
        return f"{self.asset}{where}"


@dataclass(frozen=True)
class StorageVersion:
    """The versioned-store pin a materialization recorded (``storage/*``)."""

    table_uri: str | None
    table_version: int | None
    commit: str | None
    content_hash: str | None
    row_count: int | None
    files: list[str]
    write_skipped: bool | None

    @property
    def where(self) -> str:
        if self.commit:
            return f"lakeFS commit {self.commit[:12]}"
        return f"table version {self.table_version}"


@dataclass(frozen=True)
class CheckResult:
    """One asset check evaluation recorded for a materialization's run and partition."""

    name: str
    passed: bool | None
    severity: str | None
    run_id: str
    partition: str | None
    description: str | None


@dataclass(frozen=True)
class PartitionNode:
    """A data partition of the chain (raw, validated or feature day) as one materialization recorded it."""

    id: str
    materialization: Materialization
    storage: StorageVersion
    #: ids of the upstream nodes this materialization recorded in ``lineage/upstream`` (resolved).
    upstream: list[str] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    #: validated: ``quality/*`` (quarantined rows and share, failures by check, quarantine table version).
    quality: dict[str, Any] = field(default_factory=dict)
    #: raw: ``lineage/source`` (the source file and its sha256).
    source: dict[str, Any] = field(default_factory=dict)
    #: Other materializations that recorded the very same pin (a rerun with identical content).
    same_pin_also: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AliasChange:
    """One audit-log event about the model version (alias history, approvals, rejections)."""

    event_id: str
    occurred_at: str
    action: str
    alias: str | None
    version: str | None
    previous_version: str | None
    actor: str
    reason: str
    event_hash: str


@dataclass(frozen=True)
class Evaluation:
    """A ``model_evaluation`` materialization that judged the version (its gates are the blocking checks)."""

    materialization: Materialization
    passed: bool | None
    gates: list[dict[str, Any]]
    champion_version: str | None
    holdout: str | None
    metrics: dict[str, float]
    checks: list[CheckResult] = field(default_factory=list)


@dataclass(frozen=True)
class Promotion:
    """A ``model_promotion`` materialization that decided on the version."""

    materialization: Materialization
    decision: str | None
    reason: str | None
    champion_before: str | None
    champion_after: str | None
    audit_event: str | None


@dataclass(frozen=True)
class ModelHop:
    """The registered model version and the ``delay_model`` materialization that trained and registered it."""

    model_name: str
    version: str
    materialization: Materialization | None
    training_window: str | None
    weights_digest: str | None
    #: The registry's current record: the run it was registered from, its aliases now, its status.
    registry_run_id: str | None
    aliases_now: list[str]
    source: str | None
    #: Every audit event about the version (alias history), oldest first; approvals are the promotions.
    alias_history: list[AliasChange]
    approvals: list[AliasChange]
    audit_verified: bool | None
    audit_error: str | None
    evaluations: list[Evaluation]
    promotions: list[Promotion]


@dataclass(frozen=True)
class RunHop:
    """The MLflow run that trained the version."""

    run_id: str
    experiment_id: str | None
    status: str | None
    start_time: str | None
    end_time: str | None
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    #: ``(dataset name, context, table version or lakeFS commit, data version)`` per dataset input.
    datasets: list[list[str]]


@dataclass(frozen=True)
class BentoHop:
    """A ``delay_bento`` build: the Bento tag and what it serves."""

    tag: str
    materialization: Materialization
    model_name: str | None
    model_version: str | None
    mlflow_run_id: str | None
    bento_model_tag: str | None
    lock_sha256: str | None
    aliases_at_build: list[str]
    built_at: str | None
    reused: bool | None
    path: str | None
    #: ``lineage/upstream`` as recorded (delay_model, model_evaluation, model_promotion with their runs).
    upstream: list[dict[str, Any]]
    #: Other ``delay_bento`` materializations that recorded the same tag (same content rebuilt).
    also_built_by: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DesiredRole:
    """What the current desired state (``desired.json``) does with a Bento."""

    bento_tag: str
    role: str
    bento_partition: str | None
    bento_run_id: str | None
    model_version: str


@dataclass(frozen=True)
class DeploymentEventRef:
    """A deployment-log event naming a Bento of the chain."""

    seq: int
    event_id: str
    occurred_at: str
    action: str
    bento_tag: str | None
    model_version: str | None
    previous_bento_tag: str | None
    mode: str
    share: float
    actor: str
    reason: str
    event_hash: str


@dataclass(frozen=True)
class DeploymentMaterializationRef:
    """A ``deployment`` materialization whose ``lineage/upstream`` names a Bento of the chain."""

    materialization: Materialization
    bento_tag: str | None
    role: str | None
    generation: int | None
    applied: str | None


@dataclass(frozen=True)
class DeploymentHop:
    """Where the chain's Bentos are (or were) deployed: desired state, deployment log, ``deployment`` runs."""

    desired_path: str
    desired_generation: int | None
    desired_mode: str | None
    desired_requested_by: str | None
    desired_requested_at: str | None
    roles: list[DesiredRole]
    rolled_back: list[str]
    events: list[DeploymentEventRef]
    log_table: str
    log_verified: bool | None
    log_error: str | None
    materializations: list[DeploymentMaterializationRef]


@dataclass(frozen=True)
class PredictionLine:
    """One line of the prediction log with the request id."""

    file: str
    line: int
    flight_day: str
    logged_at: str | None
    endpoint: str | None
    index: int | None
    model_name: str | None
    model_version: str | None
    #: The Bento that served the line (None: a line logged before the service recorded it, or a
    #: service served from source).
    bento_tag: str | None
    latency_ms: float | None
    request: dict[str, Any]
    prediction: dict[str, Any]
    #: ``prediction_log`` materializations whose ``lineage/source`` read this line (file and line count).
    collected_by: list[str]
    #: Whether the file's first ``bytes_read`` bytes still hash to what that materialization recorded.
    collected_sha256_ok: bool | None


@dataclass(frozen=True)
class PredictionHop:
    """Where a request id was found and what the log says about it."""

    request_id: str
    found_in: str
    lines: list[PredictionLine]


@dataclass(frozen=True)
class Start:
    kind: StartKind
    value: str
    #: What the start resolved to (``delay_model v3``, ``delay_service:v3-...``).
    resolved: str


@dataclass
class LineageChain:
    """deployment -> bento -> model version -> MLflow run -> feature -> validated -> raw partitions."""

    start: Start
    model_name: str
    prediction: PredictionHop | None = None
    #: Request start only: the Bento that answered, as the log line recorded it.
    served_by: str | Missing | None = None
    deployment: DeploymentHop | Missing | None = None
    bentos: list[BentoHop] = field(default_factory=list)
    model: ModelHop | Missing | None = None
    mlflow_run: RunHop | Missing | None = None
    features: list[PartitionNode | Missing] = field(default_factory=list)
    validated: list[PartitionNode | Missing] = field(default_factory=list)
    raw: list[PartitionNode | Missing] = field(default_factory=list)
    #: Every missing link of the chain, wherever it is.
    missing: list[Missing] = field(default_factory=list)
    consistency: list[Consistency] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every link of the chain was recorded and every cross-check agrees.

        Records missing beside the chain (``Missing.on_path`` False) are listed in ``missing`` but do
        not make it incomplete.
        """
        return not any(m.on_path for m in self.missing) and all(c.ok for c in self.consistency)

    def note(self, gap: Missing) -> Missing:
        self.missing.append(gap)
        return gap

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.consistency.append(Consistency(name, bool(ok), detail))


@dataclass(frozen=True)
class ImpactedPartition:
    """A derived partition version (materialization) and which impacted upstream versions it read."""

    id: str
    materialization: Materialization
    storage: StorageVersion
    read: list[str]


@dataclass(frozen=True)
class ImpactedModel:
    """A model version trained on an impacted feature version."""

    id: str
    model_name: str | None
    version: str | None
    materialization: Materialization
    mlflow_run_id: str | None
    aliases_now: list[str] | None
    read: list[str]


@dataclass(frozen=True)
class ImpactedEvaluation:
    """A ``model_evaluation`` whose holdout read an impacted feature version (it gated the version)."""

    id: str
    materialization: Materialization
    model_version: str | None
    passed: bool | None
    read: list[str]


@dataclass(frozen=True)
class ImpactedBento:
    """A ``delay_bento`` build downstream of the incident.

    ``via``: ``training`` (its model trained on impacted data) and/or ``evaluation`` (its gates were
    judged on an impacted holdout: the data decided that it was built, not its weights).
    """

    id: str
    tag: str | None
    model_name: str | None
    model_version: str | None
    materialization: Materialization
    via: list[str]
    read: list[str]


@dataclass(frozen=True)
class ImpactedDeployment:
    """The deployments of impacted Bentos: current desired state, log events and ``deployment`` runs."""

    desired_path: str
    roles: list[DesiredRole]
    events: list[DeploymentEventRef]
    materializations: list[DeploymentMaterializationRef]


@dataclass
class ImpactReport:
    """Everything recorded as derived from the given raw partitions (or model version), by recorded
    ``lineage/upstream``."""

    assets: list[str]
    partitions: list[str]
    raw: list[ImpactedPartition] = field(default_factory=list)
    validated: list[ImpactedPartition] = field(default_factory=list)
    features: list[ImpactedPartition] = field(default_factory=list)
    #: ``flight_feature_profiles`` of impacted feature versions (the drift reports' inputs).
    profiles: list[ImpactedPartition] = field(default_factory=list)
    #: ``online_features`` snapshots made from impacted feature or validated weather versions.
    online_features: list[ImpactedPartition] = field(default_factory=list)
    models: list[ImpactedModel] = field(default_factory=list)
    evaluations: list[ImpactedEvaluation] = field(default_factory=list)
    #: ``flight_delay_predictions`` that scored impacted features or were made by an impacted model.
    predictions: list[ImpactedPartition] = field(default_factory=list)
    #: ``drift_report`` days that judged an impacted profile or against an impacted model.
    drift_reports: list[ImpactedPartition] = field(default_factory=list)
    #: ``live_performance`` days that read impacted predictions or actuals, or judged an impacted
    #: model against an impacted evaluation.
    performance: list[ImpactedPartition] = field(default_factory=list)
    bentos: list[ImpactedBento] = field(default_factory=list)
    deployment: ImpactedDeployment | None = None
    #: The model version the report starts from (``mlp impact v3``); None for raw partitions.
    model_version: str | None = None
    #: Raw partitions of the target that were never materialized.
    not_materialized: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def to_json(value: Any) -> Any:
    """``value`` (a record of this module, or a list/dict of them) as JSON-serializable data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, LineageChain):
            out["complete"] = value.complete
        if isinstance(value, Materialization | PartitionNode):
            out.setdefault("id", value.id)
        return out
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value
