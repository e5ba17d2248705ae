"""The export's cursor: the storage id of the last exported Dagster event, per target.

One JSON file (``<storage>/openlineage/cursor.json``) holds the cursor of every target the export
has sent to (``file:<path>``, ``http:<url>``), so switching the transport starts the new target from
the beginning instead of skipping what it never received. It is rewritten atomically (temp file,
fsync, rename) only after a batch was emitted, under an exclusive lock that serializes exports (the
sensor and ``mlp openlineage export``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_platform.lib.files import write_atomic

FORMAT = 1


class CursorError(RuntimeError):
    """The cursor file cannot be read or written; the message names the file."""


class ExportBusy(RuntimeError):
    """Another export holds the lock."""


def read_cursor(path: Path, target: str) -> int:
    """The storage id after which ``target`` has not been sent anything (0: from the beginning)."""
    data = _read(path)
    entry = data.get("targets", {}).get(target)
    if entry is None:
        return 0
    value = entry.get("after_storage_id") if isinstance(entry, dict) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise CursorError(f"{path}: targets[{target!r}].after_storage_id is {value!r}, not a storage id")
    return value


def write_cursor(path: Path, target: str, after_storage_id: int, events: int) -> None:
    """Record that ``target`` got everything up to ``after_storage_id`` (atomic rename)."""
    data = _read(path)
    targets = data.setdefault("targets", {})
    previous = targets.get(target) if isinstance(targets.get(target), dict) else {}
    targets[target] = {
        "after_storage_id": after_storage_id,
        "updated_at": datetime.now(UTC).isoformat(),
        "events": int(previous.get("events", 0)) + events,
    }
    data["format"] = FORMAT
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise CursorError(f"cannot write the OpenLineage cursor {path}: {exc}") from exc


@contextlib.contextmanager
def locked(path: Path, timeout_s: float) -> Iterator[None]:
    """Hold the export lock ``path``; :class:`ExportBusy` after ``timeout_s`` of waiting."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as exc:
        raise CursorError(f"cannot open the OpenLineage export lock {path}: {exc}") from exc
    with handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ExportBusy(
                        f"another OpenLineage export holds {path} (waited {timeout_s:g} s); it exports"
                        " what is new, try again when it is done"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CursorError(f"cannot read the OpenLineage cursor {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CursorError(
            f"{path}: not JSON ({exc}); fix or remove it (removing re-exports everything)"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("targets", {}), dict):
        raise CursorError(f"{path}: not an OpenLineage cursor file (no 'targets' object)")
    return data
