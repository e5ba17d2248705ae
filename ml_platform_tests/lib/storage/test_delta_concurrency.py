"""Concurrent writers of different partitions of one table (two runs of a UI backfill)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import polars as pl

from ml_platform.lib.storage import DeltaPartitionStore, PartitionVersion


def _frame(partition: str) -> pl.DataFrame:
    day = int(partition[-2:])
    return pl.DataFrame({"day": [day] * 50, "value": [float(day * 100 + i) for i in range(50)]})


def _writer(root: str, partitions: list[str], queue: mp.Queue) -> None:  # type: ignore[type-arg]
    store = DeltaPartitionStore(Path(root))
    for partition in partitions:
        queue.put(store.write_partition("t", partition, _frame(partition)).to_metadata())


def test_two_processes_writing_disjoint_partitions_lose_nothing(tmp_path):
    store = DeltaPartitionStore(tmp_path)
    store.write_partition("t", "2013-01-01", _frame("2013-01-01"))  # the table exists before the race
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    first = [f"2013-01-{d:02d}" for d in range(2, 22, 2)]
    second = [f"2013-01-{d:02d}" for d in range(3, 23, 2)]
    workers = [ctx.Process(target=_writer, args=(str(tmp_path), p, queue)) for p in (first, second)]
    for worker in workers:
        worker.start()
    records = [PartitionVersion.from_metadata(queue.get(timeout=120)) for _ in first + second]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0

    # every commit got its own table version, and every partition reads back exactly as written
    assert len({r.table_version for r in records}) == len(records)
    for record in records:
        frame = store.read([record])
        assert frame.drop("partition_date").equals(_frame(record.partition))
    latest = pl.scan_delta(store.table_uri("t")).collect()
    assert latest["partition_date"].n_unique() == 1 + len(first) + len(second)
    assert latest.height == 50 * (1 + len(first) + len(second))
