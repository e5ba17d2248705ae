"""The versioned store as a Dagster resource: Delta (embedded default) or lakeFS (production)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from ml_platform.lib.storage import DeltaPartitionStore, PartitionStore, StorageError

if TYPE_CHECKING:
    from ml_platform.lib.storage.lakefs import LakeFSPartitionStore


class VersionedStoreResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where the assets' partitions live.

    * ``delta``: Delta tables under ``delta_root``, one per asset.
    * ``lakefs``: a lakeFS repository, write-audit-publish. Each run writes on its own branch
      ``run-<run_id>`` (a re-execution starts from its parent run's branch, so it builds on the
      parent's unpublished writes); the ``lakefs_publish_sensor`` merges a run's branch into
      ``lakefs_main_branch`` once the run succeeded, i.e. once all its blocking checks passed.
    """

    backend: Literal["delta", "lakefs"] = Field("delta", description="Which versioned store.")
    delta_root: str = Field(description="Folder holding one Delta table per asset (backend delta).")
    lakefs_endpoint: str | None = Field(
        None, description="lakeFS API URL, e.g. https://lakefs.example/api/v1."
    )
    lakefs_repository: str | None = Field(None, description="lakeFS repository of the tables.")
    lakefs_access_key_id: str | None = Field(None, description="lakeFS access key id (pass as EnvVar).")
    lakefs_secret_access_key: str | None = Field(None, description="lakeFS secret key (pass as EnvVar).")
    lakefs_main_branch: str = Field("main", description="The published branch runs merge into.")

    _run_id: str | None = PrivateAttr(default=None)
    _parent_run_id: str | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.dagster_run
        self._run_id = run.run_id if run is not None else None
        self._parent_run_id = run.parent_run_id if run is not None else None

    def store(self) -> PartitionStore:
        """The pure-Python store the assets write through (for lakeFS: on this run's branch)."""
        if self.backend == "delta":
            return DeltaPartitionStore(Path(self.delta_root))
        if self._run_id is None:
            raise StorageError("the lakeFS store writes on a branch per run: it needs a Dagster run")
        return self.lakefs_store(self._run_id, parent_run_id=self._parent_run_id)

    def lakefs_store(self, run_id: str, *, parent_run_id: str | None = None) -> LakeFSPartitionStore:
        """The lakeFS store of ``run_id`` (also what the publish sensor merges)."""
        from ml_platform.lib.storage.lakefs import LakeFSPartitionStore, branch_for_run, connect

        missing = [
            name
            for name, value in (
                ("lakefs_endpoint", self.lakefs_endpoint),
                ("lakefs_repository", self.lakefs_repository),
                ("lakefs_access_key_id", self.lakefs_access_key_id),
                ("lakefs_secret_access_key", self.lakefs_secret_access_key),
            )
            if not value
        ]
        if missing:
            raise StorageError(f"backend lakefs needs {', '.join(missing)} (MLP_{missing[0].upper()})")
        client = connect(self.lakefs_endpoint, self.lakefs_access_key_id, self.lakefs_secret_access_key)  # type: ignore[arg-type]
        source = self.lakefs_main_branch
        if parent_run_id is not None:
            parent = LakeFSPartitionStore(
                client,
                self.lakefs_repository,
                branch_for_run(parent_run_id),
                main=self.lakefs_main_branch,  # type: ignore[arg-type]
            )
            if parent.branch_exists(parent.branch):  # an unpublished parent: build on its writes
                source = parent.branch
        return LakeFSPartitionStore(
            client,
            self.lakefs_repository,  # type: ignore[arg-type]
            branch_for_run(run_id),
            source=source,
            main=self.lakefs_main_branch,
            commit_metadata={"dagster.run_id": run_id},
        )
