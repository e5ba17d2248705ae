"""Content hashes of frames: the basis of every DataVersion.

The hash is taken over a canonical text form (the schema plus the JSON lines of the rows, sorted),
not over Arrow buffers: two frames with equal values can have different buffer layouts (string
views, values under null slots), and a content hash must not depend on that. Sorting the lines
makes the hash independent of row order, which a Delta table does not keep either (a partition may
span several files).

JSON lines keep line breaks inside values escaped and nulls distinct from any text, and floats are
written as text (NaN distinct from null), so sorting the lines never splits a row and no two
distinct frames share a canonical form.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import polars as pl

#: Columns that describe *when* something was ingested, not *what*. They never enter a content
#: hash, so re-ingesting identical data gives the identical data version.
VOLATILE_COLUMNS: frozenset[str] = frozenset({"_ingested_at"})


def content_hash(df: pl.DataFrame, exclude: Iterable[str] = VOLATILE_COLUMNS) -> str:
    """Return the sha256 hex digest of ``df``'s schema and values (as a multiset of rows).

    Each row is serialised as one JSON line (strings escaped, nulls distinct from any text), the
    lines are sorted, and the digest covers the schema and the sorted lines.

    Args:
        df: The frame as it is (or will be) stored.
        exclude: Columns left out of the hash.

    Returns:
        A 64-character hex digest.
    """
    skip = set(exclude)
    kept = df.select([c for c in df.columns if c not in skip])
    digest = hashlib.sha256()
    digest.update(repr([(name, str(dtype)) for name, dtype in kept.schema.items()]).encode())
    digest.update(b"\0")
    if kept.width and kept.height:
        lines = canonical_rows(kept)
        lines.sort()
        digest.update("\n".join(lines).encode())
    return digest.hexdigest()


def canonical_rows(df: pl.DataFrame) -> list[str]:
    """One JSON line per row; floats as text so that NaN stays distinct from null, bytes as hex."""
    floats = [name for name, dtype in df.schema.items() if dtype.is_float()]
    if floats:
        df = df.with_columns(
            pl.when(pl.col(c).is_nan()).then(pl.lit("NaN")).otherwise(pl.col(c).cast(pl.String)).alias(c)
            for c in floats
        )
    binary = [name for name, dtype in df.schema.items() if dtype == pl.Binary]
    if binary:  # polars cannot write bytes as JSON
        df = df.with_columns(pl.col(c).bin.encode("hex") for c in binary)
    # JSON escapes \n and \r inside values, so "\n" only ends rows (unlike str.splitlines, which
    # would also split at U+2028 and friends inside a value).
    return df.write_ndjson().split("\n")[:-1]


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Return the sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
