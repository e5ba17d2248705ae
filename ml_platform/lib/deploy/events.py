"""The deployment log: every deploy, switch, canary, shadow, promotion and rollback, append-only.

One Delta table (``<storage>/serving/deployments`` by convention), created with
``delta.appendOnly=true`` (Delta refuses commits that delete or rewrite rows) and
``delta.enableExpiredLogCleanup=false`` (the commit history stays). Each row names the Bento (or
BentoML model) tag and the model version it is about, the routing mode and canary share that
followed, why, and who did it; each carries the hash of the previous row and its own
(:meth:`DeploymentLog.verify` recomputes the chain), as the registry's audit log does
(:mod:`ml_platform.lib.registry.audit`). Appends chain to the snapshot they read and commit without
automatic retry, so two writers never fork the chain: the loser re-reads and tries again.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

if TYPE_CHECKING:
    from ml_platform.lib.deploy.rollback import Rollback

Action = Literal["deploy", "switch", "canary_start", "shadow_start", "promote", "rollback", "stop"]
ACTIONS: Final = ("deploy", "switch", "canary_start", "shadow_start", "promote", "rollback", "stop")
_SCHEMA: Final = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("occurred_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),
        pa.field("share", pa.float64(), nullable=False),
        pa.field("bento_tag", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("previous_bento_tag", pa.string()),
        pa.field("previous_model_version", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("prev_hash", pa.string(), nullable=False),
        pa.field("event_hash", pa.string(), nullable=False),
    ]
)
_CONFIGURATION: Final[dict[str, str | None]] = {
    "delta.appendOnly": "true",
    "delta.enableExpiredLogCleanup": "false",
}
_ATTEMPTS: Final = 12


class DeploymentLogError(RuntimeError):
    """An event could not be written, or the log does not verify."""


@dataclass(frozen=True)
class DeploymentEvent:
    """One row of the deployment log."""

    seq: int
    event_id: str
    occurred_at: datetime
    action: str
    #: The routing mode after the event (``single``, ``canary``, ``shadow``) and the canary share.
    mode: str
    share: float
    #: What the event is about (the new champion, the challenger started or rolled back).
    bento_tag: str | None
    model_version: str | None
    #: What served before (the champion replaced, the champion kept on a rollback).
    previous_bento_tag: str | None
    previous_model_version: str | None
    reason: str
    actor: str
    #: JSON object: thresholds, the verdict of a rollback, ports, timings.
    detail: str
    prev_hash: str
    event_hash: str

    def compute_hash(self) -> str:
        fields = asdict(self)
        fields.pop("event_hash")
        fields.pop("seq")
        fields["occurred_at"] = self.occurred_at.astimezone(UTC).isoformat()
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class DeploymentLog:
    """The append-only deployment log at ``table_uri``."""

    def __init__(self, table_uri: str | Path) -> None:
        self.table_uri = str(table_uri)

    def __repr__(self) -> str:
        return f"DeploymentLog({self.table_uri!r})"

    def append(
        self,
        action: Action,
        *,
        mode: str,
        share: float = 0.0,
        bento_tag: str | None,
        model_version: str | None,
        previous_bento_tag: str | None = None,
        previous_model_version: str | None = None,
        reason: str,
        actor: str,
        detail: Mapping[str, Any] | None = None,
    ) -> DeploymentEvent:
        """Append one event (chained to the last one) and return it; the first append creates the table.

        Raises:
            ValueError: an unknown ``action``, an empty ``actor``/``reason``, or a ``detail`` that is
                not strict JSON.
            DeploymentLogError: the commit failed (after retries on concurrent commits).
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        for name, value in (("actor", actor), ("reason", reason)):
            if not value or not value.strip():
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        try:
            detail_json = json.dumps(
                dict(detail or {}), sort_keys=True, separators=(",", ":"), allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"detail of the {action!r} event is not JSON: {exc}") from exc
        last: Exception | None = None
        for attempt in range(_ATTEMPTS):
            table = self._open_or_create()
            seq, prev_hash = self._next(table)
            unsealed = DeploymentEvent(
                seq=seq,
                event_id=uuid.uuid4().hex,
                occurred_at=datetime.now(UTC),
                action=action,
                mode=mode,
                share=float(share),
                bento_tag=bento_tag,
                model_version=model_version,
                previous_bento_tag=previous_bento_tag,
                previous_model_version=previous_model_version,
                reason=reason,
                actor=actor,
                detail=detail_json,
                prev_hash=prev_hash,
                event_hash="",
            )
            event = DeploymentEvent(**{**asdict(unsealed), "event_hash": unsealed.compute_hash()})
            try:
                write_deltalake(
                    table,
                    pa.Table.from_pylist([asdict(event)], schema=_SCHEMA),
                    mode="append",
                    commit_properties=CommitProperties(
                        max_commit_retries=0, custom_metadata={"mlp.event_id": event.event_id}
                    ),
                )
                return event
            except CommitFailedError as exc:  # another writer committed since our read: chain again
                last = exc
                time.sleep(min(0.01 * 2**attempt, 0.5) * (0.5 + random.random()))
            except Exception as exc:
                raise DeploymentLogError(f"cannot append {action!r} to {self.table_uri}: {exc}") from exc
        raise DeploymentLogError(
            f"cannot append {action!r} to {self.table_uri}: {_ATTEMPTS} attempts lost ({last})"
        )

    def events(self) -> list[DeploymentEvent]:
        """Every event, oldest first (empty before the first)."""
        return [_event(row) for row in self.to_frame().iter_rows(named=True)]

    def to_frame(self) -> pl.DataFrame:
        table = self._open()
        if table is None:
            empty = pl.from_arrow(_SCHEMA.empty_table())
            assert isinstance(empty, pl.DataFrame)
            return empty
        return pl.DataFrame(table.to_pyarrow_table()).sort("seq").select(_SCHEMA.names)

    def verify(self) -> int:
        """Check every hash and the chain, and that the table is still append-only; return the count.

        Raises:
            DeploymentLogError: naming the first event (or the table) that does not verify.
        """
        table = self._open()
        if table is None:
            return 0
        if table.metadata().configuration.get("delta.appendOnly") != "true":
            raise DeploymentLogError(f"{self.table_uri} is no longer append-only")
        previous = ""
        events = self.events()
        for event in events:
            if event.compute_hash() != event.event_hash:
                raise DeploymentLogError(f"event {event.event_id} ({event.action}) was modified")
            if event.prev_hash != previous:
                raise DeploymentLogError(
                    f"event {event.event_id} ({event.action}): the chain is broken before it"
                )
            previous = event.event_hash
        return len(events)

    def rollback_recorder(self, actor: str) -> Callable[[Rollback], DeploymentEvent]:
        """An ``on_rollback`` for :class:`~ml_platform.lib.deploy.rollback.CanaryGuard` that appends here."""

        def record(rollback: Rollback) -> DeploymentEvent:
            return self.append(
                "rollback",
                mode="single",
                bento_tag=rollback.challenger.bento_tag,
                model_version=rollback.challenger.model_version,
                previous_bento_tag=rollback.champion.bento_tag,
                previous_model_version=rollback.champion.model_version,
                reason=rollback.reason,
                actor=actor,
                detail={
                    "verdict": rollback.verdict.to_dict(),
                    "canary_share": rollback.policy.share,
                    "seconds_since_first_failure": rollback.seconds_since_first_failure,
                    "rolled_back_at": rollback.occurred_at.isoformat(),
                },
            )

        return record

    # ---------------------------------------------------------------------------------- helpers

    def _open(self) -> DeltaTable | None:
        try:
            return DeltaTable(self.table_uri)
        except TableNotFoundError:
            return None

    def _open_or_create(self) -> DeltaTable:
        table = self._open()
        if table is not None:
            return table
        if "://" not in self.table_uri:
            Path(self.table_uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            return DeltaTable.create(
                self.table_uri,
                _SCHEMA,
                mode="error",
                description="mlp: deployments and rollbacks (append-only, hash-chained)",
                configuration=_CONFIGURATION,
            )
        except Exception as exc:
            table = self._open()  # created by another writer meanwhile
            if table is None:
                raise DeploymentLogError(f"cannot create {self.table_uri}: {exc}") from exc
            return table

    @staticmethod
    def _next(table: DeltaTable) -> tuple[int, str]:
        rows = pl.DataFrame(table.to_pyarrow_table(columns=["seq", "event_hash"]))
        if rows.is_empty():
            return 0, ""
        last = rows.sort("seq").row(-1, named=True)
        return int(last["seq"]) + 1, str(last["event_hash"])


def _event(row: Mapping[str, Any]) -> DeploymentEvent:
    occurred_at: datetime = row["occurred_at"]
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    return DeploymentEvent(**{**dict(row), "occurred_at": occurred_at.astimezone(UTC)})
