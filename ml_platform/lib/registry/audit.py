"""The audit log of model alias changes: an append-only, hash-chained Delta Lake table.

Every change of a registered model's aliases (and every decision that left them unchanged) is one
row. Three layers protect the record:

* The table is created with ``delta.appendOnly=true``, so Delta itself refuses commits that remove
  or rewrite rows (``DELETE``, ``UPDATE``, ``MERGE``, an overwriting write).
* Each event carries ``prev_hash``, the ``event_hash`` of the previous event of the same model, and
  its own ``event_hash`` over all its fields. :meth:`AuditLog.verify` recomputes the chain, so a row
  edited, removed, inserted or reordered by rewriting the data files is found.
* :meth:`AuditLog.verify` also checks that the table is still append-only and that its commit history
  holds only appends, so a wholesale rewrite with a recomputed chain is found too (as long as the
  commit log is kept: the table is created with ``delta.enableExpiredLogCleanup=false``).

Appends are serialised by optimistic concurrency: each one reads the table, computes its sequence
number and ``prev_hash`` from that snapshot, and commits with no automatic retry, so a concurrent
commit makes it fail with ``CommitFailedError``; it then re-reads and tries again. Two writers can
therefore never fork a model's chain.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError

ACTIONS: Final = ("set_challenger", "promote", "reject", "await_approval", "rollback")
#: Actions that record a decision without moving an alias (their ``alias`` is None).
ALIASLESS_ACTIONS: Final = frozenset({"reject", "await_approval"})

#: The monotonically increasing commit order of the events (0 for the first row of the table).
SEQUENCE_COLUMN: Final = "seq"
_TABLE_CONFIGURATION: Final[dict[str, str | None]] = {
    "delta.appendOnly": "true",
    # keep every commit's log entry: the commit history is part of the audit trail (see verify)
    "delta.enableExpiredLogCleanup": "false",
}
_SCHEMA: Final = pa.schema(
    [
        pa.field(SEQUENCE_COLUMN, pa.int64(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("alias", pa.string()),
        pa.field("version", pa.string()),
        pa.field("previous_version", pa.string()),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("evidence", pa.string(), nullable=False),
        pa.field("occurred_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("prev_hash", pa.string(), nullable=False),
        pa.field("event_hash", pa.string(), nullable=False),
    ]
)
_COMMIT_ATTEMPTS: Final = 12
#: Commits that keep the rows as they are: appends, and maintenance that rewrites no data.
_HARMLESS_OPERATIONS: Final = frozenset({"CREATE TABLE", "OPTIMIZE", "VACUUM START", "VACUUM END"})


class AuditIntegrityError(RuntimeError):
    """The audit log does not verify: a row or the table was changed after it was written."""

    def __init__(self, event_id: str | None, problem: str) -> None:
        self.event_id = event_id
        self.problem = problem
        where = f"audit event {event_id}" if event_id is not None else "audit table"
        super().__init__(f"{where}: {problem}")


class AuditWriteError(RuntimeError):
    """An event could not be committed to the audit table."""


def _canonical_json(value: Any) -> str:
    """Strict, canonical JSON: sorted keys, no whitespace, no NaN/Infinity."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_evidence(evidence: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``evidence`` as it reads back from the log (a JSON round trip).

    Raises:
        ValueError: naming the ``evidence`` field, when it is not a mapping with string keys or not
            serialisable as strict JSON (NaN and Infinity are not JSON).
    """
    if not isinstance(evidence, Mapping):
        raise ValueError(f"evidence must be a JSON object (a mapping), got {type(evidence).__name__}")
    bad_keys = [k for k in evidence if not isinstance(k, str)]
    if bad_keys:
        raise ValueError(f"evidence keys must be strings, got {bad_keys[:3]!r}")
    try:
        loaded = json.loads(_canonical_json(dict(evidence)))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"evidence is not JSON-serializable: {exc}") from exc
    assert isinstance(loaded, dict)
    return loaded


@dataclass(frozen=True)
class AliasEvent:
    """One change of a model's aliases, or one decision that left them as they were."""

    event_id: str
    model_name: str
    action: str
    #: The alias that changed (``"champion"``/``"challenger"``); None for reject/await_approval.
    alias: str | None
    #: The model version the event is about; for alias changes, the version the alias points to after it.
    version: str | None
    #: What the alias pointed to before the event (None when it was unset).
    previous_version: str | None
    #: Who did it: ``"policy:automatic"``, ``"policy:registration"``, ``"user:alice"``, ...
    actor: str
    reason: str
    #: JSON object: gates, metrics, run ids.
    evidence: dict[str, Any]
    #: UTC, timezone-aware.
    occurred_at: datetime
    #: ``event_hash`` of the previous event of the same model; ``""`` for its first event.
    prev_hash: str
    #: sha256 hex digest of the canonical JSON of all the fields above.
    event_hash: str

    def hashed_fields(self) -> dict[str, Any]:
        """The fields covered by ``event_hash``, in their JSON form."""
        return {
            "event_id": self.event_id,
            "model_name": self.model_name,
            "action": self.action,
            "alias": self.alias,
            "version": self.version,
            "previous_version": self.previous_version,
            "actor": self.actor,
            "reason": self.reason,
            "evidence": self.evidence,
            "occurred_at": self.occurred_at.astimezone(UTC).isoformat(),
            "prev_hash": self.prev_hash,
        }

    def compute_hash(self) -> str:
        """The sha256 hex digest of the canonical JSON (sorted keys) of :meth:`hashed_fields`."""
        return hashlib.sha256(_canonical_json(self.hashed_fields()).encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON form (for the CLI and run metadata)."""
        return {**self.hashed_fields(), "event_hash": self.event_hash}


class AuditLog:
    """The audit log of alias changes stored as an append-only Delta table at ``table_uri``."""

    def __init__(self, table_uri: str | Path) -> None:
        self.table_uri = str(table_uri)

    def __repr__(self) -> str:
        return f"AuditLog({self.table_uri!r})"

    # ----------------------------------------------------------------------------------- writing

    def append(
        self,
        *,
        model_name: str,
        action: str,
        alias: str | None,
        version: str | None,
        previous_version: str | None,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any],
    ) -> AliasEvent:
        """Append one event, chained to the last event of ``model_name``, and return it.

        The table is created (append-only) by the first append. A concurrent commit makes the
        append re-read the table and retry, so the sequence and the chain stay linear.

        Raises:
            ValueError: naming the field, when ``action`` is not one of :data:`ACTIONS`, ``alias``
                does not fit the action, ``model_name``/``actor`` are empty or ``evidence`` is not
                a JSON object.
            AuditWriteError: when the commit fails (after retries on concurrent commits).
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r} (model {model_name!r})")
        for field_name, value in (("model_name", model_name), ("actor", actor)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{field_name} must be a non-empty string, got {value!r}")
        if action in ALIASLESS_ACTIONS and alias is not None:
            raise ValueError(
                f"alias must be None for action {action!r}, got {alias!r} (model {model_name!r})"
            )
        if action not in ALIASLESS_ACTIONS and not alias:
            raise ValueError(f"alias is required for action {action!r} (model {model_name!r})")
        try:
            clean_evidence = canonical_evidence(evidence)
        except ValueError as exc:
            raise ValueError(f"{exc} (model {model_name!r}, action {action!r}, version {version!r})") from exc

        last_error: CommitFailedError | None = None
        for attempt in range(_COMMIT_ATTEMPTS):
            dt = self._open_or_create()
            seq, prev_hash = self._next_position(dt, model_name)
            event = _seal(
                event_id=uuid.uuid4().hex,
                model_name=model_name,
                action=action,
                alias=alias,
                version=version,
                previous_version=previous_version,
                actor=actor,
                reason=reason,
                evidence=clean_evidence,
                occurred_at=datetime.now(UTC),
                prev_hash=prev_hash,
            )
            try:
                write_deltalake(
                    dt,
                    pa.Table.from_pylist([_to_row(event, seq)], schema=_SCHEMA),
                    mode="append",
                    # No automatic retry: the commit must land right after the snapshot we chained to.
                    commit_properties=CommitProperties(
                        max_commit_retries=0,
                        custom_metadata={"mlp.event_id": event.event_id, "mlp.model_name": model_name},
                    ),
                )
                return event
            except CommitFailedError as exc:  # someone committed since our read: chain again
                last_error = exc
                time.sleep(min(0.01 * 2**attempt, 0.5) * (0.5 + random.random()))
            except Exception as exc:
                raise AuditWriteError(
                    f"cannot append {action!r} event {event.event_id} of model {model_name!r}"
                    f" (version {version!r}) to {self.table_uri}: {exc}"
                ) from exc
        raise AuditWriteError(
            f"cannot append {action!r} event of model {model_name!r} (version {version!r}) to"
            f" {self.table_uri}: {_COMMIT_ATTEMPTS} attempts lost to concurrent commits ({last_error})"
        )

    def _open(self) -> DeltaTable | None:
        try:
            return DeltaTable(self.table_uri)
        except TableNotFoundError:
            return None

    def _open_or_create(self) -> DeltaTable:
        """The table at its latest version, created empty (append-only) when missing.

        Creating it in a commit of its own, rather than with the first append, keeps every append a
        commit onto a snapshot this process has read, which is what serialises concurrent appends.
        """
        dt = self._open()
        if dt is not None:
            return dt
        try:
            return DeltaTable.create(
                self.table_uri,
                _SCHEMA,
                mode="error",
                description="mlp: audit log of model alias changes (append-only, hash-chained)",
                configuration=_TABLE_CONFIGURATION,
            )
        except Exception as exc:
            dt = self._open()  # another process created it first: use theirs
            if dt is None:
                raise AuditWriteError(f"cannot create the audit table {self.table_uri}: {exc}") from exc
            return dt

    @staticmethod
    def _next_position(dt: DeltaTable, model_name: str) -> tuple[int, str]:
        """The next sequence number and the hash to chain to, both as of ``dt``'s snapshot."""
        rows = pl.DataFrame(dt.to_pyarrow_table(columns=[SEQUENCE_COLUMN, "model_name", "event_hash"]))
        if rows.is_empty():
            return 0, ""
        seq = int(rows[SEQUENCE_COLUMN].max()) + 1  # type: ignore[arg-type]
        own = rows.filter(pl.col("model_name") == model_name).sort(SEQUENCE_COLUMN)
        return seq, (str(own["event_hash"][-1]) if own.height else "")

    # ----------------------------------------------------------------------------------- reading

    def to_frame(self, model_name: str | None = None) -> pl.DataFrame:
        """The events as stored (evidence as a JSON string), oldest first; empty without a table."""
        dt = self._open()
        if dt is None:
            empty = pl.from_arrow(_SCHEMA.empty_table())
            assert isinstance(empty, pl.DataFrame)
            return empty
        frame = pl.DataFrame(dt.to_pyarrow_table())
        if model_name is not None:
            frame = frame.filter(pl.col("model_name") == model_name)
        return frame.sort(SEQUENCE_COLUMN).select(_SCHEMA.names)

    def events(self, model_name: str | None = None) -> list[AliasEvent]:
        """The events (of ``model_name``, or all), oldest first (in commit order)."""
        return [_from_row(row) for row in self.to_frame(model_name).iter_rows(named=True)]

    # ------------------------------------------------------------------------------ verification

    def verify(self, model_name: str | None = None) -> int:
        """Check the log and return the number of events checked (0 without a table).

        Checks, in order: every event's hash against its content and its ``prev_hash`` against the
        hash of the model's previous event; sequence numbers and event ids are unique; the table
        is still append-only; its commit history holds only appends (and data-preserving
        maintenance). Only ``model_name``'s chain is checked when given; the table checks always run.

        Raises:
            AuditIntegrityError: on the first problem, naming the event (or the table) and what is wrong.
        """
        dt = self._open()
        if dt is None:
            return 0
        frame = pl.DataFrame(dt.to_pyarrow_table()).sort(SEQUENCE_COLUMN)
        for column in (SEQUENCE_COLUMN, "event_id"):
            duplicated = frame.filter(pl.col(column).is_duplicated())
            if duplicated.height:
                row = duplicated.row(0, named=True)
                raise AuditIntegrityError(
                    str(row["event_id"]),
                    f"{column} {row[column]!r} occurs {duplicated.height} times in {self.table_uri}",
                )
        if model_name is not None:
            frame = frame.filter(pl.col("model_name") == model_name)
        last_hash: dict[str, tuple[str, str]] = {}  # model -> (event_id, event_hash) of its last event
        checked = 0
        for row in frame.iter_rows(named=True):
            try:
                event = _from_row(row)
            except (TypeError, ValueError) as exc:
                raise AuditIntegrityError(str(row["event_id"]), f"unreadable row: {exc}") from exc
            actual = event.compute_hash()
            if actual != event.event_hash:
                raise AuditIntegrityError(
                    event.event_id,
                    f"content of this {event.action!r} event of model {event.model_name!r} (version"
                    f" {event.version!r}) hashes to {actual[:16]}…, not its recorded event_hash"
                    f" {event.event_hash[:16]}…: the row was modified",
                )
            before_id, before_hash = last_hash.get(event.model_name, (None, ""))
            if event.prev_hash != before_hash:
                preceding = f"event {before_id}" if before_id else "no earlier event"
                raise AuditIntegrityError(
                    event.event_id,
                    f"prev_hash {event.prev_hash[:16] or '(empty)'}… of this event of model"
                    f" {event.model_name!r} does not match the preceding record ({preceding},"
                    f" hash {before_hash[:16] or '(empty)'}…): events were removed, inserted or reordered",
                )
            last_hash[event.model_name] = (event.event_id, event.event_hash)
            checked += 1
        self._verify_table(dt)
        return checked

    def _verify_table(self, dt: DeltaTable) -> None:
        """The table is still append-only and its visible history holds no rewriting commit."""
        append_only = dt.metadata().configuration.get("delta.appendOnly")
        if append_only != "true":
            raise AuditIntegrityError(
                None, f"{self.table_uri} is no longer append-only (delta.appendOnly={append_only!r})"
            )
        for commit in dt.history():
            operation = str(commit.get("operation"))
            parameters = commit.get("operationParameters") or {}
            if operation == "WRITE" and parameters.get("mode") == "Append":
                continue
            if operation in _HARMLESS_OPERATIONS:
                continue
            if operation == "SET TBLPROPERTIES" and "delta.appendOnly" not in str(parameters):
                continue
            raise AuditIntegrityError(
                None,
                f"commit {commit.get('version')} of {self.table_uri} is a {operation} {parameters}, not an"
                " append: rows may have been rewritten",
            )


def _seal(**fields: Any) -> AliasEvent:
    """An :class:`AliasEvent` of ``fields`` with its ``event_hash`` computed."""
    unsealed = AliasEvent(**fields, event_hash="")
    return AliasEvent(**fields, event_hash=unsealed.compute_hash())


def _to_row(event: AliasEvent, seq: int) -> dict[str, Any]:
    return {
        SEQUENCE_COLUMN: seq,
        "event_id": event.event_id,
        "model_name": event.model_name,
        "action": event.action,
        "alias": event.alias,
        "version": event.version,
        "previous_version": event.previous_version,
        "actor": event.actor,
        "reason": event.reason,
        "evidence": _canonical_json(event.evidence),
        "occurred_at": event.occurred_at,
        "prev_hash": event.prev_hash,
        "event_hash": event.event_hash,
    }


def _from_row(row: Mapping[str, Any]) -> AliasEvent:
    occurred_at = row["occurred_at"]
    if not isinstance(occurred_at, datetime):
        raise TypeError(f"occurred_at is {type(occurred_at).__name__}, not a datetime")
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    evidence = json.loads(row["evidence"])
    if not isinstance(evidence, dict):
        raise ValueError(f"evidence is a JSON {type(evidence).__name__}, not an object")
    return AliasEvent(
        event_id=str(row["event_id"]),
        model_name=str(row["model_name"]),
        action=str(row["action"]),
        alias=row["alias"],
        version=row["version"],
        previous_version=row["previous_version"],
        actor=str(row["actor"]),
        reason=str(row["reason"]),
        evidence=evidence,
        occurred_at=occurred_at.astimezone(UTC),
        prev_hash=str(row["prev_hash"]),
        event_hash=str(row["event_hash"]),
    )
