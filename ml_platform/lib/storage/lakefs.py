"""lakeFS partition store: write-audit-publish with a branch per run.

Layout: one Parquet object per partition, ``<prefix><table>/partition_date=<p>/data.parquet``.
The name is fixed, so two runs that rewrite one partition change the same path and their merges
conflict, as they should; which version a pin means is the commit's business. A run writes
on its own branch ``run-<run_id>``; each partition write is one lakeFS commit, and that commit id
is the partition's pin (its data version in Dagster). The run's blocking checks judge what was
written there; only a run that succeeded is merged into ``main`` (:meth:`publish`), so ``main``
only ever holds data that passed its checks.

Reads go through the pinned commit, never a branch head, so reading a pin reproduces the inputs
exactly, and the content hash is verified. A pin is only read when its commit is *published*:
an ancestor of ``main``, of the branch this run started from, or of the run's own branch. A
partition whose run failed its checks (its branch was never merged) is therefore refused with a
message naming the run branch, instead of leaking into another run.

Why not Delta tables inside lakeFS: every Delta commit writes ``_delta_log/<n>.json``, so two
runs that write the same table on two branches both write version ``n + 1`` and can never both
merge. One object per partition makes runs that write different partitions merge cleanly, and two
runs that rewrite the same partition conflict, which is the truth.

The lakeFS SDK (``lakefs``) is imported by the caller that builds the :class:`lakefs.Repository`;
this module only needs it for exception types, imported lazily.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import polars as pl

from ml_platform.lib.hashing import content_hash
from ml_platform.lib.storage.base import (
    PARTITION_COLUMN,
    PartitionVersion,
    StorageError,
    read_cached,
    with_partition,
)

if TYPE_CHECKING:
    from lakefs.client import Client

BRANCH_PREFIX = "run-"
#: The one object of a partition (see the module docstring for why the name is fixed).
OBJECT_NAME = "data.parquet"
_BRANCH_NAME = re.compile(r"^\w[-\w]*$")


def branch_for_run(run_id: str) -> str:
    """The lakeFS branch a Dagster run writes on: ``run-<run_id>``."""
    name = f"{BRANCH_PREFIX}{run_id}"
    if not _BRANCH_NAME.match(name):
        raise StorageError(f"run id {run_id!r} does not make a valid lakeFS branch name ({name!r})")
    return name


def partition_prefix(prefix: str, table: str, partition: str) -> str:
    """The object prefix holding one partition of ``table``."""
    return f"{prefix}{table}/{PARTITION_COLUMN}={partition}/"


@contextmanager
def _lakefs_errors(what: str) -> Iterator[None]:
    """Turn lakeFS SDK errors into :class:`StorageError` naming ``what`` was being done."""
    from lakefs.exceptions import LakeFSException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except LakeFSException as exc:
        raise StorageError(f"{what}: lakeFS: {type(exc).__name__}: {exc}") from exc
    except HTTPError as exc:  # the server cannot be reached at all
        raise StorageError(f"{what}: lakeFS unreachable: {exc}") from exc


class LakeFSPartitionStore:
    """Partition writes on a run's branch, commit-pinned reads, and the merge that publishes them.

    Args:
        client: The lakeFS client (``lakefs.client.Client``, see :func:`connect`).
        repository_id: The lakeFS repository.
        branch: The branch this store writes on, normally :func:`branch_for_run`.
        source: What the branch is created from: ``main``, or the branch of the run this one
            re-executes (so a re-execution from failure builds on its parent's unpublished writes
            and publishes them with its own).
        main: The published branch.
        prefix: Object prefix of the tables in the repository.
        commit_metadata: Extra metadata on every commit (the Dagster run id, the code version).
    """

    backend = "lakefs"

    def __init__(
        self,
        client: Client,
        repository_id: str,
        branch: str,
        *,
        source: str = "main",
        main: str = "main",
        prefix: str = "tables/",
        commit_metadata: Mapping[str, str] | None = None,
    ) -> None:
        if branch == main:
            raise StorageError(f"a run never writes on the published branch {main!r} (write-audit-publish)")
        import lakefs

        self.client = client
        self.repository = lakefs.Repository(repository_id, client=client)
        self.branch = branch
        self.source = source
        self.main = main
        self.prefix = prefix
        self.commit_metadata = dict(commit_metadata or {})
        self._branch_ready = False
        self._published: dict[str, bool] = {}

    @property
    def repo_id(self) -> str:
        """The lakeFS repository's name."""
        return str(self.repository.id)

    def table_uri(self, table: str) -> str:
        """``lakefs://<repo>/<run branch>/<prefix><table>/``."""
        return f"lakefs://{self.repo_id}/{self.branch}/{self.prefix}{table}/"

    def pin_uri(self, pin: PartitionVersion) -> str:
        """Where a pinned partition lives: ``lakefs://<repo>/<commit>/<prefix><table>/``."""
        return f"lakefs://{self.repo_id}/{pin.commit}/{self.prefix}{pin.table}/"

    # -- branch ------------------------------------------------------------------------------

    def branch_exists(self, name: str) -> bool:
        from lakefs.exceptions import NotFoundException

        with _lakefs_errors(f"looking up branch {self.repo_id}/{name}"):
            try:
                self.repository.branch(name).head  # noqa: B018 - the GET is the existence test
            except NotFoundException:
                return False
        return True

    def ensure_branch(self) -> None:
        """Create the run's branch from ``source`` unless it exists."""
        if self._branch_ready:
            return
        with _lakefs_errors(f"creating branch {self.branch} from {self.source} in {self.repo_id}"):
            self.repository.branch(self.branch).create(self.source, exist_ok=True)
        self._branch_ready = True

    def _read_ref(self) -> str:
        """The ref listings see: the run's branch once it exists, else where it will start."""
        if self._branch_ready or self.branch_exists(self.branch):
            self._branch_ready = True
            return self.branch
        return self.source

    # -- writes ------------------------------------------------------------------------------

    def exists(self, table: str) -> bool:
        """Whether ``table`` has any partition on the run's branch (or its source)."""
        ref = self._read_ref()
        with _lakefs_errors(f"{table}: listing {self.repo_id}/{ref}"):
            listed = self.repository.ref(ref).objects(prefix=f"{self.prefix}{table}/", max_amount=1)
            return any(True for _ in listed)

    def _files(self, ref: str, table: str, partition: str) -> tuple[str, ...]:
        base = f"{self.prefix}{table}/"
        with _lakefs_errors(f"{table}[{partition}]: listing {self.repo_id}/{ref}"):
            listed = self.repository.ref(ref).objects(prefix=partition_prefix(self.prefix, table, partition))
            return tuple(sorted(obj.path[len(base) :] for obj in listed))

    def write_partition(
        self, table: str, partition: str, df: pl.DataFrame, *, unless_same_as: PartitionVersion | None = None
    ) -> PartitionVersion:
        """Replace ``partition`` of ``table`` on the run's branch with ``df`` and commit it.

        Returns:
            The pin: the commit holding the partition, its one object and its content hash.

        Raises:
            StorageError: naming table, partition and branch, when lakeFS refuses a step.
        """
        frame = with_partition(table, partition, df)
        digest = content_hash(frame)
        try:
            self.ensure_branch()
        except StorageError as exc:
            raise StorageError(f"{table}[{partition}]: {exc}") from exc
        current = self._files(self.branch, table, partition)
        if (
            unless_same_as is not None
            and unless_same_as.commit
            and unless_same_as.content_hash == digest
            and current == unless_same_as.files
            and self._is_published(unless_same_as.commit)
            and self._unchanged_since(unless_same_as, table, partition)
        ):
            return dataclasses.replace(unless_same_as, reused=True)
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd", statistics=True)
        data = buffer.getvalue()
        name = f"{PARTITION_COLUMN}={partition}/{OBJECT_NAME}"
        path = f"{self.prefix}{table}/{name}"
        where = f"{table}[{partition}] on {self.repo_id}/{self.branch}"
        branch = self.repository.branch(self.branch)
        with _lakefs_errors(f"{where}: upload {path}"):
            branch.object(path).upload(data, mode="wb", content_type="application/vnd.apache.parquet")
        stale = [f"{self.prefix}{table}/{f}" for f in current if f != name]
        if stale:
            with _lakefs_errors(f"{where}: delete {len(stale)} replaced object(s)"):
                branch.delete_objects(stale)
        metadata = {
            **self.commit_metadata,
            "mlp.table": table,
            "mlp.partition": partition,
            "mlp.content_hash": digest,
        }
        # allow_empty: a concurrent step's commit on this branch may already have taken our
        # object; this commit then has no changes of its own but still pins exactly our state.
        with _lakefs_errors(f"{where}: commit"):
            commit = branch.commit(f"{table}[{partition}]", metadata=metadata, allow_empty=True)
        self._published[commit.id] = True
        stored = pl.read_parquet_schema(io.BytesIO(data))
        if pl.Schema(stored) != frame.schema:
            digest = content_hash(pl.read_parquet(io.BytesIO(data)))
        return PartitionVersion(
            table=table,
            partition=partition,
            table_version=None,
            content_hash=digest,
            row_count=frame.height,
            files=(name,),
            commit=str(commit.id),
        )

    def _unchanged_since(self, pin: PartitionVersion, table: str, partition: str) -> bool:
        """Whether the partition on the run's branch is still exactly what ``pin``'s commit holds."""
        prefix = partition_prefix(self.prefix, table, partition)
        with _lakefs_errors(f"{table}[{partition}]: diff {pin.commit[:12]}..{self.branch}"):
            changes = self.repository.ref(pin.commit).diff(self.branch, prefix=prefix, max_amount=1)
            return not any(True for _ in changes)

    # -- reads -------------------------------------------------------------------------------

    def _is_ancestor(self, commit: str, branch: str) -> bool:
        from lakefs.exceptions import NotFoundException, api_exception_handler

        with _lakefs_errors(f"commit {commit[:12]}: merge base with {branch}"):
            try:
                with api_exception_handler():
                    found = self.client.sdk_client.refs_api.find_merge_base(self.repo_id, commit, branch)
            except NotFoundException:
                return False
        return bool(found.base_commit_id == commit)

    def _is_published(self, commit: str) -> bool:
        """Whether ``commit`` is in ``main``, the source branch, or this run's branch."""
        if commit not in self._published:
            self._published[commit] = (
                self._is_ancestor(commit, self.main)
                or (self.source != self.main and self._is_ancestor(commit, self.source))
                or (
                    (self._branch_ready or self.branch_exists(self.branch))
                    and self._is_ancestor(commit, self.branch)
                )
            )
        return self._published[commit]

    def read(
        self,
        pins: Sequence[PartitionVersion],
        cache: MutableMapping[PartitionVersion, pl.DataFrame] | None = None,
    ) -> pl.DataFrame:
        """Read exactly the pinned partitions at their commits and verify each content hash.

        Raises:
            StorageError: for a pin without a lakeFS commit (written by the Delta backend), a commit
                that was never published (its run failed its checks), a missing object, or rows
                that do not hash to the recorded content hash.
        """
        return read_cached(pins, cache, self._read_pin)

    def _read_pin(self, pin: PartitionVersion) -> pl.DataFrame:
        where = f"{pin.table}[{pin.partition}]"
        if not pin.commit:
            raise StorageError(
                f"{where} {pin.where} was written by the Delta backend; this store reads lakeFS"
                f" repository {self.repo_id} by commit"
            )
        try:
            published = self._is_published(pin.commit)
        except StorageError as exc:
            raise StorageError(f"{where} {pin.where}: {exc}") from exc
        if not published:
            raise StorageError(
                f"{where} {pin.where} was never published: its run's branch was not merged into"
                f" {self.main} (the run failed its checks, or is still running). Rematerialize"
                f" {where}, or re-execute that run from failure so its branch is merged."
            )
        if not pin.files:
            raise StorageError(f"{where} {pin.where}: the pin names no object")
        frames = []
        ref = self.repository.ref(pin.commit)
        for name in pin.files:
            path = f"{self.prefix}{pin.table}/{name}"
            obj = ref.object(path)
            with _lakefs_errors(f"{where} {pin.where}: read {path}"), obj.reader(mode="rb") as reader:
                raw = reader.read()
            frames.append(pl.read_parquet(io.BytesIO(raw if isinstance(raw, bytes) else raw.encode())))
        df = pl.concat(frames, how="diagonal_relaxed")
        actual = content_hash(df)
        if actual != pin.content_hash:
            raise StorageError(
                f"{where} {pin.where}: content hash {actual[:12]} does not match the recorded"
                f" {pin.content_hash[:12]}"
            )
        return df

    # -- publish -----------------------------------------------------------------------------

    def publish(self, message: str, metadata: Mapping[str, str] | None = None) -> str | None:
        """Merge the run's branch into ``main`` and delete the branch; the merge commit id.

        Returns None when the run wrote nothing (its branch was never created). Merging is
        allowed to be empty (a run that only re-committed identical content still makes its
        commits ancestors of ``main``, so its pins stay readable).

        Raises:
            StorageError: when the merge conflicts (another run published a different version of
                a partition this run wrote) or lakeFS refuses it; the branch is kept for a person.
        """
        if not self.branch_exists(self.branch):
            return None
        where = f"publishing {self.repo_id}/{self.branch} into {self.main}"
        with _lakefs_errors(where):
            merged = self.repository.branch(self.branch).merge_into(
                self.main, message=message, metadata=dict(metadata or {}), allow_empty=True
            )
        with _lakefs_errors(f"{where}: deleting the merged branch"):
            self.repository.branch(self.branch).delete()
        self._branch_ready = False
        return str(merged)

    def discard(self) -> bool:
        """Delete the run's branch unmerged (its writes stay readable only by commit id until GC)."""
        if not self.branch_exists(self.branch):
            return False
        with _lakefs_errors(f"deleting unpublished branch {self.repo_id}/{self.branch}"):
            self.repository.branch(self.branch).delete()
        self._branch_ready = False
        return True


def connect(endpoint: str, access_key_id: str, secret_access_key: str) -> Client:
    """A lakeFS client for ``endpoint`` (imports the SDK; nothing is requested yet)."""
    from lakefs.client import Client

    return Client(host=endpoint, username=access_key_id, password=secret_access_key)  # type: ignore[no-untyped-call]
