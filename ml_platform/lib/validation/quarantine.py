"""Split a day into rows that pass the schema and quarantined rows, each with its reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

ROW_INDEX = "_row_index"
REASON_COLUMN = "_quarantine_reason"
PARTITION_CHECK = "row_in_partition"


class SchemaLevelError(ValueError):
    """The day fails as a whole (a wrong dtype, a missing column), not row by row."""


class QuarantineThresholdExceeded(ValueError):
    """Too large a share of a day's rows failed validation."""


@dataclass(frozen=True)
class ValidationOutcome:
    """Result of validating one partition."""

    valid: pl.DataFrame
    quarantined: pl.DataFrame
    total_rows: int
    failures_by_check: dict[str, int] = field(default_factory=dict)

    @property
    def quarantine_share(self) -> float:
        """Share of the day's rows that were quarantined."""
        return self.quarantined.height / self.total_rows if self.total_rows else 0.0


def validate_day(
    df: pl.DataFrame, schema: type[pa.DataFrameModel], day: date, name: str
) -> ValidationOutcome:
    """Validate ``df`` lazily (all failures collected at once) and split it.

    Row-level failures (ranges, nulls, allowed values, uniqueness, row checks, and rows whose
    local date is not ``day``) send the row to quarantine with a reason naming each failed column
    and check. Schema-level failures have no row to blame and raise.

    Args:
        df: The day's raw rows.
        schema: The pandera model to validate against.
        day: The partition's day; rows of another day are quarantined.
        name: Dataset name for messages.

    Raises:
        SchemaLevelError: on a failure that is not tied to rows (e.g. a dtype).
    """
    indexed = df.with_row_index(ROW_INDEX)
    reasons: dict[int, list[str]] = {}
    counts: dict[str, int] = {}

    wrong_day = indexed.filter(
        (pl.col("year") != day.year) | (pl.col("month") != day.month) | (pl.col("day") != day.day)
    )[ROW_INDEX].to_list()
    for idx in wrong_day:
        reasons.setdefault(idx, []).append(f"{PARTITION_CHECK}: local date is not {day.isoformat()}")
    if wrong_day:
        counts[PARTITION_CHECK] = len(wrong_day)

    try:
        schema.validate(df, lazy=True)
    except SchemaErrors as errors:
        cases = errors.failure_cases
        schema_level = cases.filter(pl.col("index").is_null())
        if schema_level.height:
            first = schema_level.row(0, named=True)
            details = "; ".join(
                f"{r['column']}: {r['check']} ({r['failure_case']})"
                for r in schema_level.head(5).iter_rows(named=True)
            )
            raise SchemaLevelError(
                f"{name} {day.isoformat()}: schema-level failure in column {first['column']!r}: {details}"
            ) from errors
        for case in cases.iter_rows(named=True):
            check = str(case["check"])
            column = str(case["column"])
            if check == "multiple_fields_uniqueness":
                unique = schema.Config.unique
                key_columns = [unique] if isinstance(unique, str) else list(unique or [])
                text = f"duplicate key ({', '.join(key_columns)})"
            else:
                text = f"{column}: {check} failed for value {_short(case['failure_case'])}"
            reasons.setdefault(int(case["index"]), []).append(text)
            key = check if column in ("", schema.__name__) else f"{column}:{check}"
            counts[key] = counts.get(key, 0) + 1
    except SchemaError as error:  # raised instead of SchemaErrors for some schema-level problems
        raise SchemaLevelError(f"{name} {day.isoformat()}: {error}") from error

    if not reasons:
        return ValidationOutcome(df, df.clear().with_columns(pl.lit("").alias(REASON_COLUMN)), df.height, {})
    reason_frame = pl.DataFrame(
        {
            ROW_INDEX: list(reasons),
            REASON_COLUMN: ["; ".join(dict.fromkeys(r)) for r in reasons.values()],
        },
        schema={ROW_INDEX: pl.UInt32, REASON_COLUMN: pl.String},
    )
    quarantined = indexed.join(reason_frame, on=ROW_INDEX, how="inner").sort(ROW_INDEX).drop(ROW_INDEX)
    valid = indexed.join(reason_frame, on=ROW_INDEX, how="anti").drop(ROW_INDEX)
    return ValidationOutcome(valid, quarantined, df.height, dict(sorted(counts.items())))


def enforce_threshold(outcome: ValidationOutcome, max_share: float, name: str, partition: str) -> None:
    """Raise when the quarantined share of the day is above ``max_share``."""
    if outcome.quarantine_share > max_share:
        raise QuarantineThresholdExceeded(
            f"{name} {partition}: {outcome.quarantined.height} of {outcome.total_rows} rows"
            f" ({outcome.quarantine_share:.1%}) failed validation, above the allowed {max_share:.1%};"
            f" failures by check: {json.dumps(outcome.failures_by_check)}"
        )


def _short(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
