"""The chain an evidence bundle is built from: the model, its run and evaluations, and their records."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ml_platform.lineage import records as rec
from ml_platform.lineage.model import LineageChain, ModelHop, RunHop
from ml_platform.lineage.sources import LineageSources

if TYPE_CHECKING:
    import dagster as dg


class _BuilderBase:
    """The traced chain and the records of its model and evaluations, shared by every section."""

    def __init__(self, instance: dg.DagsterInstance, sources: LineageSources, chain: LineageChain) -> None:
        self.instance = instance
        self.src = sources
        self.chain = chain
        self.model = chain.model if isinstance(chain.model, ModelHop) else None
        self.run = chain.mlflow_run if isinstance(chain.mlflow_run, RunHop) else None
        mat = None if self.model is None else self.model.materialization
        self.model_record = (
            None if mat is None else _record(instance, mat.asset, mat.partition, mat.storage_id)
        )
        self.evaluations = [] if self.model is None else self.model.evaluations
        self.eval_records = [
            _record(
                instance, e.materialization.asset, e.materialization.partition, e.materialization.storage_id
            )
            for e in self.evaluations
        ]

    @property
    def version(self) -> str:
        if self.model is not None:
            return self.model.version
        match = re.search(r"v(\d+)", self.chain.start.resolved)
        return match.group(1) if match else self.chain.start.value


def _record(
    instance: dg.DagsterInstance, asset: str, partition: str | None, storage_id: int
) -> dg.EventLogRecord | None:
    """The materialization record with ``storage_id`` (one query)."""
    found = rec.fetch(
        instance,
        asset,
        partitions=None if partition is None else [partition],
        after_storage_id=storage_id - 1,
        before_storage_id=storage_id + 1,
    )
    return next((r for r in found if r.storage_id == storage_id), None)
