"""The online feature store: snapshots of the daily features, looked up per request by the service.

No Dagster here: the ``online_features`` asset (``ml_platform.defs.serving.online``) writes
snapshots, the BentoML service reads them through :func:`online_features`.
"""

from ml_platform.lib.online.features import (
    FEATURE_COLUMNS,
    FEATURE_SCHEMA,
    REQUEST_COLUMNS,
    REQUEST_SCHEMA,
    InvalidRequest,
    build_snapshot,
    normalize_requests,
    online_features,
)
from ml_platform.lib.online.snapshot import OnlineSnapshot, SnapshotInfo
from ml_platform.lib.online.store import (
    DEFAULT_NAMESPACE,
    EmbeddedOnlineStore,
    OnlineStore,
    OnlineStoreError,
    RedisOnlineStore,
    open_online_store,
    redact_url,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "FEATURE_COLUMNS",
    "FEATURE_SCHEMA",
    "REQUEST_COLUMNS",
    "REQUEST_SCHEMA",
    "EmbeddedOnlineStore",
    "InvalidRequest",
    "OnlineSnapshot",
    "OnlineStore",
    "OnlineStoreError",
    "RedisOnlineStore",
    "SnapshotInfo",
    "build_snapshot",
    "normalize_requests",
    "online_features",
    "open_online_store",
    "redact_url",
]
