"""Reading a day of the prediction log: complete lines only, hashes of what was read, quarantine."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ml_platform.lib.online.features import FEATURE_COLUMNS, FEATURE_SCHEMA
from ml_platform.lib.online.snapshot import SnapshotRef
from ml_platform.lib.serving.prediction_log import (
    LOG_SCHEMA,
    QUARANTINE_REASON,
    QUARANTINE_SCHEMA,
    SNAPSHOT_COLUMNS,
    LogRecord,
    PredictionLog,
    read_complete,
    read_day,
    to_json_line,
)
from ml_platform.lib.training.data import INPUT_COLUMNS

DAY = date(2013, 1, 15)
BENTO = "delay_service:v3-0123456789abcdef"
SNAPSHOT = SnapshotRef(
    day=DAY,
    aggregates_as_of=datetime(2013, 1, 15, 5, tzinfo=UTC),
    content_hash="ab" * 32,
    written_at=datetime(2026, 5, 1, 6, 0, tzinfo=UTC),
)


def features(departure: datetime, carrier: str = "B6") -> pl.DataFrame:
    """A one-row online feature frame with every column (weather unknown)."""
    row: dict[str, Any] = {}
    for name, dtype in FEATURE_SCHEMA.items():
        if dtype == pl.String:
            row[name] = "x"
        elif dtype == pl.Int64:
            row[name] = 3
        elif dtype == pl.Float64:
            row[name] = 1.5
        else:
            row[name] = None
    row.update(
        carrier=carrier,
        flight=725,
        origin="JFK",
        dest="BQN",
        scheduled_departure=departure,
        flight_date=departure.astimezone(UTC).date(),
        temp=None,  # no recent observation: null weather, kept as null
        aggregates_as_of=datetime(2013, 1, 15, 5, tzinfo=UTC),
    )
    frame = pl.DataFrame([row], schema=FEATURE_SCHEMA)
    assert frame.columns == list(FEATURE_COLUMNS)
    return frame


def record(
    i: int,
    departure: datetime = datetime(2013, 1, 15, 15, 45, tzinfo=UTC),
    bento_tag: str | None = BENTO,
    stale: bool | None = False,
) -> LogRecord:
    return LogRecord(
        logged_at=datetime(2026, 5, 1, 12, 0, i, tzinfo=UTC),
        request_id=f"req-{i}",
        endpoint="predict_batch",
        index=i,
        model_name="delay_model",
        model_version="3",
        bento_tag=bento_tag,
        latency_ms=2.5,
        request={
            "carrier": "B6",
            "flight": 725,
            "origin": "JFK",
            "dest": "BQN",
            "scheduled_departure": departure,
            "distance": 1576.0,
        },
        features=features(departure),
        row=0,
        predicted_arr_delay=10.0 + i,
        delay_probability=0.25,
        snapshot=None if stale is None else SNAPSHOT,
        stale=stale,
    )


def write(tmp_path: Path, records: list[LogRecord], stem: str = "host-1") -> None:
    log = PredictionLog(tmp_path, file_stem=stem)
    log.append(records)
    log.close()


def test_a_day_is_read_into_typed_flat_rows_with_the_model_inputs(tmp_path: Path) -> None:
    write(tmp_path, [record(0), record(1)])
    write(tmp_path, [record(2)], stem="host-2")
    day = read_day(tmp_path, DAY)
    assert day is not None
    assert day.frame.schema == pl.Schema(LOG_SCHEMA)
    assert set(INPUT_COLUMNS) <= set(day.frame.columns)
    assert day.quarantined.height == 0 and day.quarantined.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert day.frame["request_id"].to_list() == ["req-0", "req-1", "req-2"]
    assert day.frame["source_file"].to_list() == ["host-1.jsonl", "host-1.jsonl", "host-2.jsonl"]
    assert day.frame["source_line"].to_list() == [1, 2, 1]
    first = day.frame.row(0, named=True)
    assert first["scheduled_departure"] == datetime(2013, 1, 15, 15, 45, tzinfo=UTC)
    assert first["logged_at"] == datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert first["predicted_arr_delay"] == 10.0 and first["delay_probability"] == 0.25
    assert first["model_version"] == "3" and first["latency_ms"] == 2.5
    assert first["bento_tag"] == BENTO
    assert first["online_snapshot_day"] == DAY and first["online_snapshot_hash"] == SNAPSHOT.content_hash
    assert first["online_snapshot_written_at"] == SNAPSHOT.written_at and first["stale"] is False
    assert first["temp"] is None and first["flight_date"] == DAY
    assert [f.name for f in day.files] == ["host-1.jsonl", "host-2.jsonl"]


def test_only_complete_lines_are_read_and_hashed(tmp_path: Path) -> None:
    write(tmp_path, [record(0), record(1)])
    path = tmp_path / DAY.isoformat() / "host-1.jsonl"
    complete = path.read_bytes()
    half = to_json_line(record(2))[:100].encode()
    with path.open("ab") as handle:  # a writer in the middle of a line
        handle.write(half)
    data, read = read_complete(path)
    assert data == complete
    assert read.bytes_read == len(complete) and read.lines == 2 and read.pending_bytes == len(half)
    assert read.sha256 == hashlib.sha256(path.read_bytes()[: read.bytes_read]).hexdigest()
    day = read_day(tmp_path, DAY)
    assert day is not None and day.frame.height == 2 and day.quarantined.height == 0
    assert day.files[0].to_metadata() == {
        "file": "host-1.jsonl",
        "bytes_read": len(complete),
        "lines": 2,
        "sha256": hashlib.sha256(complete).hexdigest(),
        "pending_bytes": len(half),
    }
    with path.open("ab") as handle:  # the line is finished: the next read has it
        handle.write(to_json_line(record(2)).encode()[100:])
    again = read_day(tmp_path, DAY)
    assert again is not None and again.frame["request_id"].to_list() == ["req-0", "req-1", "req-2"]
    assert again.files[0].pending_bytes == 0


def _line(**changes: Any) -> str:
    line = json.loads(to_json_line(record(0)))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = line
        for parent in parents:
            target = target[parent]
        if value is _DELETE:
            del target[key]
        else:
            target[key] = value
    return json.dumps(line)


_DELETE = object()


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "not JSON: a list"),
        (_line(request_id=_DELETE), "request_id: missing"),
        (_line(request__flight="725"), "request.flight: expected Int64, got str"),
        (
            _line(request__scheduled_departure="2013-01-15T15:45:00"),
            "request.scheduled_departure: a datetime without offset",
        ),
        (_line(prediction__delay_probability=None), "prediction.delay_probability: null"),
        (_line(features=_DELETE), "features: missing"),
        (_line(features__origin_flights_7d=True), "features.origin_flights_7d: expected Int64, got bool"),
        (_line(bento_tag=3), "bento_tag: expected String, got int"),
        (
            _line(request__scheduled_departure="2013-01-16T15:45:00+00:00"),
            "another day: a flight of 2013-01-16",
        ),
    ],
)
def test_a_malformed_line_is_quarantined_with_its_reason_never_dropped(
    tmp_path: Path, line: str, reason: str
) -> None:
    write(tmp_path, [record(0)])
    path = tmp_path / DAY.isoformat() / "host-1.jsonl"
    offset = path.stat().st_size
    with path.open("a") as handle:
        handle.write(line + "\n\n")  # and a blank line, which is no line at all
    write(tmp_path, [record(1)])
    day = read_day(tmp_path, DAY)
    assert day is not None
    assert day.frame["request_id"].to_list() == ["req-0", "req-1"]
    assert day.frame["source_line"].to_list() == [1, 4]
    (bad,) = day.quarantined.iter_rows(named=True)
    assert bad[QUARANTINE_REASON].startswith(reason), bad[QUARANTINE_REASON]
    assert bad["source_file"] == "host-1.jsonl" and bad["source_line"] == 2 and bad["byte_offset"] == offset
    assert bad["raw_line"] == line
    assert day.lines == 3 and day.files[0].lines == 4
    assert sum(day.reasons().values()) == 1


def test_bytes_that_are_not_utf8_are_quarantined(tmp_path: Path) -> None:
    folder = tmp_path / DAY.isoformat()
    folder.mkdir()
    (folder / "w.jsonl").write_bytes(b'{"a": "\xff"}\n' + to_json_line(record(0)).encode())
    day = read_day(tmp_path, DAY)
    assert day is not None and day.frame.height == 1
    assert day.quarantined[QUARANTINE_REASON][0].startswith("not UTF-8")


def test_a_missing_or_empty_folder_is_nothing_to_publish(tmp_path: Path) -> None:
    assert read_day(tmp_path, DAY) is None
    folder = tmp_path / DAY.isoformat()
    folder.mkdir()
    assert read_day(tmp_path, DAY) is None
    (folder / "notes.txt").write_text("not a log file\n")
    (folder / "w.jsonl").write_text("")
    assert read_day(tmp_path, DAY) is None
    (folder / "w.jsonl").write_text(to_json_line(record(0))[:50])  # only a line being written
    assert read_day(tmp_path, DAY) is None


def test_lines_of_several_days_in_one_batch_are_read_by_their_day(tmp_path: Path) -> None:
    late = datetime(2013, 1, 16, 3, 30, tzinfo=UTC)  # 22:30 on the 15th in New York
    next_day = datetime(2013, 1, 16, 15, tzinfo=UTC)
    write(
        tmp_path, [record(0), record(1, late), record(2, next_day), record(3, next_day + timedelta(hours=1))]
    )
    fifteenth, sixteenth = read_day(tmp_path, DAY), read_day(tmp_path, date(2013, 1, 16))
    assert fifteenth is not None and sixteenth is not None
    assert fifteenth.frame["request_id"].to_list() == ["req-0", "req-1"]
    assert sixteenth.frame["request_id"].to_list() == ["req-2", "req-3"]
    assert fifteenth.quarantined.height == sixteenth.quarantined.height == 0


def _without_bento_tag(record: LogRecord) -> str:
    """``record``'s line as the service wrote it before lines named their Bento (no key at all)."""
    line = json.loads(to_json_line(record))
    del line["bento_tag"]
    return json.dumps(line, separators=(",", ":")) + "\n"


def test_a_line_written_before_the_bento_tag_existed_reads_as_null(tmp_path: Path) -> None:
    folder = tmp_path / DAY.isoformat()
    folder.mkdir()
    (folder / "old.jsonl").write_text(_without_bento_tag(record(0)))
    write(tmp_path, [record(1), record(2, bento_tag=None)], stem="new")  # a Bento; served from source
    day = read_day(tmp_path, DAY)
    assert day is not None and day.quarantined.height == 0
    assert day.frame.schema == pl.Schema(LOG_SCHEMA)
    assert dict(day.frame.select("request_id", "bento_tag").iter_rows()) == {
        "req-1": BENTO,
        "req-2": None,
        "req-0": None,
    }


def test_a_day_published_before_the_bento_tag_and_a_day_after_share_the_table(tmp_path: Path) -> None:
    """The ``prediction_log`` table of a deployment that predates the column gets it through
    ``schema_mode="merge"``: the old day reads null, the new day its tags, and the published-rows
    fallback of ``mlp lineage`` returns the tag where there is one."""
    from ml_platform.lib.storage import PARTITION_COLUMN, DeltaPartitionStore
    from ml_platform.lineage.sources import find_request_in_table

    logs, delta = tmp_path / "log", tmp_path / "delta"
    store = DeltaPartitionStore(delta)
    (logs / DAY.isoformat()).mkdir(parents=True)
    (logs / DAY.isoformat() / "old.jsonl").write_text(_without_bento_tag(record(0)))
    old_day = read_day(logs, DAY)
    assert old_day is not None
    # what the asset published before the change: the same rows, no bento_tag column
    old_pin = store.write_partition("prediction_log", DAY.isoformat(), old_day.frame.drop("bento_tag"))
    assert [r.data.get("bento_tag", "absent") for r in find_request_in_table(delta, "req-0")] == ["absent"]

    later = datetime(2013, 1, 16, 15, tzinfo=UTC)
    write(logs, [record(1, later), record(2, later, bento_tag=None)])
    new_day = read_day(logs, date(2013, 1, 16))
    assert new_day is not None and new_day.quarantined.height == 0
    new_pin = store.write_partition("prediction_log", "2013-01-16", new_day.frame)

    table = pl.read_delta(str(delta / "prediction_log"))
    assert dict(table.schema) == {**LOG_SCHEMA, PARTITION_COLUMN: pl.String()}  # bento_tag appended
    assert sorted(table.select("request_id", PARTITION_COLUMN, "bento_tag").rows()) == [
        ("req-0", DAY.isoformat(), None),
        ("req-1", "2013-01-16", BENTO),
        ("req-2", "2013-01-16", None),
    ]
    pinned = store.read([old_pin, new_pin])  # both pins still verify; the old day reads null
    assert pinned.filter(pl.col("request_id") == "req-0")["bento_tag"].to_list() == [None]
    assert store.read([old_pin]).columns == [*old_day.frame.drop("bento_tag").columns, PARTITION_COLUMN]
    # rewriting the same lines publishes nothing new, though the column is last in the table
    assert store.write_partition("prediction_log", "2013-01-16", new_day.frame, unless_same_as=new_pin).reused

    found = {f.data["request_id"]: f.data for f in find_request_in_table(delta, "req-1")}
    assert found["req-1"]["bento_tag"] == BENTO and found["req-1"]["model_version"] == "3"
    assert [f.data["bento_tag"] for f in find_request_in_table(delta, "req-0")] == [None]


def _without_snapshot(record: LogRecord) -> str:
    """``record``'s line as the service wrote it before lines named their snapshot (no keys at all)."""
    line = json.loads(to_json_line(record))
    for key in (*SNAPSHOT_COLUMNS, "stale"):
        del line[key]
    return json.dumps(line, separators=(",", ":")) + "\n"


def test_a_line_written_before_the_snapshot_keys_existed_reads_as_null(tmp_path: Path) -> None:
    folder = tmp_path / DAY.isoformat()
    folder.mkdir()
    (folder / "old.jsonl").write_text(_without_snapshot(record(0)))
    write(tmp_path, [record(1), record(2, stale=True)], stem="new")
    day = read_day(tmp_path, DAY)
    assert day is not None and day.quarantined.height == 0
    assert day.frame.schema == pl.Schema(LOG_SCHEMA)
    rows = {r["request_id"]: r for r in day.frame.iter_rows(named=True)}
    assert [rows["req-0"][k] for k in (*SNAPSHOT_COLUMNS, "stale")] == [None] * 4
    assert rows["req-1"]["stale"] is False and rows["req-2"]["stale"] is True
    assert rows["req-2"]["online_snapshot_hash"] == SNAPSHOT.content_hash


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("stale", "yes", "stale: expected Boolean, got str"),
        ("online_snapshot_day", "15/01/2013", "online_snapshot_day: not an ISO date"),
        (
            "online_snapshot_written_at",
            "2013-01-15T05:00:00",
            "online_snapshot_written_at: a datetime without offset",
        ),
    ],
)
def test_a_bad_snapshot_value_is_quarantined(tmp_path: Path, key: str, value: Any, reason: str) -> None:
    line = json.loads(to_json_line(record(0)))
    line[key] = value
    folder = tmp_path / DAY.isoformat()
    folder.mkdir()
    (folder / "bad.jsonl").write_text(json.dumps(line) + "\n")
    day = read_day(tmp_path, DAY)
    assert day is not None and day.frame.height == 0
    assert day.quarantined[QUARANTINE_REASON].to_list()[0].startswith(reason)


def test_a_day_published_before_the_snapshot_columns_and_a_day_after_share_the_table(tmp_path: Path) -> None:
    """Delta merges the new columns in: the old day reads null, the new day its snapshot, and the
    published-rows fallback of ``mlp lineage`` returns the snapshot where there is one."""
    from ml_platform.lib.storage import PARTITION_COLUMN, DeltaPartitionStore
    from ml_platform.lineage.sources import find_request_in_table

    logs, delta = tmp_path / "log", tmp_path / "delta"
    store = DeltaPartitionStore(delta)
    (logs / DAY.isoformat()).mkdir(parents=True)
    (logs / DAY.isoformat() / "old.jsonl").write_text(_without_snapshot(record(0)))
    old_day = read_day(logs, DAY)
    assert old_day is not None
    new_columns = [*SNAPSHOT_COLUMNS, "stale"]
    store.write_partition("prediction_log", DAY.isoformat(), old_day.frame.drop(new_columns))
    later = datetime(2013, 1, 16, 15, tzinfo=UTC)
    write(logs, [record(1, later, stale=True)])
    new_day = read_day(logs, date(2013, 1, 16))
    assert new_day is not None and new_day.quarantined.height == 0
    pin = store.write_partition("prediction_log", "2013-01-16", new_day.frame)
    table = pl.read_delta(str(delta / "prediction_log"))
    assert dict(table.schema) == {**LOG_SCHEMA, PARTITION_COLUMN: pl.String()}
    assert sorted(table.select("request_id", "online_snapshot_hash", "stale").rows()) == [
        ("req-0", None, None),
        ("req-1", SNAPSHOT.content_hash, True),
    ]
    assert store.write_partition("prediction_log", "2013-01-16", new_day.frame, unless_same_as=pin).reused
    (found,) = find_request_in_table(delta, "req-1")
    assert found.data["online_snapshot_day"] == "2013-01-15"
    assert found.data["online_snapshot_hash"] == SNAPSHOT.content_hash
    assert found.data["online_snapshot_written_at"] == SNAPSHOT.written_at.isoformat()
    assert found.data["stale"] is True
    (old,) = find_request_in_table(delta, "req-0")
    assert [old.data[k] for k in new_columns] == [None] * 4


def test_the_asset_counts_stale_predictions_and_predictions_per_snapshot(tmp_path: Path) -> None:
    """What ``prediction_log[D]`` records of a day read with old and new lines."""
    from ml_platform.defs.serving.prediction_log import _by_snapshot

    folder = tmp_path / DAY.isoformat()
    folder.mkdir()
    (folder / "old.jsonl").write_text(_without_snapshot(record(0)))
    write(tmp_path, [record(1), record(2, stale=True), record(3, stale=True)], stem="new")
    day = read_day(tmp_path, DAY)
    assert day is not None
    assert int(day.frame["stale"].sum()) == 2
    assert _by_snapshot(day.frame) == {f"{DAY}@{SNAPSHOT.content_hash[:12]}": 3, "unknown": 1}
