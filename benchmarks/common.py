"""Helpers the benchmark scripts share: logging, git, the code digest, step timings."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(message, flush=True)


def git(*argv: str) -> str:
    """Output of a git command in the repository, or ``"unavailable"``."""
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), *argv], check=True, capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unavailable"


def imported_package_dir() -> Path:
    """The ``ml_platform`` package this process imports (the working tree or a snapshot)."""
    import ml_platform

    return Path(ml_platform.__file__).resolve().parent


def code_digest(package_dir: Path) -> str:
    """Digest of the ``ml_platform`` sources a process runs: the guard against a tree edited mid-run."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(str(path.relative_to(package_dir)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def step_durations(instance: Any, run_ids: list[str], wall: float) -> dict[str, float]:
    """Seconds in each step (summed over runs) from the event log, the rest of ``wall`` outside any
    step, and how many event records the runs wrote."""
    steps: dict[str, float] = {}
    events = 0
    for run_id in run_ids:
        started: dict[str, float] = {}
        for record in instance.all_logs(run_id):
            events += 1
            event = record.dagster_event
            if event is None or event.step_key is None:
                continue
            if event.event_type_value == "STEP_START":
                started[event.step_key] = record.timestamp
            elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                took = record.timestamp - started.pop(event.step_key, record.timestamp)
                steps[event.step_key] = steps.get(event.step_key, 0.0) + took
    out: dict[str, float] = {k: round(v, 3) for k, v in steps.items()}
    out["outside_steps"] = round(wall - sum(steps.values()), 3)
    out["event_records"] = events
    return out
