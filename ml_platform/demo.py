"""What ``make demo`` runs: raw -> features in range runs per layer, then the weekly models, incrementally."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import CODE_VERSION_TAG, DATA_VERSION_TAG

from ml_platform.defs.publish import latest_materializations
from ml_platform.lib import metadata as keys
from ml_platform.settings import PlatformSettings


def days(start: date, end: date) -> list[str]:
    """Partition keys from ``start`` to ``end``, both included."""
    return [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]


def partitions_to_run(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    partitions: Sequence[str],
    assets: Collection[dg.AssetKey] | None = None,
) -> list[str]:
    """Partitions where an asset of ``job`` (or of ``assets``) is missing or was made by other code.

    This is what makes a second ``make demo`` incremental: done partitions are skipped, and a
    partition is redone only when the code of one of its assets changed.
    """
    todo: set[str] = set()
    layer = job.asset_layer
    for key in assets if assets is not None else layer.executable_asset_keys:
        current = layer.get(key).code_version
        records = latest_materializations(instance, key, partitions)
        for partition in partitions:
            record = records.get(partition)
            made_by = record.asset_materialization.tags.get(CODE_VERSION_TAG) if record else None  # type: ignore[union-attr]
            if made_by != current:
                todo.add(partition)
    return sorted(todo)


@dataclass
class AssetSummary:
    """What the demo made of one asset over the requested range."""

    asset: str
    partitions: int = 0
    rows: int = 0
    quarantined: int = 0
    data_versions: dict[str, str] = field(default_factory=dict)


def summarize(
    instance: dg.DagsterInstance, job: dg.JobDefinition, partitions: Sequence[str]
) -> list[AssetSummary]:
    """Rows, quarantined rows and data versions of each asset's latest materializations."""
    summaries = []
    for key in sorted(job.asset_layer.executable_asset_keys, key=lambda k: k.to_user_string()):
        summary = AssetSummary(key.to_user_string())
        records = latest_materializations(instance, key, partitions).values()
        for record in records:
            mat = record.asset_materialization
            assert mat is not None and mat.partition is not None
            summary.partitions += 1
            summary.rows += int(mat.metadata[keys.ROW_COUNT].value)  # type: ignore[arg-type]
            if keys.QUALITY_QUARANTINED_ROWS in mat.metadata:
                summary.quarantined += int(mat.metadata[keys.QUALITY_QUARANTINED_ROWS].value)  # type: ignore[arg-type]
            summary.data_versions[mat.partition] = mat.tags.get(DATA_VERSION_TAG, "")
        summary.data_versions = dict(sorted(summary.data_versions.items()))
        summaries.append(summary)
    return summaries


@dataclass
class RunOutcome:
    """One range run of one layer."""

    layer: str
    first: str
    last: str
    success: bool
    run_id: str
    error: str | None = None

    @property
    def days(self) -> int:
        """Days the run covered."""
        return (date.fromisoformat(self.last) - date.fromisoformat(self.first)).days + 1


def layers(job: dg.JobDefinition) -> list[list[dg.AssetKey]]:
    """The job's assets in dependency layers (raw, then validated, then features)."""
    graph = job.asset_layer.asset_graph
    keys = set(job.asset_layer.executable_asset_keys)
    remaining, done, out = set(keys), set[dg.AssetKey](), []
    while remaining:
        layer = sorted(
            (k for k in remaining if not (graph.get(k).parent_keys & keys) - done),
            key=lambda k: k.to_user_string(),
        )
        if not layer:
            raise ValueError(f"cycle among {sorted(k.to_user_string() for k in remaining)}")
        out.append(layer)
        done.update(layer)
        remaining.difference_update(layer)
    return out


def chunks(partitions: Sequence[str], size: int) -> list[list[str]]:
    """Consecutive days split into runs of at most ``size`` days (a gap starts a new run)."""
    out: list[list[str]] = []
    for day in sorted(partitions):
        if (
            out
            and len(out[-1]) < size
            and date.fromisoformat(day) - date.fromisoformat(out[-1][-1]) == timedelta(1)
        ):
            out[-1].append(day)
        else:
            out.append([day])
    return out


def run_partitions(
    instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    partitions: Sequence[str],
    on_done: Callable[[RunOutcome], None] | None = None,
    chunk_days: int = 15,
) -> list[RunOutcome]:
    """Materialize ``partitions`` with one run per layer and chunk of days, stopping at a failure.

    Each run covers one layer over up to ``chunk_days`` consecutive days; every day still gets its
    own Delta transaction, content-hash DataVersion and partition-scoped checks
    (:class:`~ml_platform.defs.publish.PartitionReporter`). Chunks go in date order and layers in
    dependency order, because a feature day reads the validated days before it. Fewer, larger
    runs keep Dagster's per-run cost (a few hundred sqlite writes) from dominating the demo.
    """
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    outcomes = []
    for chunk in chunks(partitions, chunk_days):
        for layer in layers(job):
            where: dict[str, Any] = (
                {"partition_key": chunk[0]}
                if len(chunk) == 1
                else {
                    "tags": {
                        "dagster/asset_partition_range_start": chunk[0],
                        "dagster/asset_partition_range_end": chunk[-1],
                    }
                }
            )
            result = job.execute_in_process(
                instance=instance, asset_selection=layer, run_config=quiet, raise_on_error=False, **where
            )
            error = None
            if not result.success:
                error = (
                    "; ".join(_step_error(e) for e in result.all_events if e.is_step_failure) or "run failed"
                )
            outcome = RunOutcome(
                ", ".join(k.to_user_string() for k in layer),
                chunk[0],
                chunk[-1],
                result.success,
                result.run_id,
                error,
            )
            outcomes.append(outcome)
            if on_done:
                on_done(outcome)
            if not result.success:
                return outcomes
    return outcomes


def _step_error(event: dg.DagsterEvent) -> str:
    data = event.step_failure_data
    message = data.error.message.strip() if data and data.error else "no error message"
    return f"{event.step_key}: {message}"


def model_weeks(settings: PlatformSettings, first: date, last: date) -> list[str]:
    """Model weeks whose training window and holdout week both lie within ``[first, last]``."""
    from ml_platform.partitions import build_partitioning

    weeks = build_partitioning(settings).weekly.get_partition_keys()
    window = timedelta(weeks=settings.training_window_weeks)
    return [
        w
        for w in weeks
        if date.fromisoformat(w) - window >= first and date.fromisoformat(w) + timedelta(days=6) <= last
    ]


@dataclass
class WeekOutcome:
    """One run of the weekly model job."""

    week: str
    success: bool
    run_id: str
    summary: str
    error: str | None = None
    #: A blocking gate rejected the model (it stays challenger); the run failed, but not by an error.
    gates_failed: bool = False


def run_week(
    instance: dg.DagsterInstance, job: dg.JobDefinition, week: str, tags: Mapping[str, str] | None = None
) -> WeekOutcome:
    """Train, evaluate and promote one week; summarize what the registry decided.

    ``tags`` go on the run (the retrain sensor's cause and run key, in a replay).

    The run's own log stays quiet: a gate rejection (a blocking check failing its step) is
    summarized here, and any other failure comes back as ``error`` with the step's message.
    """
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    result = job.execute_in_process(
        partition_key=week, instance=instance, run_config=quiet, raise_on_error=False, tags=dict(tags or {})
    )
    meta = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.asset_materializations_for_node("delay_model")
        + result.asset_materializations_for_node("model_evaluation")
        + result.asset_materializations_for_node("model_promotion")
    }
    parts = []
    if "delay_model" in meta:
        parts.append(f"v{meta['delay_model'][keys.MLFLOW_MODEL_VERSION].value}")
    if "model_evaluation" in meta:
        ev = meta["model_evaluation"]
        shown = [
            f"{label} {float(ev[f'evaluation/model_{m}'].value):.4g}"  # type: ignore[arg-type]
            f" (baseline {float(ev[f'evaluation/baseline_{m}'].value):.4g})"  # type: ignore[arg-type]
            for m, label in (("rmse", "RMSE"), ("brier", "Brier"))
        ]
        parts.append("holdout " + ", ".join(shown))
    if "model_promotion" in meta:
        pm = meta["model_promotion"]
        parts.append(f"{pm[keys.REGISTRY_DECISION].value} -> champion v{pm[keys.REGISTRY_CHAMPION].value}")
    failed_checks = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data
        and not e.asset_check_evaluation_data.passed
    ]
    failures = [e for e in result.all_events if e.is_step_failure]
    # a failed blocking gate fails its step with DagsterAssetCheckFailedError: a decision, not an error
    rejected = bool(failed_checks) and all(
        e.step_failure_data
        and e.step_failure_data.error
        and "AssetCheckFailed" in e.step_failure_data.error.cls_name
        for e in failures
    )
    if failed_checks:
        parts.append(
            "rejected by "
            + ", ".join(f"{c.check_name} ({c.description})" for c in failed_checks)
            + "; stays challenger"
        )
    return WeekOutcome(
        week,
        result.success,
        result.run_id,
        "; ".join(parts),
        None if result.success or rejected else "; ".join(_step_error(e) for e in failures) or "run failed",
        gates_failed=rejected,
    )
