"""One contract, two backends: what every :class:`PartitionStore` must do for the assets.

The same tests run against the embedded Delta store (always) and the lakeFS store (only where a
lakeFS server is reachable: set ``LAKEFS_ENDPOINT``, ``LAKEFS_ACCESS_KEY_ID``,
``LAKEFS_SECRET_ACCESS_KEY`` and ``LAKEFS_STORAGE_NAMESPACE``; see docs/lakefs.md). Without them the
lakeFS cases are skipped and say which variables are missing: nothing is faked.

The lakeFS-only tests at the end check write-audit-publish: a run's writes stay on its branch
until :meth:`publish` merges them, a never-published run's pins are refused to other runs, and a
re-execution builds on its parent's branch.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from ml_platform.lib.hashing import content_hash
from ml_platform.lib.ingest.sources import NycFlights13Source
from ml_platform.lib.storage import (
    PARTITION_COLUMN,
    DeltaPartitionStore,
    PartitionStore,
    PartitionVersion,
    StorageError,
)
from ml_platform.lib.storage.lakefs import LakeFSPartitionStore, branch_for_run

TABLE = "raw_flights"
DAY1, DAY2 = "2013-01-01", "2013-01-02"
LAKEFS_VARIABLES = (
    "LAKEFS_ENDPOINT",
    "LAKEFS_ACCESS_KEY_ID",
    "LAKEFS_SECRET_ACCESS_KEY",
    "LAKEFS_STORAGE_NAMESPACE",
)

#: A store for one Dagster run id (the Delta store ignores it: it has no branches).
StoreFor = Callable[[str], PartitionStore]


def lakefs_skip_reason() -> str | None:
    """Why the lakeFS cases cannot run here, or None when they can."""
    missing = [name for name in LAKEFS_VARIABLES if not os.environ.get(name)]
    if missing:
        return (
            f"no lakeFS server configured: set {', '.join(missing)} to run the contract suite against"
            " a real lakeFS (docs/lakefs.md shows how, e.g. with `lakefs run --quickstart`)"
        )
    return None


@pytest.fixture(scope="module")
def lakefs_repository() -> Iterator[tuple[object, str]]:
    """A throwaway lakeFS repository, deleted afterwards: (client, repository id)."""
    reason = lakefs_skip_reason()
    if reason:
        pytest.skip(reason)
    import lakefs

    from ml_platform.lib.storage.lakefs import connect

    client = connect(
        os.environ["LAKEFS_ENDPOINT"],
        os.environ["LAKEFS_ACCESS_KEY_ID"],
        os.environ["LAKEFS_SECRET_ACCESS_KEY"],
    )
    name = f"mlp-contract-{uuid.uuid4().hex[:10]}"
    namespace = f"{os.environ['LAKEFS_STORAGE_NAMESPACE'].rstrip('/')}/{name}"
    repository = lakefs.Repository(name, client=client).create(
        storage_namespace=namespace, default_branch="main"
    )
    try:
        yield client, name
    finally:
        repository.delete()


@pytest.fixture(params=["delta", "lakefs"])
def store_for(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFor:
    if request.param == "delta":
        delta = DeltaPartitionStore(tmp_path / "delta")
        return lambda run_id: delta
    client, repository = request.getfixturevalue("lakefs_repository")
    # each test gets its own table prefix, so tests sharing the repository never see each other
    prefix = f"t{uuid.uuid4().hex[:8]}/"
    return lambda run_id: LakeFSPartitionStore(
        client,  # type: ignore[arg-type]
        repository,
        branch_for_run(run_id),
        prefix=prefix,
        commit_metadata={"dagster.run_id": run_id},
    )


@pytest.fixture
def store(store_for: StoreFor) -> PartitionStore:
    return store_for(f"run{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def days() -> dict[str, pl.DataFrame]:
    source = NycFlights13Source()
    return {p: source.read_day("flights", date.fromisoformat(p)).frame for p in (DAY1, DAY2)}


def stored(partition: str, df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.lit(partition, dtype=pl.String).alias(PARTITION_COLUMN))


# -- the contract ------------------------------------------------------------------------------


def test_write_then_read_round_trip(store: PartitionStore, days: dict[str, pl.DataFrame]) -> None:
    assert not store.exists(TABLE)
    pin = store.write_partition(TABLE, DAY1, days[DAY1])
    assert store.exists(TABLE)
    assert (pin.table, pin.partition, pin.row_count) == (TABLE, DAY1, 842)
    assert pin.content_hash == content_hash(stored(DAY1, days[DAY1]))
    assert pin.files and not pin.reused
    back = store.read([pin])
    assert back.columns == [*days[DAY1].columns, PARTITION_COLUMN]
    assert_frame_equal(back, stored(DAY1, days[DAY1]), check_row_order=False)
    assert content_hash(back) == pin.content_hash


def test_the_pin_is_backend_specific_and_names_the_data_version(
    store: PartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    pin = store.write_partition(TABLE, DAY1, days[DAY1])
    if store.backend == "delta":
        assert pin.table_version == 0 and pin.commit == ""
        assert pin.data_version == pin.content_hash
    else:
        assert pin.table_version is None and len(pin.commit) == 64
        assert pin.data_version == pin.commit  # the lakeFS commit id is the Dagster data version
        assert pin.commit[:12] in pin.where


def test_a_pinned_read_reproduces_the_inputs_after_a_rewrite(
    store: PartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    old = store.write_partition(TABLE, DAY1, days[DAY1])
    new = store.write_partition(TABLE, DAY1, days[DAY1].head(10))
    assert new.row_count == 10 and new.content_hash != old.content_hash
    assert new.data_version != old.data_version
    assert_frame_equal(store.read([old]), stored(DAY1, days[DAY1]), check_row_order=False)
    assert store.read([new]).height == 10


def test_a_write_touches_only_its_partition(store: PartitionStore, days: dict[str, pl.DataFrame]) -> None:
    one = store.write_partition(TABLE, DAY1, days[DAY1])
    two = store.write_partition(TABLE, DAY2, days[DAY2])
    store.write_partition(TABLE, DAY1, days[DAY1].head(5))
    assert_frame_equal(store.read([two]), stored(DAY2, days[DAY2]), check_row_order=False)
    both = store.read([one, two])
    assert dict(both.group_by(PARTITION_COLUMN).len().iter_rows()) == {DAY1: 842, DAY2: days[DAY2].height}


def test_identical_content_is_reused_not_rewritten(
    store: PartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    first = store.write_partition(TABLE, DAY1, days[DAY1])
    again = store.write_partition(TABLE, DAY1, days[DAY1].reverse(), unless_same_as=first)
    assert again.reused and again == first and again.data_version == first.data_version
    changed = store.write_partition(TABLE, DAY1, days[DAY1].head(3), unless_same_as=first)
    assert not changed.reused and changed.data_version != first.data_version


def test_the_metadata_form_reads_back_the_same_rows(
    store: PartitionStore, days: dict[str, pl.DataFrame]
) -> None:
    pin = store.write_partition(TABLE, DAY1, days[DAY1])
    recorded = PartitionVersion.from_metadata(pin.to_metadata())
    assert recorded == pin
    assert_frame_equal(store.read([recorded]), store.read([pin]))


def test_reads_verify_the_content_hash(store: PartitionStore, days: dict[str, pl.DataFrame]) -> None:
    pin = store.write_partition(TABLE, DAY1, days[DAY1])
    with pytest.raises(StorageError) as err:
        store.read([dataclasses.replace(pin, content_hash="0" * 64)])
    assert f"{TABLE}[{DAY1}]" in str(err.value) and "content hash" in str(err.value)


def test_rows_of_another_partition_are_refused(store: PartitionStore, days: dict[str, pl.DataFrame]) -> None:
    with pytest.raises(StorageError, match=rf"{TABLE}\[{DAY1}\]: 842 rows carry another"):
        store.write_partition(TABLE, DAY1, stored(DAY2, days[DAY1]))


def test_an_empty_partition_round_trips(store: PartitionStore, days: dict[str, pl.DataFrame]) -> None:
    store.write_partition(TABLE, DAY1, days[DAY1])
    empty = store.write_partition(TABLE, DAY1, days[DAY1].clear())
    assert empty.row_count == 0
    back = store.read([empty])
    assert back.height == 0 and content_hash(back) == empty.content_hash


def test_a_cache_reads_each_pin_once(store: PartitionStore, days: dict[str, pl.DataFrame]) -> None:
    pin = store.write_partition(TABLE, DAY1, days[DAY1])
    cache: dict[PartitionVersion, pl.DataFrame] = {}
    first = store.read([pin], cache)
    assert list(cache) == [pin]
    assert store.read([pin, pin], cache).equals(pl.concat([first, first]))


def test_a_pin_of_the_other_backend_is_refused(store: PartitionStore, days: dict[str, pl.DataFrame]) -> None:
    pin = store.write_partition(TABLE, DAY1, days[DAY1])
    foreign = (
        dataclasses.replace(pin, table_version=None, commit="c" * 64)
        if store.backend == "delta"
        else dataclasses.replace(pin, table_version=3, commit="")
    )
    with pytest.raises(StorageError, match=rf"{TABLE}\[{DAY1}\].*written by"):
        store.read([foreign])


def test_nothing_to_read_is_an_error(store: PartitionStore) -> None:
    with pytest.raises(StorageError, match="at least one"):
        store.read([])


# -- lakeFS only: write-audit-publish ----------------------------------------------------------


LakeFSFor = Callable[..., LakeFSPartitionStore]


@pytest.fixture
def lakefs_for(lakefs_repository: tuple[object, str]) -> LakeFSFor:
    client, repository = lakefs_repository
    prefix = f"t{uuid.uuid4().hex[:8]}/"

    def make(run_id: str, source: str = "main") -> LakeFSPartitionStore:
        return LakeFSPartitionStore(client, repository, branch_for_run(run_id), source=source, prefix=prefix)  # type: ignore[arg-type]

    return make


def _on_main(store: LakeFSPartitionStore, table: str) -> list[str]:
    return [o.path for o in store.repository.ref("main").objects(prefix=f"{store.prefix}{table}/")]


def test_lakefs_a_run_is_invisible_on_main_until_published(
    lakefs_for: LakeFSFor, days: dict[str, pl.DataFrame]
) -> None:
    run = lakefs_for("wap-ok")
    pin = run.write_partition(TABLE, DAY1, days[DAY1])
    assert _on_main(run, TABLE) == []  # written, audited on the branch, not yet published
    merged = run.publish("publish run wap-ok", {"dagster.run_id": "wap-ok"})
    assert merged
    assert _on_main(run, TABLE) == [f"{run.prefix}{TABLE}/{pin.files[0]}"]
    later = lakefs_for("reader")
    assert_frame_equal(later.read([pin]), stored(DAY1, days[DAY1]), check_row_order=False)


def test_lakefs_an_unpublished_run_is_refused_to_other_runs(
    lakefs_for: LakeFSFor, days: dict[str, pl.DataFrame]
) -> None:
    failed = lakefs_for("wap-failed")
    pin = failed.write_partition(TABLE, DAY1, days[DAY1])
    assert failed.read([pin]).height == 842  # its own run reads it
    other = lakefs_for("wap-other")
    with pytest.raises(StorageError, match="never published"):
        other.read([pin])
    assert _on_main(failed, TABLE) == []
    assert failed.discard()


def test_lakefs_a_reexecution_builds_on_its_parent_and_publishes_both(
    lakefs_for: LakeFSFor, days: dict[str, pl.DataFrame]
) -> None:
    parent = lakefs_for("wap-parent")
    first = parent.write_partition(TABLE, DAY1, days[DAY1])
    child = lakefs_for("wap-child", source=parent.branch)
    assert child.read([first]).height == 842
    second = child.write_partition(TABLE, DAY2, days[DAY2])
    child.publish("publish the re-execution")
    assert sorted(_on_main(child, TABLE)) == sorted(
        f"{child.prefix}{TABLE}/{p.files[0]}" for p in (first, second)
    )
    parent.discard()


def test_lakefs_two_runs_rewriting_one_partition_conflict_on_publish(
    lakefs_for: LakeFSFor, days: dict[str, pl.DataFrame]
) -> None:
    a, b = lakefs_for("wap-a"), lakefs_for("wap-b")
    a.write_partition(TABLE, DAY1, days[DAY1])
    b.write_partition(TABLE, DAY1, days[DAY1].head(7))
    a.publish("a")
    with pytest.raises(StorageError, match="publishing"):
        b.publish("b")
    b.discard()


# -- lakeFS, without a server: what runs here --------------------------------------------------


def test_lakefs_branch_names_follow_the_run() -> None:
    assert (
        branch_for_run("4f1c2a9e-0d3b-4c55-9a1e-2b7d9c0e8f11") == "run-4f1c2a9e-0d3b-4c55-9a1e-2b7d9c0e8f11"
    )
    with pytest.raises(StorageError, match="valid lakeFS branch"):
        branch_for_run("a/b")


def test_lakefs_never_writes_on_the_published_branch() -> None:
    from ml_platform.lib.storage.lakefs import connect

    with pytest.raises(StorageError, match="never writes on the published branch"):
        LakeFSPartitionStore(connect("http://127.0.0.1:9/api/v1", "key", "secret"), "repo", "main")


def test_lakefs_unreachable_is_a_storage_error_naming_what_was_done(days: dict[str, pl.DataFrame]) -> None:
    """The real SDK against a closed port: no traceback from urllib3, a StorageError with context."""
    from ml_platform.lib.storage.lakefs import connect

    store = LakeFSPartitionStore(connect("http://127.0.0.1:9/api/v1", "key", "secret"), "repo", "run-x")
    with pytest.raises(
        StorageError, match=rf"{TABLE}\[{DAY1}\]: creating branch run-x from main in repo: lakeFS unreachable"
    ):
        store.write_partition(TABLE, DAY1, days[DAY1])
    with pytest.raises(
        StorageError,
        match=rf"{TABLE}\[{DAY1}\] at lakeFS commit c{{12}}: commit c{{12}}: merge base with main: lakeFS"
        " unreachable",
    ):
        store.read(
            [dataclasses.replace(PartitionVersion(TABLE, DAY1, None, "0" * 64, 1, ("f",)), commit="c" * 64)]
        )
