"""The online prediction log: one JSON line per served prediction, appended to daily files.

Layout: ``<prediction_log_dir>/<flight date>/<host>-<pid>.jsonl``. The date is the *flight's* day,
not the day the line was logged: the scheduled departure's local date at ``America/New_York``, the
``flight_date`` of ``flight_features`` (:func:`flight_day`). Monitoring judges the online
predictions of day D against the actuals of D's flights (``live_performance``), whenever the
predictions were made (the demo replays 2013 while the wall clock says 2026). One batch may hold
flights of several days: each line goes to its own day's file. ``<host>-<pid>`` keeps the files of
concurrent workers and pods apart (each file has one writer, so lines never interleave). The
``prediction_log`` asset turns a day's folder into a Delta partition (:func:`read_day`); it reads
every ``*.jsonl`` of the folder.

A line (every key always written; ``null`` where a value is unknown)::

    {"logged_at": "2013-01-15T15:45:00.123456+00:00",   # when the prediction was made (UTC)
     "request_id": "4b0f...", "endpoint": "predict", "index": 0,   # index: position in a batch
     "model_name": "delay_model", "model_version": "3",
     "bento_tag": "delay_service:v3-0123456789ab",   # the Bento that served it (null: not a Bento)
     "latency_ms": 1.87,           # request received -> prediction ready (the handler's view)
     "online_snapshot_day": "2013-01-15",              # the online snapshot that answered: its day,
     "online_snapshot_hash": "9f2c...",                # content hash (= its data version)
     "online_snapshot_written_at": "2013-01-15T05:31:02.1+00:00",   # and when the store got it
     "stale": false,               # the departure is beyond the feature-freshness budget
     "request": {"carrier": "B6", "flight": 725, "origin": "JFK", "dest": "BQN",
                 "scheduled_departure": "2013-01-15T15:45:00+00:00", "distance": 1576.0},
     "features": {...},            # the row the model scored: every online_features column
     "prediction": {"predicted_arr_delay": 12.3, "delay_probability": 0.41}}

Datetimes are ISO 8601 with offset, dates ISO; a non-finite float is written as null.

``bento_tag`` is the ``name:version`` of the Bento whose server logged the line, as BentoML told the
service when it started: a Bento served by tag (``bentoml serve <tag>``, as ``mlp serve`` and the
deploy supervisor run it) or from its folder (a containerized Bento). It is ``null`` when the
service runs from source (``bentoml serve ml_platform.serving.service:DelayService``). It leads an
audit from a request id to the Bento, then to its model version, run and data (``mlp lineage
<request id>``, docs/lineage.md). Lines written before the key existed lack it: they are read with
a null ``bento_tag``, not quarantined.

``online_snapshot_*`` name the ``online_features`` snapshot the features came from, as the store
reported it in the lookup's own transaction: its day (the materialization's partition), its
content hash (which that materialization records as ``online/content_hash`` and publishes as its
data version) and when it was written to the store (two writes of the same content differ only
there). ``mlp lineage <request id>`` follows them to that materialization, never to "the latest".
``stale`` is the answer's flag: the departure lies more than the feature-freshness budget after the
snapshot's cutoff (:mod:`ml_platform.lib.online.freshness`). Lines written before these keys existed
lack them and read null, like ``bento_tag``.

Writing never delays or fails a request: the handler only appends records to a buffer (the
feature row is converted to JSON later, in the writer); a background thread writes the buffer
every ``flush_seconds``, or as soon as it holds ``flush_lines`` records, and :meth:`close` writes
what is left (the service calls it on shutdown). A write that fails is reported to ``on_error``
with the records it lost (the service counts them in ``mlp_request_errors_total{kind=
"PredictionLogError"}`` and prints the error to stderr); the buffer then moves on.

Reading a day (:func:`read_day`, no Dagster involved) takes each file up to its last complete line
at the moment it is read: a writer may be appending to it, and a half-written last line is left for
a later read (its bytes are reported as ``pending_bytes``, never parsed). Per file it records the
name, the bytes read, the lines and the sha256 of exactly those bytes, so an auditor can re-read
the same prefix of the file and check it. Each line is checked and flattened into one row of
:data:`LOG_SCHEMA`; a line that is not valid JSON, lacks a key (those added later excepted, see above),
carries a value of the wrong type or a flight of another day is *quarantined*
(:data:`QUARANTINE_SCHEMA`: file, line number, byte offset, reason and the raw line), never dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import polars as pl

from ml_platform.lib.features.transforms import LOCAL_TZ
from ml_platform.lib.online.features import FEATURE_SCHEMA, REQUEST_COLUMNS, REQUEST_SCHEMA
from ml_platform.lib.online.snapshot import SnapshotRef
from ml_platform.lib.training.data import INPUT_COLUMNS

_LOCAL_TZ: Final = ZoneInfo(LOCAL_TZ)


def flight_day(scheduled_departure: datetime) -> date:
    """The flight's day: the scheduled departure's local date (``flight_date`` of ``flight_features``).

    A naive datetime is taken as UTC (requests carry aware UTC departures).
    """
    if scheduled_departure.tzinfo is None:
        scheduled_departure = scheduled_departure.replace(tzinfo=UTC)
    return scheduled_departure.astimezone(_LOCAL_TZ).date()


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One prediction to log. ``features`` is the scored batch frame, ``row`` this prediction's row."""

    logged_at: datetime
    request_id: str
    endpoint: str
    index: int
    model_name: str
    model_version: str
    #: The Bento (``name:version``) that served the prediction; None outside a Bento.
    bento_tag: str | None
    latency_ms: float
    request: Mapping[str, Any]
    features: pl.DataFrame
    row: int
    predicted_arr_delay: float
    delay_probability: float
    #: The online snapshot that answered; None where unknown (written as nulls).
    snapshot: SnapshotRef | None = None
    #: The departure is beyond the feature-freshness budget; None where unknown.
    stale: bool | None = None

    def flight_day(self) -> date:
        """The day whose file the line goes to: its flight's day (:func:`flight_day`).

        A request without a usable departure (never the service's: it validates them) goes to the
        UTC day it was logged; reading that day quarantines the line.
        """
        departure = self.request.get("scheduled_departure")
        if isinstance(departure, str):
            try:
                departure = datetime.fromisoformat(departure)
            except ValueError:
                departure = None
        if isinstance(departure, datetime):
            return flight_day(departure)
        return self.logged_at.astimezone(UTC).date()

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of the line."""
        snapshot = self.snapshot
        return {
            "logged_at": self.logged_at,
            "request_id": self.request_id,
            "endpoint": self.endpoint,
            "index": self.index,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "bento_tag": self.bento_tag,
            "latency_ms": self.latency_ms,
            "online_snapshot_day": None if snapshot is None else snapshot.day,
            "online_snapshot_hash": None if snapshot is None else snapshot.content_hash,
            "online_snapshot_written_at": None if snapshot is None else snapshot.written_at,
            "stale": self.stale,
            "request": dict(self.request),
            "features": self.features.row(self.row, named=True),
            "prediction": {
                "predicted_arr_delay": self.predicted_arr_delay,
                "delay_probability": self.delay_probability,
            },
        }


def to_json_line(record: LogRecord) -> str:
    """``record`` as one line of JSON (with its newline)."""
    return json.dumps(_jsonable(record.as_dict()), separators=(",", ":"), allow_nan=False) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


def default_file_stem() -> str:
    """``<host>-<pid>``: one writer per file."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{os.getpid()}"


ErrorHandler = Callable[[list[LogRecord], BaseException], None]


def _print_error(lost: list[LogRecord], exc: BaseException) -> None:
    print(f"prediction log: {len(lost)} line(s) lost: {type(exc).__name__}: {exc}", file=sys.stderr)


class PredictionLog:
    """A buffered, append-only writer of :class:`LogRecord` lines (thread-safe)."""

    def __init__(
        self,
        folder: Path,
        *,
        file_stem: str | None = None,
        flush_lines: int = 256,
        flush_seconds: float = 1.0,
        on_error: ErrorHandler = _print_error,
    ) -> None:
        self.folder = Path(folder)
        self.file_stem = file_stem or default_file_stem()
        self.flush_lines = max(1, flush_lines)
        self.flush_seconds = flush_seconds
        self.on_error = on_error
        self.written = 0
        self.lost = 0
        self._buffer: list[LogRecord] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def path_for(self, day: date) -> Path:
        """The file of flight day ``day`` this writer appends to."""
        return self.folder / day.isoformat() / f"{self.file_stem}.jsonl"

    def start(self) -> None:
        """Start the background writer (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()

    def append(self, records: Iterable[LogRecord]) -> None:
        """Buffer ``records``; never raises for I/O (nothing is written here)."""
        with self._lock:
            self._buffer.extend(records)
            full = len(self._buffer) >= self.flush_lines
        if full:
            self._wake.set()

    def flush(self) -> int:
        """Write the buffered records now; return how many lines were written."""
        with self._lock:
            records, self._buffer = self._buffer, []
        if not records:
            return 0
        with self._write_lock:
            by_file: dict[Path, list[LogRecord]] = {}
            for record in records:
                by_file.setdefault(self.path_for(record.flight_day()), []).append(record)
            written = 0
            for path, batch in by_file.items():
                try:
                    lines = "".join(to_json_line(record) for record in batch)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with path.open("a", encoding="utf-8") as handle:
                        handle.write(lines)
                    written += len(batch)
                except Exception as exc:
                    self.lost += len(batch)
                    try:
                        self.on_error(batch, exc)
                    except Exception as report:  # the reporter must not kill the writer
                        _print_error(batch, report)
            self.written += written
            return written

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        """Stop the writer and write what is left (idempotent)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()


# -- reading a day's folder -------------------------------------------------------------------------

#: Where each column of a log line comes from: the top level, the request, the features, the prediction.
TOP_SCHEMA: Final[dict[str, pl.DataType]] = {
    "logged_at": pl.Datetime("us", "UTC"),
    "request_id": pl.String(),
    "endpoint": pl.String(),
    "index": pl.Int64(),
    "model_name": pl.String(),
    "model_version": pl.String(),
    "bento_tag": pl.String(),
    "latency_ms": pl.Float64(),
    "online_snapshot_day": pl.Date(),
    "online_snapshot_hash": pl.String(),
    "online_snapshot_written_at": pl.Datetime("us", "UTC"),
    "stale": pl.Boolean(),
}
#: The keys naming the online snapshot that answered (what ``mlp lineage`` follows).
SNAPSHOT_COLUMNS: Final = ("online_snapshot_day", "online_snapshot_hash", "online_snapshot_written_at")
#: The model's inputs not already in the request, plus the feature row's day, weather time and cutoff.
FEATURE_LOG_COLUMNS: Final = (
    "flight_date",
    *(c for c in INPUT_COLUMNS if c not in REQUEST_COLUMNS),
    "weather_observed_at",
    "aggregates_as_of",
)
PREDICTION_COLUMNS: Final = ("predicted_arr_delay", "delay_probability")
#: Columns naming where a row was read from (not features: profiles leave them out).
SOURCE_COLUMNS: Final = ("source_file", "source_line")
#: One row per logged prediction: the ``prediction_log`` Delta table (partitioned by flight day).
LOG_SCHEMA: Final[dict[str, pl.DataType]] = {
    **TOP_SCHEMA,
    **REQUEST_SCHEMA,
    **{c: FEATURE_SCHEMA[c] for c in FEATURE_LOG_COLUMNS},
    **{c: pl.Float64() for c in PREDICTION_COLUMNS},
    "source_file": pl.String(),
    "source_line": pl.Int64(),
}
#: Columns of a log row that identify or describe the request or its server, not the flight (profiles
#: skip them).
NOT_PROFILED: Final = (
    "logged_at",
    "request_id",
    "endpoint",
    "index",
    "model_name",
    "bento_tag",
    *SNAPSHOT_COLUMNS,
    "stale",
    *SOURCE_COLUMNS,
)
#: The reason column of a quarantined line (the name validation's quarantine tables use).
QUARANTINE_REASON: Final = "_quarantine_reason"
#: One row per line that could not be read as a prediction: ``quarantine_prediction_log``.
QUARANTINE_SCHEMA: Final[dict[str, pl.DataType]] = {
    "source_file": pl.String(),
    "source_line": pl.Int64(),
    "byte_offset": pl.Int64(),
    QUARANTINE_REASON: pl.String(),
    "raw_line": pl.String(),
}
#: Top-level values that may be null (unknown); every other top-level, request and prediction value
#: is required. Feature values may be null (no recent weather, a key the online store did not know).
_NULLABLE_TOP: Final = frozenset({"latency_ms", "bento_tag", *SNAPSHOT_COLUMNS, "stale"})
#: Top-level keys added after the first lines were written: a line without one (an older log file)
#: reads as null there, and is not quarantined.
_OPTIONAL_TOP: Final = frozenset({"bento_tag", *SNAPSHOT_COLUMNS, "stale"})
#: Longest raw line kept in the quarantine (a runaway line is cut, its reason says so).
MAX_RAW_CHARS: Final = 65_536


class MalformedLine(ValueError):
    """A log line that cannot be read as one prediction (the message is the quarantine reason)."""


@dataclass(frozen=True)
class LogFileRead:
    """What was read of one log file: its complete lines at the time of reading."""

    #: The file's name in the day's folder (``<host>-<pid>.jsonl``).
    name: str
    #: Bytes read: the file up to and including its last newline.
    bytes_read: int
    #: Complete lines in those bytes (blank ones included).
    lines: int
    #: sha256 of exactly the bytes read (``head -c <bytes_read> <file> | sha256sum``).
    sha256: str
    #: Bytes after the last newline, left for a later read (a line being written).
    pending_bytes: int

    def to_metadata(self) -> dict[str, Any]:
        """The file's entry in the asset's ``lineage/source``."""
        return {
            "file": self.name,
            "bytes_read": self.bytes_read,
            "lines": self.lines,
            "sha256": self.sha256,
            "pending_bytes": self.pending_bytes,
        }


@dataclass(frozen=True)
class LogDay:
    """One flight day of the log, read and checked."""

    day: date
    folder: Path
    #: One row per valid line (:data:`LOG_SCHEMA`).
    frame: pl.DataFrame
    #: One row per malformed line (:data:`QUARANTINE_SCHEMA`).
    quarantined: pl.DataFrame
    files: list[LogFileRead] = field(default_factory=list)

    @property
    def lines(self) -> int:
        """Non-blank complete lines read: rows plus quarantined lines."""
        return self.frame.height + self.quarantined.height

    def reasons(self) -> dict[str, int]:
        """Quarantined lines by the first clause of their reason (``"not JSON"``, ``"request.flight"``)."""
        counts: dict[str, int] = {}
        for reason in self.quarantined[QUARANTINE_REASON].to_list():
            key = str(reason).split(":", 1)[0]
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items()))


def read_complete(path: Path) -> tuple[bytes, LogFileRead]:
    """The complete lines of ``path`` as they are now, and what was read.

    The size is taken once; bytes appended after it, and a last line without its newline yet,
    are not read (the next read of the day gets them).
    """
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        data = handle.read(size)
    end = data.rfind(b"\n") + 1
    complete = data[:end]
    return complete, LogFileRead(
        name=path.name,
        bytes_read=len(complete),
        lines=complete.count(b"\n"),
        sha256=hashlib.sha256(complete).hexdigest(),
        pending_bytes=len(data) - end,
    )


def read_day(folder: Path, day: date) -> LogDay | None:
    """Every complete line of ``<folder>/<day>/*.jsonl``, parsed, or None when there is none.

    None means nothing to publish: the folder is missing, holds no ``*.jsonl`` file, or its files
    hold no complete non-blank line yet. Files are read in name order.
    """
    where = Path(folder) / day.isoformat()
    if not where.is_dir():
        return None
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    files: list[LogFileRead] = []
    for path in sorted(p for p in where.glob("*.jsonl") if p.is_file()):
        data, read = read_complete(path)
        files.append(read)
        file_rows, file_bad = parse_lines(data, read.name, day)
        rows.extend(file_rows)
        bad.extend(file_bad)
    if not rows and not bad:
        return None
    return LogDay(
        day=day,
        folder=where,
        frame=pl.DataFrame(rows, schema=LOG_SCHEMA, orient="row")
        if rows
        else pl.DataFrame(schema=LOG_SCHEMA),
        quarantined=pl.DataFrame(bad, schema=QUARANTINE_SCHEMA, orient="row")
        if bad
        else pl.DataFrame(schema=QUARANTINE_SCHEMA),
        files=files,
    )


def parse_lines(
    data: bytes, source_file: str, day: date
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows (:data:`LOG_SCHEMA`) and quarantined lines (:data:`QUARANTINE_SCHEMA`) of ``data``.

    ``data`` holds complete lines (each ending with a newline); blank lines are skipped.
    """
    rows: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    offset = 0
    for number, raw in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"), 1):
        start, offset = offset, offset + len(raw) + 1
        if not raw.strip():
            continue
        try:
            row = parse_line(raw, day)
        except MalformedLine as exc:
            text = raw.decode("utf-8", errors="replace")
            bad.append(
                {
                    "source_file": source_file,
                    "source_line": number,
                    "byte_offset": start,
                    QUARANTINE_REASON: str(exc)
                    + (f" (line cut at {MAX_RAW_CHARS} characters)" if len(text) > MAX_RAW_CHARS else ""),
                    "raw_line": text[:MAX_RAW_CHARS],
                }
            )
            continue
        row["source_file"] = source_file
        row["source_line"] = number
        rows.append(row)
    return rows, bad


def parse_line(raw: bytes, day: date) -> dict[str, Any]:
    """One line as a flat row of :data:`LOG_SCHEMA` (without the source columns).

    A key of :data:`_OPTIONAL_TOP` may be absent (a line written before it existed): null.

    Raises:
        MalformedLine: not UTF-8 or not a JSON object; a key missing; a value of the wrong type or
            a required value null; a flight whose day is not ``day``.
    """
    try:
        line = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedLine(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise MalformedLine(f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(line, dict):
        raise MalformedLine(f"not JSON: a {type(line).__name__}, not an object")
    row: dict[str, Any] = {}
    for name, dtype in TOP_SCHEMA.items():
        if name in _OPTIONAL_TOP and name not in line:
            row[name] = None
            continue
        row[name] = _value(line, name, name, dtype, nullable=name in _NULLABLE_TOP)
    request = _section(line, "request")
    for name, dtype in REQUEST_SCHEMA.items():
        row[name] = _value(request, name, f"request.{name}", dtype, nullable=False)
    features = _section(line, "features")
    for name in FEATURE_LOG_COLUMNS:
        row[name] = _value(features, name, f"features.{name}", FEATURE_SCHEMA[name], nullable=True)
    prediction = _section(line, "prediction")
    for name in PREDICTION_COLUMNS:
        row[name] = _value(prediction, name, f"prediction.{name}", pl.Float64(), nullable=False)
    flown = flight_day(row["scheduled_departure"])
    if flown != day:
        raise MalformedLine(f"another day: a flight of {flown} in the folder of {day}")
    return row


def _section(line: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    if name not in line:
        raise MalformedLine(f"{name}: missing")
    value = line[name]
    if not isinstance(value, dict):
        raise MalformedLine(f"{name}: not an object ({type(value).__name__})")
    return value


def _value(section: Mapping[str, Any], name: str, where: str, dtype: pl.DataType, *, nullable: bool) -> Any:
    """``section[name]`` converted to ``dtype``'s Python value."""
    if name not in section:
        raise MalformedLine(f"{where}: missing")
    value = section[name]
    if value is None:
        if nullable:
            return None
        raise MalformedLine(f"{where}: null")
    if dtype == pl.String:
        if isinstance(value, str):
            return value
    elif dtype == pl.Int64:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif dtype == pl.Float64:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
            if math.isfinite(number):
                return number
    elif isinstance(dtype, pl.Datetime):
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise MalformedLine(f"{where}: not an ISO 8601 datetime ({value[:40]!r})") from None
            if moment.tzinfo is None:
                raise MalformedLine(f"{where}: a datetime without offset ({value[:40]!r})")
            return moment.astimezone(UTC)
    elif dtype == pl.Boolean:
        if isinstance(value, bool):
            return value
    elif dtype == pl.Date:
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise MalformedLine(f"{where}: not an ISO date ({value[:40]!r})") from None
    else:  # pragma: no cover - the schemas above use only these types
        raise TypeError(f"{where}: no conversion for {dtype}")
    raise MalformedLine(f"{where}: expected {dtype}, got {type(value).__name__} ({str(value)[:40]!r})")
