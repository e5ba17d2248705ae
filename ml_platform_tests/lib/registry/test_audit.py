"""The alias audit log: an append-only, hash-chained Delta table that detects tampering."""

from __future__ import annotations

import dataclasses
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError

from ml_platform.lib.registry.audit import AliasEvent, AuditIntegrityError, AuditLog


def _append(log: AuditLog, model: str = "flights", **overrides: Any) -> AliasEvent:
    fields: dict[str, Any] = {
        "model_name": model,
        "action": "promote",
        "alias": "champion",
        "version": "1",
        "previous_version": None,
        "actor": "policy:automatic",
        "reason": "passed all gates",
        "evidence": {"gates": [{"name": "g", "passed": True}], "run_id": "abc"},
    }
    fields.update(overrides)
    return log.append(**fields)


def _three_events(log: AuditLog, model: str = "flights") -> list[AliasEvent]:
    return [
        _append(log, model, action="set_challenger", alias="challenger", version="1"),
        _append(log, model, action="promote", alias="champion", version="1"),
        _append(log, model, action="reject", alias=None, version="2", reason="failed gates"),
    ]


def _write_copy(frame: pl.DataFrame, uri: Path) -> AuditLog:
    """A manipulated copy of the table, written as a fresh append-only table (clean Delta history)."""
    write_deltalake(str(uri), frame.to_arrow(), mode="append", configuration={"delta.appendOnly": "true"})
    return AuditLog(uri)


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit")


def test_missing_table_reads_empty(log: AuditLog) -> None:
    assert log.events() == []
    assert log.events("flights") == []
    assert log.to_frame().is_empty()
    assert "event_hash" in log.to_frame().columns
    assert log.verify() == 0


def test_append_and_events_roundtrip(log: AuditLog) -> None:
    written = _three_events(log)

    read = log.events()
    assert read == written  # every field, evidence dict and tz-aware timestamp included
    first = read[0]
    assert len(first.event_id) == 32 and int(first.event_id, 16) >= 0
    assert first.occurred_at.tzinfo is not None and first.occurred_at.utcoffset() == UTC.utcoffset(None)
    assert first.evidence == {"gates": [{"name": "g", "passed": True}], "run_id": "abc"}
    assert [e.action for e in read] == ["set_challenger", "promote", "reject"]
    assert read[2].alias is None and read[2].previous_version is None
    # the chain: each event points at its predecessor; every hash covers its content
    assert [e.prev_hash for e in read] == ["", read[0].event_hash, read[1].event_hash]
    assert all(e.compute_hash() == e.event_hash for e in read)
    assert log.verify() == 3


def test_the_table_is_created_append_only_with_evidence_as_json(log: AuditLog) -> None:
    _append(log, evidence={"b": 1, "a": [1.5, None]})
    dt = DeltaTable(log.table_uri)
    assert dt.metadata().configuration["delta.appendOnly"] == "true"
    frame = log.to_frame()
    assert frame.schema["evidence"] == pl.String
    assert frame["evidence"][0] == '{"a":[1.5,null],"b":1}'
    assert frame["seq"].to_list() == [0]


def test_events_are_chained_per_model_and_filtered(log: AuditLog) -> None:
    a1 = _append(log, "a", version="1")
    b1 = _append(log, "b", version="1")
    a2 = _append(log, "a", version="2", previous_version="1")

    assert log.events("a") == [a1, a2]
    assert log.events("b") == [b1]
    assert log.events("nope") == []
    assert [e.event_id for e in log.events()] == [a1.event_id, b1.event_id, a2.event_id]
    assert b1.prev_hash == ""  # each model has its own chain
    assert a2.prev_hash == a1.event_hash
    assert log.to_frame("a")["event_id"].to_list() == [a1.event_id, a2.event_id]
    assert log.verify("a") == 2 and log.verify("b") == 1 and log.verify() == 3


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"evidence": {"when": datetime.now(UTC)}}, "evidence"),
        ({"evidence": {"mae": math.nan}}, "evidence"),
        ({"evidence": ["not", "an", "object"]}, "evidence"),
        ({"action": "delete"}, "action"),
        ({"action": "reject", "alias": "champion"}, "alias"),
        ({"action": "promote", "alias": None}, "alias"),
        ({"actor": ""}, "actor"),
    ],
)
def test_invalid_events_are_refused_before_anything_is_written(
    log: AuditLog, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        _append(log, **overrides)
    assert log.events() == []


def test_delta_refuses_deletes_updates_and_overwrites(log: AuditLog) -> None:
    written = _three_events(log)
    dt = DeltaTable(log.table_uri)

    with pytest.raises(CommitFailedError, match="append-only"):
        dt.delete("action = 'reject'")
    with pytest.raises(CommitFailedError, match="append-only"):
        DeltaTable(log.table_uri).update(updates={"reason": "'nothing to see'"})
    with pytest.raises(CommitFailedError, match="append-only"):
        write_deltalake(DeltaTable(log.table_uri), log.to_frame().head(1).to_arrow(), mode="overwrite")

    assert log.events() == written
    assert log.verify() == 3


def test_verify_finds_a_modified_row(log: AuditLog, tmp_path: Path) -> None:
    events = _three_events(log)
    frame = log.to_frame().with_columns(
        pl.when(pl.col("event_id") == events[1].event_id)
        .then(pl.lit("user:mallory"))
        .otherwise(pl.col("actor"))
        .alias("actor")
    )
    forged = _write_copy(frame, tmp_path / "forged")

    with pytest.raises(AuditIntegrityError, match="modified") as raised:
        forged.verify()
    assert raised.value.event_id == events[1].event_id


def test_verify_finds_a_modified_row_whose_hash_was_recomputed(log: AuditLog, tmp_path: Path) -> None:
    events = _three_events(log)
    tampered = dataclasses.replace(events[1], version="666")
    rehashed = tampered.compute_hash()
    frame = log.to_frame().with_columns(
        pl.when(pl.col("event_id") == events[1].event_id)
        .then(pl.lit("666"))
        .otherwise(pl.col("version"))
        .alias("version"),
        pl.when(pl.col("event_id") == events[1].event_id)
        .then(pl.lit(rehashed))
        .otherwise(pl.col("event_hash"))
        .alias("event_hash"),
    )
    forged = _write_copy(frame, tmp_path / "forged")

    with pytest.raises(AuditIntegrityError, match="removed, inserted or reordered") as raised:
        forged.verify()
    assert raised.value.event_id == events[2].event_id  # the successor no longer links to it


def test_verify_finds_a_removed_row(log: AuditLog, tmp_path: Path) -> None:
    events = _three_events(log)
    _append(log, "other")
    forged = _write_copy(log.to_frame().filter(pl.col("event_id") != events[0].event_id), tmp_path / "f")

    assert forged.verify("other") == 1  # other models' chains are intact
    with pytest.raises(AuditIntegrityError) as raised:
        forged.verify()
    assert raised.value.event_id == events[1].event_id


def test_verify_finds_an_in_place_rewrite_even_with_a_consistent_chain(log: AuditLog) -> None:
    """Turning appendOnly off to rewrite the table is visible in the table and its history."""
    _three_events(log)
    genuine = log.to_frame()
    dt = DeltaTable(log.table_uri)
    dt.alter.set_table_properties({"delta.appendOnly": "false"})
    # drop the last event: the remaining chain is still consistent
    write_deltalake(DeltaTable(log.table_uri), genuine.head(2).to_arrow(), mode="overwrite")
    assert len(log.events()) == 2

    with pytest.raises(AuditIntegrityError, match="no longer append-only"):
        log.verify()
    DeltaTable(log.table_uri).alter.set_table_properties({"delta.appendOnly": "true"})
    with pytest.raises(AuditIntegrityError, match="not an append") as raised:
        log.verify()
    assert raised.value.event_id is None


def test_concurrent_appends_keep_one_linear_chain(log: AuditLog) -> None:
    writers, per_writer = 4, 4
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(i: int) -> None:
        barrier.wait()  # all race to create the table and to append
        try:
            for j in range(per_writer):
                _append(log, "flights", version=f"{i}.{j}", evidence={"writer": i})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    frame = log.to_frame()
    assert frame["seq"].to_list() == list(range(writers * per_writer))
    assert frame["prev_hash"].n_unique() == writers * per_writer  # no fork: every hash chained once
    assert log.verify() == writers * per_writer
