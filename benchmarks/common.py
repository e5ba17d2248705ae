"""Helpers the benchmark scripts share: logging, git, the machine, the code digest, step timings and
the end of a report."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
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


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(snapshot: bool, packages: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """What a result was measured on: git HEAD and local changes, the imported code, the machine,
    and the versions of ``packages`` (plus ``extra`` facts)."""
    from importlib.metadata import version

    status = git("status", "--porcelain", "--untracked-files=all", "--", "ml_platform")
    return {
        "git_head": git("rev-parse", "HEAD"),
        "git_head_subject": git("log", "-1", "--format=%s"),
        # the measured code is HEAD plus these (the snapshot copies the working tree)
        "tree_changed_files": [line for line in status.splitlines() if line.strip()],
        "code_package": str(imported_package_dir()),
        "snapshot": snapshot,
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        **{p: version(p) for p in packages},
        **extra,
    }


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


def end_of_run(report: dict[str, Any], digest_start: str) -> bool:
    """Record the load and the code digest at the end; True when ``ml_platform`` changed meanwhile."""
    report["loadavg_end"] = loadavg()
    digest_end = code_digest(imported_package_dir())
    changed = digest_end != digest_start
    report["code_digest_end"] = digest_end
    report["code_changed_during_run"] = changed
    return changed


def write_report(report: dict[str, Any], out: Path) -> None:
    """The results JSON (``out``'s folder made if needed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    log(f"results: {out}")


def finish_report(
    report: dict[str, Any],
    digest_start: str,
    out: Path,
    summary: Callable[[dict[str, Any]], str],
    *,
    changed_warning: str = "WARNING: ml_platform changed during the run",
    remove: Path | None = None,
) -> Path:
    """The end of a benchmark's ``main``: the end-of-run load and code digest (warning when the code
    changed), the summary (logged and stored), the results JSON, and ``remove`` (the workdir) deleted."""
    if end_of_run(report, digest_start):
        log(changed_warning)
    report["summary"] = summary(report)
    log("\n" + report["summary"])
    write_report(report, out)
    if remove is not None:
        shutil.rmtree(remove, ignore_errors=True)
    return out


class Phases:
    """Seconds spent in wrapped functions, by phase name (and each one's calls and last result)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.returned: dict[str, Any] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, timed under ``name``."""

        @functools.wraps(fn)
        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                result = fn(*a, **kw)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
                self.calls[name] = self.calls.get(name, 0) + 1
            self.returned[name] = result
            return result

        return timed

    def rounded(self) -> dict[str, float]:
        """Seconds per phase, to the millisecond."""
        return {k: round(v, 3) for k, v in self.seconds.items()}
