"""Content hashes of frames: the basis of every DataVersion.

The hash is taken over a canonical text form (the schema plus the CSV lines of the rows, sorted),
not over Arrow buffers: two frames with equal values can have different buffer layouts (string
views, values under null slots), and a content hash must not depend on that. Sorting the lines
makes the hash independent of row order, which a Delta table does not keep either (a partition may
span several files).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import polars as pl

#: Columns that describe *when* something was ingested, not *what*. They never enter a content
#: hash, so re-ingesting identical data gives the identical data version.
VOLATILE_COLUMNS: frozenset[str] = frozenset({"_ingested_at"})


def content_hash(df: pl.DataFrame, exclude: Iterable[str] = VOLATILE_COLUMNS) -> str:
    """Return the sha256 hex digest of ``df``'s schema and values (as a multiset of rows).

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
    lines = kept.write_csv(null_value="\\N", include_header=False).splitlines()
    lines.sort()
    for line in lines:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def file_sha256(path: str | bytes | object, chunk_size: int = 1 << 20) -> str:
    """Return the sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:  # type: ignore[call-overload]
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
