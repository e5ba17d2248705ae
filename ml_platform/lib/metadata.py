"""Standard metadata keys, defined once.

The Dagster assets write them, and the lineage CLI and the UI read the same keys. A key names
what it holds: ``lineage/*`` for provenance, ``storage/*`` for the versioned store, ``quality/*``
for validation outcomes, ``mlflow/*``, ``training/*``, ``evaluation/*`` and ``registry/*`` for
models.
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
#: The lakeFS commit holding the partition (lakeFS backend; the Delta backend records the table version).
STORAGE_COMMIT: Final = "storage/commit"
STORAGE_CONTENT_HASH: Final = "storage/content_hash"
STORAGE_PARTITION: Final = "storage/partition"
STORAGE_WRITE_SKIPPED: Final = "storage/write_skipped"

QUALITY_QUARANTINED_ROWS: Final = "quality/quarantined_rows"
QUALITY_QUARANTINE_SHARE: Final = "quality/quarantine_share"
QUALITY_QUARANTINE_TABLE: Final = "quality/quarantine_table_version"
QUALITY_FAILURES_BY_CHECK: Final = "quality/failures_by_check"

MLFLOW_EXPERIMENT_ID: Final = "mlflow/experiment_id"
MLFLOW_RUN_ID: Final = "mlflow/run_id"
MLFLOW_RUN_URL: Final = "mlflow/run_url"
MLFLOW_MODEL_NAME: Final = "mlflow/registered_model"
MLFLOW_MODEL_VERSION: Final = "mlflow/model_version"
MLFLOW_MODEL_URI: Final = "mlflow/model_uri"
MLFLOW_MODEL_URL: Final = "mlflow/model_version_url"

TRAINING_WINDOW: Final = "training/window"
TRAINING_ROWS: Final = "training/train_rows"
TRAINING_VALIDATION_ROWS: Final = "training/validation_rows"
TRAINING_CONFIG: Final = "training/config"
TRAINING_WEIGHTS_DIGEST: Final = "training/weights_digest"
TRAINING_SAMPLES_PER_SECOND: Final = "training/samples_per_second"
TRAINING_DEVICE: Final = "training/device"
HPO_STUDY: Final = "hpo/study"
HPO_STORAGE: Final = "hpo/storage"
HPO_TRIALS: Final = "hpo/trials"

EVALUATION_HOLDOUT: Final = "evaluation/holdout"
EVALUATION_GATES: Final = "evaluation/gates"
EVALUATION_PASSED: Final = "evaluation/passed"
EVALUATION_CHAMPION_VERSION: Final = "evaluation/champion_version"

REGISTRY_DECISION: Final = "registry/decision"
REGISTRY_CHAMPION: Final = "registry/champion"
REGISTRY_EVENT: Final = "registry/audit_event"

#: delay_bento: the Bento built for a version, and how (ml_platform.defs.serving.bento).
BENTO_TAG: Final = "bento/tag"
BENTO_PATH: Final = "bento/path"
BENTO_MODEL_TAG: Final = "bento/model_tag"
BENTO_LABELS: Final = "bento/labels"
BENTO_REUSED: Final = "bento/reused"
BENTO_BUILT_AT: Final = "bento/built_at"
BENTO_BUILD_SECONDS: Final = "bento/build_seconds"
BENTO_HOME: Final = "bento/bentoml_home"
BENTO_SOURCE_FILES: Final = "bento/source_files"
