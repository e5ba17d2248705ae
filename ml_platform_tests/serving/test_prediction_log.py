"""PredictionLog: a JSON line per record, a file per flight day, flushed by size, time and close."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from ml_platform.lib.online.snapshot import SnapshotRef
from ml_platform.lib.serving.prediction_log import LogRecord, PredictionLog, flight_day, to_json_line

BENTO = "delay_service:v3-0123456789abcdef"
#: The online snapshot that answered (the 15th's, written at 05:31 UTC that morning).
SNAPSHOT = SnapshotRef(
    day=date(2013, 1, 15),
    aggregates_as_of=datetime(2013, 1, 15, 5, tzinfo=UTC),
    content_hash="9f2c" + "0" * 60,
    written_at=datetime(2013, 1, 15, 5, 31, 2, 100000, tzinfo=UTC),
)
FEATURES = pl.DataFrame(
    {
        "carrier": ["B6", "UA"],
        "sched_hour": [10, 20],
        "temp": [37.9, float("nan")],
        "wind_gust": [None, 12.5],
        "weather_observed_at": [datetime(2013, 1, 15, 15, tzinfo=UTC), None],
        "flight_date": [date(2013, 1, 15), date(2013, 1, 15)],
    }
)


def record(
    i: int,
    logged_at: datetime = datetime(2013, 1, 15, 23, 59, tzinfo=UTC),
    departure: datetime = datetime(2013, 1, 15, 15, 45, tzinfo=UTC),
    bento_tag: str | None = BENTO,
    snapshot: SnapshotRef | None = SNAPSHOT,
    stale: bool | None = False,
) -> LogRecord:
    return LogRecord(
        logged_at=logged_at,
        request_id=f"req-{i}",
        endpoint="predict_batch",
        index=i,
        model_name="delay_model",
        model_version="3",
        bento_tag=bento_tag,
        latency_ms=1.5,
        request={"carrier": "B6", "scheduled_departure": departure},
        features=FEATURES,
        row=i % 2,
        predicted_arr_delay=12.25,
        delay_probability=0.4,
        snapshot=snapshot,
        stale=stale,
    )


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_line_holds_request_features_prediction_version_bento_snapshot_latency_and_id() -> None:
    line = to_json_line(record(1))
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {
        "logged_at": "2013-01-15T23:59:00+00:00",
        "request_id": "req-1",
        "endpoint": "predict_batch",
        "index": 1,
        "model_name": "delay_model",
        "model_version": "3",
        "bento_tag": BENTO,
        "latency_ms": 1.5,
        "online_snapshot_day": "2013-01-15",
        "online_snapshot_hash": SNAPSHOT.content_hash,
        "online_snapshot_written_at": "2013-01-15T05:31:02.100000+00:00",
        "stale": False,
        "request": {"carrier": "B6", "scheduled_departure": "2013-01-15T15:45:00+00:00"},
        "features": {
            "carrier": "UA",
            "sched_hour": 20,
            "temp": None,  # NaN is not JSON
            "wind_gust": 12.5,
            "weather_observed_at": None,
            "flight_date": "2013-01-15",
        },
        "prediction": {"predicted_arr_delay": 12.25, "delay_probability": 0.4},
    }


def test_the_bento_tag_follows_the_model_version_and_is_null_outside_a_bento() -> None:
    keys = list(json.loads(to_json_line(record(0))))
    assert keys[keys.index("model_version") + 1] == "bento_tag"
    assert json.loads(to_json_line(record(0, bento_tag=None)))["bento_tag"] is None


def test_the_snapshot_and_stale_flag_are_written_and_null_when_unknown() -> None:
    assert json.loads(to_json_line(record(0, stale=True)))["stale"] is True
    unknown = json.loads(to_json_line(record(0, snapshot=None, stale=None)))
    assert [unknown[k] for k in ("online_snapshot_day", "online_snapshot_hash", "stale")] == [None] * 3
    assert unknown["online_snapshot_written_at"] is None


def test_records_go_to_the_file_of_their_flights_local_day(tmp_path: Path) -> None:
    """The folder is the flight's day at America/New_York, not the day (UTC or local) it was logged."""
    log = PredictionLog(tmp_path, file_stem="host-1", flush_seconds=3600)
    in_2026 = datetime(2026, 5, 1, 12, tzinfo=UTC)  # the demo serves 2013 flights in 2026
    log.append(
        [
            record(0),
            # 03:30 UTC on the 16th is 22:30 on the 15th in New York: a flight of the 15th
            record(1, in_2026, departure=datetime(2013, 1, 16, 3, 30, tzinfo=UTC)),
            record(2, in_2026, departure=datetime(2013, 1, 16, 15, tzinfo=UTC)),
            # summer time: 03:59 UTC is 23:59 EDT on the 9th, 04:00 UTC is midnight of the 10th
            record(3, in_2026, departure=datetime(2013, 7, 10, 3, 59, tzinfo=UTC)),
            record(4, in_2026, departure=datetime(2013, 7, 10, 4, 0, tzinfo=UTC)),
        ]
    )
    assert log.flush() == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "2013-01-15",
        "2013-01-16",
        "2013-07-09",
        "2013-07-10",
    ]
    assert [r["request_id"] for r in lines(tmp_path / "2013-01-15" / "host-1.jsonl")] == ["req-0", "req-1"]
    assert [r["request_id"] for r in lines(tmp_path / "2013-01-16" / "host-1.jsonl")] == ["req-2"]
    assert [r["request_id"] for r in lines(tmp_path / "2013-07-09" / "host-1.jsonl")] == ["req-3"]
    assert [r["request_id"] for r in lines(tmp_path / "2013-07-10" / "host-1.jsonl")] == ["req-4"]
    log.append([record(5, datetime(2013, 1, 17, tzinfo=UTC))])  # logged two days later: same file
    log.close()
    assert [r["request_id"] for r in lines(tmp_path / "2013-01-15" / "host-1.jsonl")] == [
        "req-0",
        "req-1",
        "req-5",
    ]
    assert log.written == 6 and log.lost == 0


def test_the_flight_day_is_the_local_scheduled_date() -> None:
    assert flight_day(datetime(2013, 3, 10, 4, 59, tzinfo=UTC)) == date(2013, 3, 9)  # 23:59 EST
    assert flight_day(datetime(2013, 3, 10, 5, 0, tzinfo=UTC)) == date(2013, 3, 10)
    assert flight_day(datetime(2013, 3, 10, 5, 0)) == date(2013, 3, 10)  # naive: UTC
    as_text = record(0, departure=datetime(2013, 1, 16, 3, 30, tzinfo=UTC))
    assert as_text.flight_day() == date(2013, 1, 15)


def test_the_writer_flushes_when_full_and_on_time(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, file_stem="w", flush_lines=5, flush_seconds=3600)
    log.start()
    try:
        log.append([record(i) for i in range(5)])  # full: written without waiting for the hour
        path = tmp_path / "2013-01-15" / "w.jsonl"
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(lines(path)) == 5
    finally:
        log.close()
    timed = PredictionLog(tmp_path / "timed", file_stem="w", flush_lines=1000, flush_seconds=0.05)
    timed.start()
    try:
        timed.append([record(0)])
        deadline = time.monotonic() + 5
        while timed.written == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert timed.written == 1
    finally:
        timed.close()


def test_a_failed_write_is_reported_and_never_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the folder should be")
    reported: list[tuple[int, str]] = []
    log = PredictionLog(
        blocker, file_stem="w", on_error=lambda lost, exc: reported.append((len(lost), type(exc).__name__))
    )
    log.append([record(0), record(1)])
    assert log.flush() == 0
    assert reported == [(2, "FileExistsError")] or reported == [(2, "NotADirectoryError")]
    assert log.lost == 2
    # a reporter that raises does not stop the writer either
    log.on_error = lambda lost, exc: (_ for _ in ()).throw(RuntimeError("reporter broke"))
    log.append([record(2)])
    log.close()
    assert log.lost == 3


def test_default_file_stem_is_host_and_pid(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    assert log.file_stem.endswith(f"-{os.getpid()}")
    assert log.path_for(date(2013, 1, 15)) == tmp_path / "2013-01-15" / f"{log.file_stem}.jsonl"
