"""The online feature store as a Dagster resource: Redis in production, an embedded sqlite file by default."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from ml_platform.lib.online.store import DEFAULT_NAMESPACE, OnlineStore, open_online_store


class OnlineStoreResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Where ``online_features`` writes its snapshot and the served Bento reads it.

    ``url`` is a ``redis://`` / ``rediss://`` URL (``MLP_ONLINE_STORE_URL``, given as
    ``EnvVar("MLP_ONLINE_STORE_URL")`` so a password never lands in a run's config snapshot); unset,
    the store is the sqlite file ``embedded_path`` (no server). ``redis`` is imported only when a
    Redis store is opened.
    """

    url: str | None = Field(
        None, description="redis:// or rediss:// URL of the online store (pass as EnvVar); unset: embedded."
    )
    embedded_path: str = Field(description="The embedded store's sqlite file (used when url is unset).")
    namespace: str = Field(DEFAULT_NAMESPACE, description="Prefix of every Redis key of the store.")

    def store(self) -> OnlineStore:
        """The configured store."""
        return open_online_store(self.url or None, Path(self.embedded_path), namespace=self.namespace)
