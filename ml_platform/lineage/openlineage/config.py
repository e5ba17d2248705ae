"""What the OpenLineage export needs from settings, as plain data (no openlineage or Dagster import).

:class:`OpenLineageConfig` is built from :class:`~ml_platform.settings.PlatformSettings` (the
``MLP_OPENLINEAGE_*`` fields and the stores the events name) or by hand in a test. Loading the
Definitions imports nothing of this package but this module's caller, the sensor factory, which reads
settings only when a tick runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

from ml_platform import __version__

if TYPE_CHECKING:
    from ml_platform.settings import PlatformSettings

TransportKind = Literal["file", "http", "none"]
TRANSPORTS: tuple[TransportKind, ...] = ("file", "http", "none")

#: ``producer`` of every event and ``_producer`` of every facet: a URI naming this code and its version.
PRODUCER = f"urn:ml_platform:openlineage-export:{__version__}"
#: Where ``http`` sends events, relative to the URL: Marquez's (and the spec's) lineage endpoint.
DEFAULT_ENDPOINT = "api/v1/lineage"


class OpenLineageConfigError(ValueError):
    """The OpenLineage settings do not fit together (e.g. an http transport without a URL)."""


@dataclass(frozen=True)
class OpenLineageConfig:
    """Where events go, how jobs and datasets are named, and where the export keeps its cursor."""

    #: Job namespace of every event (``MLP_OPENLINEAGE_NAMESPACE``).
    namespace: str
    transport: TransportKind
    #: Folder of the cursor file and the export lock (``<storage>/openlineage``).
    state_dir: Path
    #: The file transport's JSON-lines file.
    events_file: Path
    #: The MLflow registry the model datasets live in (their namespace, credentials stripped).
    tracking_uri: str
    #: The registered model's name, for records that name a version but not the model.
    model_name: str
    #: The registry's audit log (approvals: who, when, the event hash).
    audit_table: Path
    #: Delta tables' root: names a table whose recorded pin no materialization resolves.
    delta_root: Path
    storage_backend: Literal["delta", "lakefs"] = "delta"
    lakefs_endpoint: str | None = None
    lakefs_main_branch: str = "main"
    url: str | None = None
    endpoint: str = DEFAULT_ENDPOINT
    api_key: str | None = dataclasses.field(default=None, repr=False)
    timeout_s: float = 5.0
    producer: str = PRODUCER

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise OpenLineageConfigError(
                f"MLP_OPENLINEAGE_TRANSPORT={self.transport!r}: must be one of {', '.join(TRANSPORTS)}"
            )
        if self.transport == "http" and not self.url:
            raise OpenLineageConfigError(
                "MLP_OPENLINEAGE_TRANSPORT=http needs MLP_OPENLINEAGE_URL (e.g. http://marquez:5000)"
            )
        if not self.namespace.strip():
            raise OpenLineageConfigError("MLP_OPENLINEAGE_NAMESPACE must not be empty")

    @classmethod
    def from_settings(
        cls,
        settings: PlatformSettings,
        *,
        state_dir: Path | None = None,
        events_file: Path | None = None,
        transport: TransportKind | None = None,
        url: str | None = None,
    ) -> OpenLineageConfig:
        """The export's configuration from settings; ``state_dir`` etc. override them (tests, the CLI)."""
        folder = state_dir if state_dir is not None else settings.openlineage_state_dir
        key = settings.openlineage_api_key
        return cls(
            namespace=settings.openlineage_namespace,
            transport=transport or settings.openlineage_transport,
            state_dir=folder,
            events_file=events_file if events_file is not None else folder / "events.jsonl",
            tracking_uri=str(settings.mlflow_tracking_uri),
            model_name=settings.registered_model,
            audit_table=settings.audit_table,
            delta_root=settings.delta_root,
            storage_backend=settings.storage_backend,
            lakefs_endpoint=settings.lakefs_endpoint,
            lakefs_main_branch=settings.lakefs_main_branch,
            url=url if url is not None else settings.openlineage_url,
            endpoint=settings.openlineage_endpoint,
            api_key=key.get_secret_value() if key is not None else None,
            timeout_s=settings.openlineage_timeout_s,
        )

    def with_transport(self, transport: TransportKind, **changes: object) -> OpenLineageConfig:
        return dataclasses.replace(self, transport=transport, **changes)  # type: ignore[arg-type]

    @property
    def lineage_url(self) -> str | None:
        """The URL events are POSTed to (http transport)."""
        if not self.url:
            return None
        return self.url.rstrip("/") + "/" + self.endpoint.lstrip("/")

    @property
    def target(self) -> str:
        """What the cursor is kept for: the file or the endpoint the events go to."""
        if self.transport == "file":
            return f"file:{self.events_file.resolve()}"
        if self.transport == "http":
            return f"http:{strip_credentials(self.lineage_url or '')}"
        return "none"

    @property
    def cursor_file(self) -> Path:
        return self.state_dir / "cursor.json"

    @property
    def lock_file(self) -> Path:
        return self.state_dir / "export.lock"

    @property
    def model_namespace(self) -> str:
        """Namespace of the registered-model datasets: the MLflow registry URI without credentials."""
        return strip_credentials(self.tracking_uri)

    @property
    def asset_namespace(self) -> str:
        """Namespace of the datasets of assets that write no table, model or Bento (an evaluation)."""
        return f"dagster://{self.namespace}"

    @property
    def lakefs_namespace(self) -> str:
        if not self.lakefs_endpoint:
            return "lakefs"
        parts = urlsplit(self.lakefs_endpoint)
        return f"lakefs://{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")


def strip_credentials(uri: str) -> str:
    """``uri`` without a user name or password (a database URL, a URL with a token)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
