"""Where the records outside the Dagster instance live, and how the lineage reads them.

:class:`LineageSources` names them (built from :class:`~ml_platform.settings.PlatformSettings`, or
by hand in a test): the MLflow tracking/registry URI and model name, the registry's audit log, the
deployment's desired state and log, the prediction log folder and Delta table, and the
partitioning (the declared windows narrow which partitions' records are fetched; what links them is
always the recorded ``lineage/upstream``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_platform.lineage.model import DeploymentEventRef, DesiredRole

if TYPE_CHECKING:
    from ml_platform.lib.deploy.desired import DesiredState
    from ml_platform.partitions import Partitioning
    from ml_platform.settings import PlatformSettings


@dataclass(frozen=True)
class LineageSources:
    """The records a trace reads besides the Dagster instance."""

    model_name: str
    tracking_uri: str
    audit_table: Path
    desired_path: Path
    deployment_log_table: Path
    prediction_log_dir: Path
    #: The Delta tables' root (the published ``prediction_log`` rows, when the log files are gone).
    delta_root: Path | None = None
    partitioning: Partitioning | None = None

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> LineageSources:
        import warnings

        from ml_platform.partitions import build_partitioning

        with warnings.catch_warnings():  # Dagster's preview note on the mappings' nonexistent partitions
            warnings.simplefilter("ignore")
            partitioning = build_partitioning(settings)
        return cls(
            model_name=settings.registered_model,
            tracking_uri=str(settings.mlflow_tracking_uri),
            audit_table=settings.audit_table,
            desired_path=settings.deployment_dir / "desired.json",
            deployment_log_table=settings.deployment_log_table,
            prediction_log_dir=settings.prediction_log_dir,
            delta_root=settings.delta_root,
            partitioning=partitioning,
        )

    @classmethod
    def of(cls, settings_or_sources: PlatformSettings | LineageSources) -> LineageSources:
        if isinstance(settings_or_sources, LineageSources):
            return settings_or_sources
        return cls.from_settings(settings_or_sources)

    def client(self) -> Any:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)


# ---------------------------------------------------------------------------------- deployment


def read_desired(path: Path) -> tuple[DesiredState | None, str | None]:
    """The current desired state (None before the first deploy) and the error reading it, if any."""
    from ml_platform.lib.deploy.desired import DesiredStateError, DesiredStateStore

    try:
        return DesiredStateStore(path).read(), None
    except DesiredStateError as exc:
        return None, str(exc)


def desired_roles(state: DesiredState | None, tags: set[str]) -> list[DesiredRole]:
    """The roles the Bentos ``tags`` have in ``state`` (champion, challenger)."""
    if state is None:
        return []
    out = []
    for role, release in (("champion", state.champion), ("challenger", state.challenger)):
        if release is not None and release.bento_tag in tags:
            out.append(
                DesiredRole(
                    bento_tag=release.bento_tag,
                    role=role if role == "champion" else f"challenger ({state.mode}, share {state.share:g})",
                    bento_partition=release.bento_partition,
                    bento_run_id=release.bento_run_id,
                    model_version=release.model_version,
                )
            )
    return out


def deployment_events(
    table: Path, tags: set[str]
) -> tuple[list[DeploymentEventRef], bool | None, str | None]:
    """The deployment-log events naming one of ``tags`` (as the Bento or the one it replaced), and
    whether the log verifies (None without a log)."""
    from ml_platform.lib.deploy.events import DeploymentLog, DeploymentLogError

    log = DeploymentLog(table)
    try:
        events = log.events()
    except Exception as exc:  # an unreadable table is reported, not raised: it is one hop of many
        return [], False, f"cannot read {table}: {exc}"
    verified: bool | None
    error = None
    if not events:
        verified = None
    else:
        try:
            log.verify()
            verified = True
        except DeploymentLogError as exc:
            verified, error = False, str(exc)
    refs = [
        DeploymentEventRef(
            seq=e.seq,
            event_id=e.event_id,
            occurred_at=e.occurred_at.isoformat(),
            action=e.action,
            bento_tag=e.bento_tag,
            model_version=e.model_version,
            previous_bento_tag=e.previous_bento_tag,
            mode=e.mode,
            share=e.share,
            actor=e.actor,
            reason=e.reason,
            event_hash=e.event_hash,
        )
        for e in events
        if e.bento_tag in tags or e.previous_bento_tag in tags
    ]
    return refs, verified, error


# ------------------------------------------------------------------------------ prediction log


@dataclass(frozen=True)
class FoundLine:
    """A prediction-log line with the request id: where it is and what it says."""

    day: str
    file: str
    line: int
    data: dict[str, Any]


def _day_folders(folder: Path) -> Iterator[Path]:
    if folder.is_dir():
        yield from sorted(p for p in folder.iterdir() if p.is_dir())


def find_request(folder: Path, request_id: str) -> list[FoundLine]:
    """Every complete line of the prediction log files under ``folder`` whose request id is ``request_id``.

    Each file is read once and searched as bytes before any line is parsed, so a miss costs one
    scan of the folder.
    """
    needle = request_id.encode()
    found: list[FoundLine] = []
    for day in _day_folders(folder):
        for path in sorted(p for p in day.glob("*.jsonl") if p.is_file()):
            data = path.read_bytes()
            if needle not in data:
                continue
            complete = data[: data.rfind(b"\n") + 1]
            for number, raw in enumerate(complete.split(b"\n")[:-1], 1):
                if needle not in raw:
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict) and line.get("request_id") == request_id:
                    found.append(FoundLine(day.name, path.name, number, line))
    return found


#: The log line's keys naming the online snapshot that answered, and its stale flag.
_SNAPSHOT_KEYS = ("online_snapshot_day", "online_snapshot_hash", "online_snapshot_written_at", "stale")


def find_request_in_table(delta_root: Path, request_id: str) -> list[FoundLine]:
    """The published ``prediction_log`` rows of ``request_id`` (when the files are gone)."""
    import polars as pl

    table = delta_root / "prediction_log"
    if not (table / "_delta_log").is_dir():
        return []
    rows = pl.scan_delta(str(table)).filter(pl.col("request_id") == request_id).collect()
    # a table written before the service logged its Bento (or its online snapshot) lacks those
    # columns (older partitions of a table that has them read null there)
    has_bento = "bento_tag" in rows.columns
    later = [c for c in _SNAPSHOT_KEYS if c in rows.columns]
    out = []
    for row in rows.iter_rows(named=True):
        data = {
            "logged_at": str(row.get("logged_at")),
            "request_id": request_id,
            "endpoint": row.get("endpoint"),
            "index": row.get("index"),
            "model_name": row.get("model_name"),
            "model_version": row.get("model_version"),
            **({"bento_tag": row["bento_tag"]} if has_bento else {}),
            "latency_ms": row.get("latency_ms"),
            # as the log line writes them: ISO text
            **{c: row[c].isoformat() if hasattr(row[c], "isoformat") else row[c] for c in later},
            "request": {
                k: str(row.get(k)) if k == "scheduled_departure" else row.get(k)
                for k in ("carrier", "flight", "origin", "dest", "scheduled_departure", "distance")
            },
            "prediction": {k: row.get(k) for k in ("predicted_arr_delay", "delay_probability")},
        }
        out.append(
            FoundLine(str(row["partition_date"]), str(row["source_file"]), int(row["source_line"]), data)
        )
    return out


def prefix_sha256(path: Path, size: int) -> str | None:
    """sha256 of the first ``size`` bytes of ``path``: None when it is gone, ``""`` when it is shorter."""
    try:
        with path.open("rb") as handle:
            data = handle.read(size)
    except OSError:
        return None
    if len(data) != size:
        return ""
    return hashlib.sha256(data).hexdigest()
