"""Standard metadata keys, defined once.

The Dagster assets write them, and the lineage CLI and the UI read the same keys. A key names
what it holds: ``lineage/*`` for provenance, ``storage/*`` for the versioned store, ``quality/*``
for validation outcomes.
"""

from typing import Final

ROW_COUNT: Final = "dagster/row_count"
SCHEMA: Final = "dagster/column_schema"

LINEAGE_UPSTREAM: Final = "lineage/upstream"
LINEAGE_CODE_VERSION: Final = "lineage/code_version"
LINEAGE_GIT_COMMIT: Final = "lineage/git_commit"
LINEAGE_SOURCE: Final = "lineage/source"

STORAGE_URI: Final = "storage/table_uri"
STORAGE_TABLE_VERSION: Final = "storage/table_version"
STORAGE_FILES: Final = "storage/files"
STORAGE_CONTENT_HASH: Final = "storage/content_hash"
STORAGE_PARTITION: Final = "storage/partition"
STORAGE_WRITE_SKIPPED: Final = "storage/write_skipped"

QUALITY_QUARANTINED_ROWS: Final = "quality/quarantined_rows"
QUALITY_QUARANTINE_SHARE: Final = "quality/quarantine_share"
QUALITY_QUARANTINE_TABLE: Final = "quality/quarantine_table_version"
QUALITY_FAILURES_BY_CHECK: Final = "quality/failures_by_check"
