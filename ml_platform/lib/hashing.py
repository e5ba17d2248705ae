"""Content hashes of frames: the basis of every DataVersion.

The hash is taken over a canonical text form (the schema plus the CSV lines of the rows, sorted),
not over Arrow buffers: two frames with equal values can have different buffer layouts (string
views, values under null slots), and a content hash must not depend on that. Sorting the lines
makes the hash independent of row order, which a Delta table does not keep either (a partition may
span several files).

Text that the CSV form cannot tell apart from something else (a line break inside a value, which the
line sort would split off, or the literal text ``\\N``, which is how nulls are written) is escaped
first, and such frames are marked in the hash, so distinct frames never share a canonical form. Frames
without such text hash exactly as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import polars as pl

#: Columns that describe *when* something was ingested, not *what*. They never enter a content
#: hash, so re-ingesting identical data gives the identical data version.
VOLATILE_COLUMNS: frozenset[str] = frozenset({"_ingested_at"})

_NULL_TEXT = "\\N"
#: Everything ``str.splitlines`` breaks a line at.
_LINE_BREAKS = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


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
    ambiguous = _ambiguous_text_columns(kept)
    if ambiguous:
        digest.update(b" escaped")  # the schema repr ends with "]", so this cannot be one
        kept = kept.with_columns(_escaped(pl.col(c)) for c in ambiguous)
    digest.update(b"\0")
    lines = kept.write_csv(null_value="\\N", include_header=False).splitlines()
    lines.sort()
    for line in lines:
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _ambiguous_text_columns(df: pl.DataFrame) -> list[str]:
    """Text columns holding a line break or the null marker, which the CSV lines would not keep apart."""
    out = []
    for name, dtype in df.schema.items():
        if not (dtype == pl.String or isinstance(dtype, pl.Categorical | pl.Enum)):
            continue
        text = df.get_column(name).cast(pl.String)
        hit = text == _NULL_TEXT
        for brk in _LINE_BREAKS:
            hit = hit | text.str.contains(brk, literal=True)
        if hit.any():
            out.append(name)
    return out


def _escaped(col: pl.Expr) -> pl.Expr:
    """A reversible escape: backslashes doubled, line breaks as ``\\uXXXX``; nulls stay null."""
    text = col.cast(pl.String).str.replace_all("\\", "\\\\", literal=True)
    for brk in _LINE_BREAKS:
        text = text.str.replace_all(brk, f"\\u{ord(brk):04x}", literal=True)
    return text


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Return the sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
