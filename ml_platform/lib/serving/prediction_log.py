"""The online prediction log: one JSON line per served prediction, appended to daily files.

Layout: ``<prediction_log_dir>/<UTC date>/<host>-<pid>.jsonl``. The date is the UTC day the line
was logged; ``<host>-<pid>`` keeps the files of concurrent workers and pods apart (each file has
one writer, so lines never interleave). The ``prediction_log`` asset turns a day's folder into a
Delta partition; it reads every ``*.jsonl`` of the folder.

A line (keys always present; ``null`` where a value is unknown)::

    {"logged_at": "2013-01-15T15:45:00.123456+00:00",   # when the prediction was made (UTC)
     "request_id": "4b0f...", "endpoint": "predict", "index": 0,   # index: position in a batch
     "model_name": "delay_model", "model_version": "3",
     "latency_ms": 1.87,           # request received -> prediction ready (the handler's view)
     "request": {"carrier": "B6", "flight": 725, "origin": "JFK", "dest": "BQN",
                 "scheduled_departure": "2013-01-15T15:45:00+00:00", "distance": 1576.0},
     "features": {...},            # the row the model scored: every online_features column
     "prediction": {"predicted_arr_delay": 12.3, "delay_probability": 0.41}}

Datetimes are ISO 8601 with offset, dates ISO; a non-finite float is written as null.

Writing never delays or fails a request: the handler only appends records to a buffer (the
feature row is converted to JSON later, in the writer); a background thread writes the buffer
every ``flush_seconds``, or as soon as it holds ``flush_lines`` records, and :meth:`close` writes
what is left (the service calls it on shutdown). A write that fails is reported to ``on_error``
with the records it lost (the service counts them in ``mlp_request_errors_total{kind=
"PredictionLogError"}`` and prints the error to stderr); the buffer then moves on.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One prediction to log. ``features`` is the scored batch frame, ``row`` this prediction's row."""

    logged_at: datetime
    request_id: str
    endpoint: str
    index: int
    model_name: str
    model_version: str
    latency_ms: float
    request: Mapping[str, Any]
    features: pl.DataFrame
    row: int
    predicted_arr_delay: float
    delay_probability: float

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of the line."""
        return {
            "logged_at": self.logged_at,
            "request_id": self.request_id,
            "endpoint": self.endpoint,
            "index": self.index,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "latency_ms": self.latency_ms,
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
        """The file of ``day`` this writer appends to."""
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
                by_file.setdefault(self.path_for(record.logged_at.date()), []).append(record)
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
