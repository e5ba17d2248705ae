"""Profiling and drift benchmark: ml_platform's profiles and drift scores against plain whylogs and evidently.

Data (seeded numpy, not timed): a reference frame and a "current" frame of ``--rows`` rows each (default
1,000,000), 10 columns as a polars DataFrame: ``num_0``..``num_7`` Float64 (normal; ``num_7`` has 2%
nulls) and two String categoricals, ``carrier`` (16 values) and ``route`` (200 values, long-tailed).
The current frame has a real shift in two columns: ``num_1`` (mean +0.5 sd, sd x1.2) and
``carrier`` (its mix moves toward three carriers); the other eight are drawn like the reference.

Modes (each repeats ``--repeats`` times; the report gives best and median; ml_platform and the whylogs
modes interleave, evidently runs its repeats afterwards in its own subprocess):

* ``ml_platform``: ``profiles.profile_frame`` of the reference and of the current frame, then
  ``drift.score_drift`` of the two views with ``DriftPolicy(features=<all 10 columns>)``. A model's
  reference profile is normally the merge of stored daily profiles, so a day costs one profile and
  one scoring: *profile + drift* is ``profile_frame(current)`` + ``score_drift``. Profiling both
  frames is reported too. Extras: ``serialize`` of the current view, and rebuilding a reference from
  7 stored profiles (``deserialize`` x7 + ``merge``).
* ``whylogs_plain``: ``why.log(current.to_pandas()).view()`` with whylogs' default schema, the
  plain approach (the pandas conversion is done before timing and reported apart). It gives a
  profile, no drift scores.
* ``whylogs_plain_drift``: whylogs' own drift, ``whylogs.viz.drift.column_drift_algorithms.
  calculate_drift_scores`` (KS for numbers, chi-square for frequent items) of the plain current
  view against the plain reference view. ``whylogs/viz/__init__.py`` imports IPython (for its
  notebook visualizer) and the stack has none; the import error is recorded, then the module is
  loaded past that ``__init__`` (the drift algorithms themselves do not use IPython).
* ``evidently``: evidently's ``DataDriftPreset`` (``Report.run``) on the same rows as pandas, in a
  subprocess of a separate venv (``--evidently-python``, default ``/tmp/evvenv/bin/python``; the
  project venv is never changed). Only ``Report.run`` is timed. ``--evidently-install-check`` also
  runs ``pip install --dry-run evidently -c constraints.txt`` with the project venv and records what
  it would install or change.

Every mode gets an untimed warm-up call first: the first call in a process pays whylogs' import
(about 1-2 s), which is measured apart, in fresh interpreters (``import_costs``) and as this
process's first ``profile_frame`` call on 1,000 rows. Timings are wall seconds (``perf_counter``)
and process CPU seconds (``process_time``, all threads). whylogs' usage telemetry is switched off
(``WHYLOGS_NO_ANALYTICS``), and evidently's (``DO_NOT_TRACK``).

Usage::

    .venv/bin/python benchmarks/profile_drift.py [--rows 1000000] [--repeats 3] [--skip-evidently]
        [--evidently-python /tmp/evvenv/bin/python] [--evidently-install-check]
        [--out benchmarks/results/profile_drift-<date>.json]

The evidently venv (outside the project)::

    python3.11 -m venv /tmp/evvenv
    /tmp/evvenv/bin/python -m pip install polars pandas numpy evidently -c constraints.txt
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from datetime import UTC, date, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from common import (
    REPO,
    code_digest,
    cpu_model,
    end_of_run,
    git,
    imported_package_dir,
    loadavg,
    log,
    write_report,
)

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")  # no usage-stats thread posting to whylogs.com

NUMERIC = tuple(f"num_{i}" for i in range(8))
CATEGORICAL = ("carrier", "route")
COLUMNS = (*NUMERIC, *CATEGORICAL)
NULL_COLUMN, NULL_SHARE = "num_7", 0.02
SHIFTED = ("num_1", "carrier")
DAY = date(2013, 3, 4)
DEFAULT_EVIDENTLY_PYTHON = "/tmp/evvenv/bin/python"


# --------------------------------------------------------------------------------------------------
# Helpers: machine, timings
# --------------------------------------------------------------------------------------------------


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    monitoring = "ml_platform/lib/monitoring"
    return {
        "git_head": git("rev-parse", "HEAD"),
        "git_head_subject": git("log", "-1", "--format=%s"),
        # the library under test may be uncommitted ("??"): then the commit alone does not pin it
        "monitoring_git_status": git("status", "--porcelain", "--", monitoring).splitlines(),
        "tree_dirty_files": [
            line for line in git("status", "--porcelain", "--", "ml_platform").splitlines() if line.strip()
        ],
        "code_package": str(imported_package_dir()),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        **{
            p: package_version(p)
            for p in ("whylogs", "whylogs-sketching", "polars", "numpy", "pandas", "pyarrow", "scipy")
        },
    }


def files_digest(paths: list[Path]) -> str:
    """Digest of the modules under test (``code_digest`` covers the whole package others edit)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall seconds and this process's CPU seconds (all threads)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def stats(values: list[float]) -> dict[str, float]:
    return {
        "best": round(min(values), 4),
        "median": round(statistics.median(values), 4),
        "runs": [round(v, 4) for v in values],
    }


def summarize(runs: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    """Best and median wall and CPU seconds of each timing ``key`` over ``runs``."""
    return {
        key: {
            "wall_s": stats([r[key]["wall_s"] for r in runs]),
            "cpu_s": stats([r[key]["cpu_s"] for r in runs]),
        }
        for key in keys
    }


def record(wall: float, cpu: float) -> dict[str, float]:
    return {"wall_s": round(wall, 4), "cpu_s": round(cpu, 4)}


def added(*parts: dict[str, float]) -> dict[str, float]:
    return record(sum(p["wall_s"] for p in parts), sum(p["cpu_s"] for p in parts))


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def make_frames(rows: int, seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """The reference and the current frame (polars), and a description of the data."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    carriers = np.array([f"C{i:02d}" for i in range(16)], dtype=object)
    routes = np.array([f"R{i:03d}-{(i * 7) % 97:02d}" for i in range(200)], dtype=object)
    carrier_p = rng.dirichlet(np.full(16, 5.0))
    route_p = 1.0 / np.arange(1, 201) ** 0.8  # long tail: a few busy routes, many small ones
    route_p /= route_p.sum()
    # the current carrier mix: 30% of the flights move to three carriers
    shifted_p = 0.7 * carrier_p
    shifted_p[[2, 5, 11]] += 0.1
    means = rng.uniform(-5, 50, size=len(NUMERIC))
    sds = rng.uniform(0.5, 20, size=len(NUMERIC))

    def frame(current: bool) -> pl.DataFrame:
        data: dict[str, Any] = {}
        for i, name in enumerate(NUMERIC):
            mean, sd = means[i], sds[i]
            if current and name == "num_1":
                mean, sd = mean + 0.5 * sd, sd * 1.2
            values = rng.normal(mean, sd, size=rows)
            data[name] = pl.Series(name, values, dtype=pl.Float64)
        nulls = rng.random(rows) < NULL_SHARE
        data[NULL_COLUMN] = data[NULL_COLUMN].scatter(np.flatnonzero(nulls), None)
        data["carrier"] = pl.Series(
            "carrier", carriers[rng.choice(16, size=rows, p=shifted_p if current else carrier_p)], pl.String
        )
        data["route"] = pl.Series("route", routes[rng.choice(200, size=rows, p=route_p)], pl.String)
        return pl.DataFrame(data)

    reference, current = frame(False), frame(True)
    info = {
        "rows": rows,
        "columns": len(COLUMNS),
        "schema": {k: str(v) for k, v in reference.schema.items()},
        "seed": seed,
        "null_column": NULL_COLUMN,
        "null_share": NULL_SHARE,
        "reference_nulls": reference[NULL_COLUMN].null_count(),
        "current_nulls": current[NULL_COLUMN].null_count(),
        "shifted_columns": {
            "num_1": "mean +0.5 sd, sd x1.2",
            "carrier": "30% of the mix moved to C02, C05, C11 (+10 points each)",
        },
        "categories": {"carrier": 16, "route": 200},
        "estimated_mib": {
            "reference": round(reference.estimated_size() / 2**20, 1),
            "current": round(current.estimated_size() / 2**20, 1),
        },
    }
    return reference, current, info


# --------------------------------------------------------------------------------------------------
# Import costs (fresh interpreters)
# --------------------------------------------------------------------------------------------------

_IMPORT_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import numpy, polars  # the platform's process has these already
t1 = time.perf_counter()
import pandas
t2 = time.perf_counter()
import whylogs, whylogs.core, whylogs.core.preprocessing, whylogs.core.resolvers, whylogs_sketching
import whylogs.core.metrics.metrics, whylogs.core.view.dataset_profile_view
t3 = time.perf_counter()
import ml_platform.lib.monitoring.profiles, ml_platform.lib.monitoring.drift
t4 = time.perf_counter()
print(json.dumps({"numpy_polars_s": t1 - t0, "pandas_s": t2 - t1, "whylogs_s": t3 - t2,
                  "ml_platform_monitoring_s": t4 - t3}))
"""


def import_costs(repeats: int) -> dict[str, Any]:
    """Seconds importing pandas and whylogs (what the first profile call pays) in fresh interpreters."""
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            env={**os.environ},
        )
        if proc.returncode != 0:
            return {"error": proc.stderr.strip()[-2000:]}
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out: dict[str, Any] = {k: stats([r[k] for r in runs]) for k in runs[0]}
    out["pandas_plus_whylogs_s"] = stats([r["pandas_s"] + r["whylogs_s"] for r in runs])
    out["note"] = (
        "fresh interpreter each; numpy and polars imported first (the platform loads them anyway);"
        " whylogs imports pandas, so a process without pandas pays pandas_plus_whylogs_s"
    )
    return out


# --------------------------------------------------------------------------------------------------
# ml_platform
# --------------------------------------------------------------------------------------------------


def first_call(reference: Any) -> dict[str, Any]:
    """This process's first ``profile_frame`` call (1,000 rows): it imports whylogs."""
    cold = "pandas" not in sys.modules and "whylogs" not in sys.modules
    from ml_platform.lib.monitoring import profiles

    _, wall, cpu = timed(lambda: profiles.profile_frame(reference.head(1000), DAY))
    _, wall2, cpu2 = timed(lambda: profiles.profile_frame(reference.head(1000), DAY))
    return {
        "process_was_cold": cold,
        "first_call_1000_rows": record(wall, cpu),
        "second_call_1000_rows": record(wall2, cpu2),
    }


def ml_platform_run(reference: Any, current: Any) -> tuple[dict[str, Any], Any, Any, list[Any]]:
    from ml_platform.lib.monitoring import drift, profiles

    policy = drift.DriftPolicy(features=COLUMNS)
    rec: dict[str, Any] = {"loadavg_before": loadavg()}
    ref_view, w, c = timed(lambda: profiles.profile_frame(reference, DAY))
    rec["profile_reference"] = record(w, c)
    cur_view, w, c = timed(lambda: profiles.profile_frame(current, DAY))
    rec["profile_current"] = record(w, c)
    results, w, c = timed(lambda: drift.score_drift(ref_view, cur_view, policy))
    rec["drift"] = record(w, c)
    rec["profile_and_drift"] = added(rec["profile_current"], rec["drift"])
    rec["both_profiles_and_drift"] = added(rec["profile_reference"], rec["profile_current"], rec["drift"])
    blob, w, c = timed(lambda: profiles.serialize(cur_view))
    rec["serialize_current"] = record(w, c)
    rec["serialized_bytes"] = len(blob)
    stored = [profiles.serialize(ref_view)] * 7
    _, w, c = timed(lambda: profiles.merge([profiles.deserialize(b) for b in stored]))
    rec["reference_from_7_stored"] = record(w, c)
    rec["loadavg_after"] = loadavg()
    return rec, ref_view, cur_view, results


ML_KEYS = [
    "profile_reference",
    "profile_current",
    "drift",
    "profile_and_drift",
    "both_profiles_and_drift",
    "serialize_current",
    "reference_from_7_stored",
]


def ml_platform_checks(
    reference: Any, current: Any, ref_view: Any, cur_view: Any, results: list[Any]
) -> dict:
    """What the profiles hold and what the drift scoring found (it must flag the two shifted columns)."""
    from ml_platform.lib.monitoring import profiles

    verdicts = {r.feature: r.severity for r in results}
    flagged = sorted(f for f, s in verdicts.items() if s != "ok")
    return {
        "metrics_per_column": {
            c: sorted(cur_view.get_column(c).get_metric_names()) for c in ("num_0", "route")
        },
        "drift": [r.to_dict() for r in results],
        "flagged": flagged,
        "flags_exactly_the_shifted_columns": flagged == sorted(SHIFTED),
        "current_rows_num_7": profiles.row_count(cur_view, NULL_COLUMN),
        "current_nulls_num_7": profiles.null_count(cur_view, NULL_COLUMN),
        "current_nulls_num_7_true": current[NULL_COLUMN].null_count(),
        "current_mean_num_1": profiles.moments(cur_view, "num_1")[0],
        "current_mean_num_1_true": current["num_1"].mean(),
        "route_counts_exact": profiles.category_counts(cur_view, "route")
        == dict(current["route"].value_counts().iter_rows()),
        "carrier_counts_exact": profiles.category_counts(ref_view, "carrier")
        == dict(reference["carrier"].value_counts().iter_rows()),
    }


def breakdown(current: Any, current_pd: Any, repeats: int) -> dict[str, Any]:
    """Profiling time by column kind: ours (``columns=``) best/median of ``repeats``; plain why.log once."""
    import whylogs as why

    from ml_platform.lib.monitoring import profiles

    out: dict[str, Any] = {}
    for kind, names in (("numeric", NUMERIC), ("categorical", CATEGORICAL)):
        kinds = dict.fromkeys(names, kind)
        runs = [
            timed(lambda kinds=kinds: profiles.profile_frame(current, DAY, kinds))[1:] for _ in range(repeats)
        ]
        _, wall, cpu = timed(lambda names=names: why.log(current_pd[list(names)]).view())
        out[kind] = {
            "columns": list(names),
            "ml_platform_profile_frame_wall_s": stats([w for w, _ in runs]),
            "why_log_one_run": record(wall, cpu),
        }
    out["note"] = (
        "current frame only; why.log runs once per kind (it is the slow side). Plain whylogs on a float"
        " column calls np.isinf per value in a pandas apply; on an object column it runs six per-value"
        " type masks, then cardinality and frequent items on every string"
    )
    return out


# --------------------------------------------------------------------------------------------------
# plain whylogs, and whylogs' own drift
# --------------------------------------------------------------------------------------------------


def import_whylogs_drift() -> tuple[Callable[..., Any] | None, dict[str, Any]]:
    """``calculate_drift_scores``, importing it the documented way or, failing that, past ``whylogs.viz``."""
    info: dict[str, Any] = {"module": "whylogs.viz.drift.column_drift_algorithms"}
    try:
        from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

        info["import"] = "ok"
        return calculate_drift_scores, info
    except Exception as exc:
        info["import"] = "failed"
        info["import_error"] = f"{type(exc).__name__}: {exc}"
    # whylogs/viz/__init__.py imports IPython for the notebook visualizer only; a bare package
    # module with the same __path__ lets the drift submodules load without running that __init__
    import whylogs

    for name in [m for m in sys.modules if m == "whylogs.viz" or m.startswith("whylogs.viz.")]:
        del sys.modules[name]
    stub = types.ModuleType("whylogs.viz")
    stub.__path__ = [str(Path(whylogs.__file__).parent / "viz")]
    sys.modules["whylogs.viz"] = stub
    try:
        from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

        info["bypass"] = "ok: loaded with a bare whylogs.viz package module (its __init__ not run)"
        return calculate_drift_scores, info
    except Exception as exc:
        info["bypass"] = f"failed: {type(exc).__name__}: {exc}"
        return None, info


def plain_run(
    reference_pd: Any, current_pd: Any, drift_scores: Callable[..., Any] | None
) -> tuple[dict[str, Any], Any, Any, Any]:
    import whylogs as why

    rec: dict[str, Any] = {"loadavg_before": loadavg()}
    ref_view, w, c = timed(lambda: why.log(reference_pd).view())
    rec["why_log_reference"] = record(w, c)
    cur_view, w, c = timed(lambda: why.log(current_pd).view())
    rec["why_log_current"] = record(w, c)
    scores = None
    if drift_scores is not None:
        scores, w, c = timed(
            lambda: drift_scores(target_view=cur_view, reference_view=ref_view, with_thresholds=True)
        )
        rec["whylogs_drift"] = record(w, c)
        rec["why_log_current_and_drift"] = added(rec["why_log_current"], rec["whylogs_drift"])
        rec["both_logs_and_drift"] = added(
            rec["why_log_reference"], rec["why_log_current"], rec["whylogs_drift"]
        )
    rec["loadavg_after"] = loadavg()
    return rec, ref_view, cur_view, scores


def plain_checks(cur_view: Any, scores: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "metrics_per_column": {
            c: sorted(cur_view.get_column(c).get_metric_names()) for c in ("num_0", "route")
        },
        "counts_num_7": cur_view.get_column(NULL_COLUMN).get_metric("counts").to_summary_dict(),
    }
    if scores is not None:
        out["whylogs_drift"] = scores
        # whylogs' default thresholds: p < 0.05 DRIFT, < 0.15 POSSIBLE_DRIFT
        out["whylogs_drift_flagged"] = sorted(
            c for c, s in scores.items() if s and s["drift_category"] == "DRIFT"
        )
    return out


# --------------------------------------------------------------------------------------------------
# evidently (a separate venv, a subprocess)
# --------------------------------------------------------------------------------------------------

_EVIDENTLY_WORKER = r"""
import json, os, statistics, sys, time
from importlib.metadata import version
t = time.perf_counter()
import evidently
from evidently import Report
from evidently.presets import DataDriftPreset
import_s = time.perf_counter() - t
import pandas as pd
ref_path, cur_path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.perf_counter()
reference, current = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
read_s = time.perf_counter() - t

def run():
    return Report([DataDriftPreset()]).run(reference_data=reference, current_data=current)

def timed():
    w, c = time.perf_counter(), time.process_time()
    snapshot = run()
    return snapshot, time.perf_counter() - w, time.process_time() - c

_, warm_w, warm_c = timed()
runs = []
for r in range(repeats):
    before = [round(x, 2) for x in os.getloadavg()]
    snapshot, w, c = timed()
    runs.append({"wall_s": w, "cpu_s": c, "loadavg_before": before,
                 "loadavg_after": [round(x, 2) for x in os.getloadavg()]})
metrics = []
for m in snapshot.dict()["metrics"]:
    value = m["value"]
    value = {k: float(v) for k, v in value.items()} if isinstance(value, dict) else float(value)
    metrics.append({"metric": m["metric_name"], "value": value})
print(json.dumps({
    "versions": {p: version(p) for p in ("evidently", "pandas", "numpy", "scipy", "pyarrow")},
    "python": sys.version.split()[0],
    "import_s": import_s, "read_parquet_s": read_s,
    "dtypes": {k: str(v) for k, v in reference.dtypes.items()},
    "warmup": {"wall_s": warm_w, "cpu_s": warm_c},
    "runs": runs, "metrics": metrics,
}))
"""


def evidently_install_check() -> dict[str, Any]:
    """What ``pip install --dry-run evidently -c constraints.txt`` would do to the project venv."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "evidently",
        "-c",
        str(REPO / "constraints.txt"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    would = next((line for line in proc.stdout.splitlines() if line.startswith("Would install")), "")
    packages = would.removeprefix("Would install").split()
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line
    }
    installed_now = {p: package_version(p.rsplit("-", 1)[0]) for p in packages}
    changes = {p: v for p, v in installed_now.items() if v is not None}  # an installed package would move
    return {
        "command": " ".join(["python", *cmd[1:]]),
        "returncode": proc.returncode,
        "would_install": packages,
        "would_change_installed": changes,
        "would_install_pinned": sorted(
            p for p in packages if p.rsplit("-", 1)[0].lower().replace("_", "-") in pinned
        ),
        "clean": proc.returncode == 0 and not changes,
        "stderr_tail": proc.stderr.strip()[-1500:] if proc.returncode else "",
    }


def run_evidently(reference: Any, current: Any, args: argparse.Namespace) -> dict[str, Any]:
    python = Path(args.evidently_python)
    if not python.exists():
        return {"skipped": f"no evidently venv at {python} (see the module docstring to create one)"}
    with tempfile.TemporaryDirectory(prefix="mlp-profile-drift-") as tmp:
        ref_path, cur_path = Path(tmp) / "reference.parquet", Path(tmp) / "current.parquet"
        reference.write_parquet(ref_path)
        current.write_parquet(cur_path)
        worker = Path(tmp) / "evidently_worker.py"
        worker.write_text(_EVIDENTLY_WORKER)
        env = {**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
        t = time.perf_counter()
        proc = subprocess.run(
            [str(python), str(worker), str(ref_path), str(cur_path), str(args.repeats)],
            capture_output=True,
            text=True,
            timeout=args.evidently_timeout,
            env=env,
        )
        subprocess_s = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-3000:], "python": str(python)}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["python_path"] = str(python)
    out["subprocess_s"] = round(subprocess_s, 2)
    out["report_run"] = {
        "wall_s": stats([r["wall_s"] for r in out["runs"]]),
        "cpu_s": stats([r["cpu_s"] for r in out["runs"]]),
    }
    drifts = [m for m in out["metrics"] if m["metric"].startswith("ValueDrift(")]
    flagged = []
    for m in drifts:  # "ValueDrift(column=num_1,method=Wasserstein distance (normed),threshold=0.1)"
        spec = m["metric"][len("ValueDrift(") : -1]
        column = spec.split(",", 1)[0].removeprefix("column=")
        threshold = float(spec.rsplit("threshold=", 1)[1])
        # distances drift at or above the threshold, p-value tests below it
        is_pvalue = "p_value" in spec
        if (m["value"] < threshold) if is_pvalue else (m["value"] >= threshold):
            flagged.append(column)
    out["flagged"] = sorted(flagged)
    return out


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def table(report: dict[str, Any]) -> str:
    ml = report["ml_platform"]["summary"]
    rows: list[tuple[str, dict[str, Any] | None]] = [
        ("ml_platform: profile_frame(current)", ml["profile_current"]),
        ("ml_platform: score_drift (10 features)", ml["drift"]),
        ("ml_platform: profile + drift (per day)", ml["profile_and_drift"]),
        ("ml_platform: both profiles + drift", ml["both_profiles_and_drift"]),
        ("ml_platform: serialize(current)", ml["serialize_current"]),
        ("ml_platform: reference from 7 stored", ml["reference_from_7_stored"]),
    ]
    plain = report.get("whylogs_plain", {}).get("summary", {})
    rows += [
        ("whylogs plain: why.log(current)", plain.get("why_log_current")),
        ("whylogs plain: calculate_drift_scores", plain.get("whylogs_drift")),
        ("whylogs plain: why.log(current) + drift", plain.get("why_log_current_and_drift")),
        ("whylogs plain: both logs + drift", plain.get("both_logs_and_drift")),
    ]
    ev = report.get("evidently", {})
    rows.append(("evidently: DataDriftPreset Report.run", ev.get("report_run")))
    lines = [f"{'mode':44} {'best s':>9} {'median s':>9} {'cpu s (med)':>12}"]
    for name, entry in rows:
        if entry is None:
            lines.append(f"{name:44} {'-':>9} {'-':>9} {'-':>12}")
        else:
            lines.append(
                f"{name:44} {entry['wall_s']['best']:9.3f} {entry['wall_s']['median']:9.3f}"
                f" {entry['cpu_s']['median']:12.3f}"
            )
    lines.append("")
    for name, value in report["ratios"].items():
        lines.append(f"{name:60} {'-' if value is None else format(value, '.2f')}")
    return "\n".join(lines)


def ratios(report: dict[str, Any]) -> dict[str, float | None]:
    def med(section: str, key: str) -> float | None:
        entry = report.get(section, {}).get("summary", {}).get(key)
        return entry["wall_s"]["median"] if entry else None

    def best(section: str, key: str) -> float | None:
        entry = report.get(section, {}).get("summary", {}).get(key)
        return entry["wall_s"]["best"] if entry else None

    ours, ours_best = med("ml_platform", "profile_and_drift"), best("ml_platform", "profile_and_drift")
    ev = report.get("evidently", {}).get("report_run")
    return {
        "why_log(current) / ml_platform profile+drift (median)": ratio(
            med("whylogs_plain", "why_log_current"), ours
        ),
        "why_log(current) / ml_platform profile+drift (best)": ratio(
            best("whylogs_plain", "why_log_current"), ours_best
        ),
        "why_log(current) / ml_platform profile_frame(current) (median)": ratio(
            med("whylogs_plain", "why_log_current"), med("ml_platform", "profile_current")
        ),
        "why_log(current)+whylogs drift / ml_platform profile+drift (median)": ratio(
            med("whylogs_plain", "why_log_current_and_drift"), ours
        ),
        "whylogs both logs+drift / ml_platform both profiles+drift (median)": ratio(
            med("whylogs_plain", "both_logs_and_drift"), med("ml_platform", "both_profiles_and_drift")
        ),
        "evidently Report.run / ml_platform profile+drift (median)": ratio(
            ev["wall_s"]["median"] if ev else None, ours
        ),
        "evidently Report.run / ml_platform both profiles+drift (median)": ratio(
            ev["wall_s"]["median"] if ev else None, med("ml_platform", "both_profiles_and_drift")
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of each frame")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each mode (after a warm-up)")
    parser.add_argument("--seed", type=int, default=0, help="numpy seed of the data")
    parser.add_argument("--out", help="results JSON (default benchmarks/results/profile_drift-<date>.json)")
    parser.add_argument("--skip-evidently", action="store_true", help="do not run the evidently mode")
    parser.add_argument(
        "--evidently-python", default=DEFAULT_EVIDENTLY_PYTHON, help="python of a venv that has evidently"
    )
    parser.add_argument(
        "--evidently-install-check",
        action="store_true",
        help="record what `pip install --dry-run evidently -c constraints.txt` would do to this venv",
    )
    parser.add_argument(
        "--evidently-timeout", type=int, default=900, help="seconds for the evidently subprocess"
    )
    args = parser.parse_args()

    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "benchmark": "profile_drift",
        "date": started.date().isoformat(),
        "started_utc": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "loadavg_start": loadavg(),
    }
    digest_start = code_digest(imported_package_dir())
    monitoring_dir = imported_package_dir() / "lib" / "monitoring"
    monitoring_start = code_digest(monitoring_dir)
    under_test = [monitoring_dir / "profiles.py", monitoring_dir / "drift.py"]
    under_test_start = files_digest(under_test)
    env = environment()
    env["code_digest"] = digest_start
    env["monitoring_code_digest"] = monitoring_start
    env["profiles_drift_digest"] = under_test_start
    env["profiles_drift_mtime_utc"] = {
        p.name: datetime.fromtimestamp(p.stat().st_mtime, UTC).isoformat(timespec="seconds")
        for p in under_test
    }
    report["environment"] = env
    log(f"profile/drift benchmark: {args.rows:,} rows x {len(COLUMNS)} columns, {args.repeats} repeats")
    log(json.dumps(env))

    frames, wall, _ = timed(lambda: make_frames(args.rows, args.seed))
    reference, current, data = frames
    data["make_frames_s"] = round(wall, 2)
    report["data"] = data
    log(f"data: {data['estimated_mib']} MiB, made in {wall:.1f}s")

    # in this process nothing has imported whylogs (or pandas) yet: the first call pays it
    report["first_call"] = first_call(reference)
    log(f"first profile_frame call (1,000 rows, imports whylogs): {report['first_call']}")
    report["import_costs"] = import_costs(args.repeats)
    log(f"import costs (fresh interpreters): {json.dumps(report['import_costs'])}")

    # pandas for the plain modes, converted once, outside the timings
    (reference_pd, current_pd), wall, cpu = timed(lambda: (reference.to_pandas(), current.to_pandas()))
    report["to_pandas_both"] = record(wall, cpu)
    drift_scores, drift_import = import_whylogs_drift()
    log(f"whylogs drift import: {drift_import}")

    # warm-ups (untimed): ours on the full frames, plain why.log on 50,000 rows
    ml_platform_run(reference, current)
    plain_run(reference_pd.head(50_000), current_pd.head(50_000), drift_scores)

    ml_runs: list[dict[str, Any]] = []
    plain_runs: list[dict[str, Any]] = []
    for r in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        rec, ref_view, cur_view, results = ml_platform_run(reference, current)
        ml_runs.append(rec)
        log(
            f"ml_platform #{r}: profile(current) {rec['profile_current']['wall_s']:.3f}s,"
            f" drift {rec['drift']['wall_s']:.3f}s, profile+drift {rec['profile_and_drift']['wall_s']:.3f}s,"
            f" both+drift {rec['both_profiles_and_drift']['wall_s']:.3f}s"
        )
        prec, _plain_ref, plain_cur, scores = plain_run(reference_pd, current_pd, drift_scores)
        plain_runs.append(prec)
        log(
            f"whylogs plain #{r}: why.log(current) {prec['why_log_current']['wall_s']:.3f}s"
            + (
                f", calculate_drift_scores {prec['whylogs_drift']['wall_s']:.3f}s"
                if "whylogs_drift" in prec
                else ""
            )
        )

    report["breakdown_by_kind"] = breakdown(current, current_pd, args.repeats)
    log(f"breakdown by column kind: {json.dumps(report['breakdown_by_kind'])}")

    report["ml_platform"] = {
        "includes": (
            "per column: counts (n, null, nan, inf); Float64: KLL distribution (k=1024, mean/stddev);"
            " String: frequent items (lg_max_k=10), fed as value counts. No types, no cardinality."
            " Drift: psi, ks, mean_shift, missing (numeric); psi, tvd, missing (categorical); severities."
        ),
        "runs": ml_runs,
        "summary": summarize(ml_runs, ML_KEYS),
        "checks": ml_platform_checks(reference, current, ref_view, cur_view, results),
    }
    plain_keys = ["why_log_reference", "why_log_current"]
    if drift_scores is not None:
        plain_keys += ["whylogs_drift", "why_log_current_and_drift", "both_logs_and_drift"]
    report["whylogs_plain"] = {
        "includes": (
            "why.log(pandas) with the default schema: per column counts and types; float: cardinality"
            " (HLL) + KLL distribution (k=256); object strings: cardinality, distribution, frequent items"
            " (default lg_max_k). No drift scores."
        ),
        "whylogs_drift_import": drift_import,
        "whylogs_drift_includes": (
            "calculate_drift_scores defaults: KS p-value on the KLL sketches (numeric),"
            " chi-square p-value on frequent items (categorical); no thresholds, no effect sizes"
        ),
        "runs": plain_runs,
        "summary": summarize(plain_runs, plain_keys),
        "checks": plain_checks(plain_cur, scores),
    }
    if drift_scores is not None:
        # whylogs' drift algorithms on ml_platform's own profiles: KS reads the KLL sketches; the
        # chi-square of categories also wants a cardinality (HLL) metric, which these profiles lack
        on_ours, wall, cpu = timed(
            lambda: drift_scores(target_view=cur_view, reference_view=ref_view, with_thresholds=True)
        )
        report["whylogs_drift_on_ml_platform_profiles"] = {
            **record(wall, cpu),
            "no_score_for": sorted(c for c, s in on_ours.items() if s is None),
            "why_no_score": (
                "whylogs.viz.utils.frequent_items_calculations.get_frequent_stats returns None without"
                " a 'cardinality' metric; ml_platform profiles have counts + frequent_items only"
            ),
            "scores": on_ours,
        }

    if args.skip_evidently:
        report["evidently"] = {"skipped": "--skip-evidently"}
    else:
        if args.evidently_install_check:
            log("pip install --dry-run evidently -c constraints.txt ...")
            report["evidently_install_check"] = evidently_install_check()
            log(json.dumps(report["evidently_install_check"]))
        log(f"evidently DataDriftPreset in {args.evidently_python} ...")
        report["evidently"] = run_evidently(reference, current, args)
        if "report_run" in report["evidently"]:
            report["evidently"]["includes"] = (
                "DataDriftPreset on pandas: per column drift (defaults for >1000 rows: Wasserstein"
                " distance (normed) for numeric, Jensen-Shannon for categorical) and the drifted-columns"
                " count; computed from the rows, every run"
            )
        log(f"evidently: {json.dumps({k: v for k, v in report['evidently'].items() if k != 'metrics'})}")

    report["ratios"] = ratios(report)
    end_of_run(report, digest_start)
    # the library under test is imported once, at the first call: what matters is whether the
    # monitoring package changed before that (others edit the rest of the tree meanwhile)
    report["monitoring_code_digest_end"] = code_digest(monitoring_dir)
    report["monitoring_changed_during_run"] = report["monitoring_code_digest_end"] != monitoring_start
    report["profiles_drift_digest_end"] = files_digest(under_test)
    report["profiles_drift_changed_during_run"] = report["profiles_drift_digest_end"] != under_test_start
    if report["code_changed_during_run"]:
        changed = "including" if report["profiles_drift_changed_during_run"] else "not"
        log(f"WARNING: ml_platform changed during the run ({changed} profiles.py, drift.py)")
    report["goal"] = {
        "target_s": 2.0,
        "profile_and_drift_median_s": report["ml_platform"]["summary"]["profile_and_drift"]["wall_s"][
            "median"
        ],
        "both_profiles_and_drift_median_s": report["ml_platform"]["summary"]["both_profiles_and_drift"][
            "wall_s"
        ]["median"],
    }
    report["goal"]["met"] = report["goal"]["profile_and_drift_median_s"] < 2.0
    report["summary"] = table(report)
    log("\n" + report["summary"])
    out = Path(args.out or REPO / "benchmarks" / "results" / f"profile_drift-{report['date']}.json")
    write_report(report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
