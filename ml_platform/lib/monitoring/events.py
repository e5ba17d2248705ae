"""The monitoring events table: every drift detection, retrain decision and alert, append-only.

One Delta table (``<storage>/monitoring/events``) that the timeline of ``mlp replay``, an on-call
engineer and an auditor read: what was detected, what the sensor decided and why, and whether
the alert went out. Rows are only ever appended; the Delta log keeps when each was written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import polars as pl

EventKind = Literal[
    "drift_detected",
    "decay_detected",
    "retrain_requested",
    "retrain_suppressed",
    "retrain_deferred",
    "retrain_blocked",
    "alert_failed",
]
_SCHEMA: Final[dict[str, pl.DataType]] = {
    "written_at": pl.Datetime("us", "UTC"),
    "at": pl.Datetime("us", "UTC"),
    "kind": pl.String(),
    "day": pl.String(),
    "severity": pl.String(),
    "partition": pl.String(),
    "run_key": pl.String(),
    "summary": pl.String(),
    "detail": pl.String(),
}


@dataclass(frozen=True)
class MonitoringEvent:
    """One row of the events table (``at``: the sensor's clock when it decided)."""

    at: datetime
    kind: EventKind
    day: str
    severity: str
    summary: str
    partition: str | None = None
    run_key: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The table row (``detail`` as JSON text)."""
        return {
            "at": self.at,
            "kind": self.kind,
            "day": self.day,
            "severity": self.severity,
            "partition": self.partition,
            "run_key": self.run_key,
            "summary": self.summary,
            "detail": json.dumps(self.detail, sort_keys=True, default=str),
        }


class MonitoringEvents:
    """Append-only access to the events table at ``table_uri``."""

    def __init__(self, table_uri: str | Path) -> None:
        self.table_uri = str(table_uri)

    def append(self, events: Sequence[MonitoringEvent]) -> None:
        """Append ``events`` in one Delta commit (nothing for an empty list)."""
        if not events:
            return
        from deltalake import write_deltalake

        written = datetime.now(UTC)
        frame = pl.DataFrame([{"written_at": written, **e.row()} for e in events], schema=_SCHEMA)
        Path(self.table_uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            write_deltalake(self.table_uri, frame.to_arrow(), mode="append")
        except Exception as exc:
            raise RuntimeError(
                f"monitoring events: cannot append {len(events)} event(s) to {self.table_uri}: {exc}"
            ) from exc

    def to_frame(self) -> pl.DataFrame:
        """Every event in the order written (an empty frame before the first).

        ``at`` is the sensor's clock (simulated in a replay); ``written_at`` the wall clock of the
        append, which orders the rows.
        """
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(self.table_uri):
            return pl.DataFrame(schema=_SCHEMA)
        return pl.read_delta(self.table_uri).sort("written_at", maintain_order=True)
